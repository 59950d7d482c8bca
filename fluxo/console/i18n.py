"""Languages of the console: English and Brazilian Portuguese, through gettext catalogues (Babel).

The catalogue is ``locale/<locale>/LC_MESSAGES/messages.po``; it is compiled in memory with Babel
when the console starts (no build step, nothing generated to forget). The language is the user's
choice (a cookie the language switch sets) or else the browser's ``Accept-Language``. Dates,
numbers and money are formatted by Babel with the locale's conventions.
"""

from __future__ import annotations

import functools
import gettext
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, format_timedelta
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent

__all__ = [
    "COOKIE",
    "DEFAULT",
    "LOCALES",
    "Formats",
    "negotiate",
    "translations",
]

LOCALES = {"en": "English", "pt_BR": "Português (Brasil)"}
DEFAULT = "en"
COOKIE = "fluxo_lang"
CATALOGUES = Path(__file__).parent / "locale"
_MAX_LANGUAGES = 16  # Accept-Language entries looked at: the header is the client's to bloat


def negotiate(chosen: str | None, accept_language: str | None) -> str:
    """The locale for a request: the user's choice if it is one we have, else the browser's."""
    if chosen in LOCALES:
        return chosen
    wanted: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")[:_MAX_LANGUAGES]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            wanted.append((-quality, index, tag.strip()))
    for _, _, tag in sorted(wanted):
        found = _match(tag)
        if found:
            return found
    return DEFAULT


def _match(tag: str) -> str | None:
    try:
        locale = Locale.parse(tag, sep="-")
    except (ValueError, UnknownLocaleError):
        return None
    exact = f"{locale.language}_{locale.territory}" if locale.territory else locale.language
    if exact in LOCALES:
        return exact
    # Portuguese of Portugal or Angola still reads Brazilian Portuguese better than English.
    return next((code for code in LOCALES if code.split("_")[0] == locale.language), None)


@functools.cache
def translations(locale: str) -> gettext.NullTranslations:
    """The compiled catalogue of ``locale`` (English is the source text)."""
    if locale == DEFAULT:
        return gettext.NullTranslations()
    with (CATALOGUES / locale / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


class Formats:
    """Dates, numbers and money in one locale's conventions (Jinja filters of its templates)."""

    def __init__(self, locale: str) -> None:
        self.locale = Locale.parse(locale)

    def datetime(self, value: float | datetime | None, fmt: str = "medium") -> str:
        if value is None:
            return "—"
        at = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
        return format_datetime(at, fmt, tzinfo=UTC, locale=self.locale)

    def number(self, value: float | int | Decimal | None, digits: int = 0) -> str:
        if value is None:
            return "—"
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def percent(self, value: float | None) -> str:
        if value is None:
            return "—"
        return format_percent(value, format="#,##0.0%", locale=self.locale)

    def money(self, value: float | Decimal | None, currency: str = "USD") -> str:
        if value is None:
            return "—"
        return format_currency(value, currency, locale=self.locale)

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return "—"
        if seconds < 1:
            return self.number(seconds * 1000) + " ms"
        if seconds < 60:
            return self.number(seconds, 1) + " s"
        return format_timedelta(timedelta(seconds=seconds), threshold=1.1, locale=self.locale)
