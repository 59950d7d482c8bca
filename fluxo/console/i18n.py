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
from babel.dates import (
    format_datetime,
    format_timedelta,
    get_date_format,
    get_datetime_format,
    get_time_format,
)
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, parse_pattern

__all__ = [
    "COOKIE",
    "DEFAULT",
    "LOCALES",
    "N_",
    "STATUS_NAMES",
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


def N_(text: str) -> str:  # noqa: N802 - gettext's name for "translate later"
    """Mark ``text`` for the catalogue; it is translated where it is shown."""
    return text


STATUS_NAMES = {
    "queued": N_("queued"),
    "running": N_("running"),
    "succeeded": N_("succeeded"),
    "failed": N_("failed"),
    "cancelled": N_("cancelled"),
    "blocked": N_("blocked"),
    "pending": N_("pending"),
    "waiting": N_("waiting"),
    "skipped": N_("skipped"),
}
"""Job and step states as the console names them."""


class Formats:
    """Dates, numbers and money in one locale's conventions (Jinja filters of its templates).

    Babel's patterns are parsed once here: a page of jobs formats hundreds of values, and
    parsing a pattern costs more than applying it.
    """

    def __init__(self, locale: str) -> None:
        self.locale = Locale.parse(locale)
        self._decimals = {
            d: parse_pattern("#,##0" + ("." + "0" * d if d else "")) for d in range(4)
        }
        self._percent = parse_pattern("#,##0.0%")
        self._datetimes = {
            fmt: (
                str(get_datetime_format(fmt, self.locale)).replace("'", ""),
                get_date_format(fmt, self.locale),
                get_time_format(fmt, self.locale),
            )
            for fmt in ("short", "medium", "long")
        }

    def datetime(self, value: float | datetime | None, fmt: str = "medium") -> str:
        if value is None:
            return "—"
        at = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
        at = at.astimezone(UTC)
        if fmt not in self._datetimes:
            return format_datetime(at, fmt, tzinfo=UTC, locale=self.locale)
        whole, date_pattern, time_pattern = self._datetimes[fmt]
        return whole.replace("{0}", time_pattern.apply(at, self.locale)).replace(
            "{1}", date_pattern.apply(at, self.locale)
        )

    def number(self, value: float | int | Decimal | None, digits: int = 0) -> str:
        if value is None:
            return "—"
        pattern = self._decimals.get(digits) or parse_pattern("#,##0." + "0" * digits)
        exact = Decimal(str(value)) if isinstance(value, float) else value
        return str(pattern.apply(exact, self.locale))

    def percent(self, value: float | None) -> str:
        if value is None:
            return "—"
        return str(self._percent.apply(value, self.locale))

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
