"""The catalogues: every text the console shows has a Portuguese translation."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from fluxo.console import i18n

CONSOLE = Path(i18n.__file__).parent


def _extracted() -> set[str]:
    found = set()
    with (CONSOLE / "babel.cfg").open() as fh:
        config = fh.read()
    assert "jinja2" in config
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "True"}}
    for _, _, message, _, _ in extract_from_dir(str(CONSOLE), method_map, options):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_console_text_has_a_brazilian_portuguese_translation() -> None:
    with (CONSOLE / "locale" / "pt_BR" / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh)
    translated = {m.id for m in catalog if m.id and m.string}
    extracted = _extracted()
    assert len(extracted) > 20  # the extraction found the templates
    missing = sorted(extracted - translated)
    assert missing == [], f"add to messages.po: {missing}"


def test_the_language_is_the_users_choice_then_the_browsers() -> None:
    assert i18n.negotiate("pt_BR", "en-US") == "pt_BR"
    assert i18n.negotiate(None, "en-US,en;q=0.9") == "en"
    assert i18n.negotiate(None, "fr-FR, pt-BR;q=0.8, en;q=0.5") == "pt_BR"
    assert i18n.negotiate(None, "pt-PT") == "pt_BR"
    assert i18n.negotiate("xx", "de") == "en"
    assert i18n.negotiate(None, "en;q=0, pt-BR;q=bad") == "en"


def test_numbers_dates_and_money_follow_the_locale() -> None:
    en, pt = i18n.Formats("en"), i18n.Formats("pt_BR")
    assert en.money(1234.5, "USD") == "$1,234.50"
    assert pt.money(1234.5, "BRL") == "R$\xa01.234,50"
    assert en.number(1234567) == "1,234,567"
    assert pt.number(1234567) == "1.234.567"
    assert pt.percent(0.953) == "95,3%"
    assert pt.datetime(1796000000.0) == "30 de nov. de 2026 00:53:20"
    assert en.datetime(1796000000.0) == "Nov 30, 2026, 12:53:20\u202fAM"
