"""Roles' order and the CLI's token lifetimes."""

from __future__ import annotations

import pytest

from fluxo.cli._auth import parse_duration
from fluxo_core.errors import ValidationError
from fluxo_core.storage import Role


def test_roles_are_ordered_from_viewer_to_platform_admin() -> None:
    order = [Role.VIEWER, Role.MEMBER, Role.ACCOUNT_ADMIN, Role.PLATFORM_ADMIN]
    assert sorted(Role, key=lambda r: r.rank) == order
    assert Role.ACCOUNT_ADMIN.at_least(Role.MEMBER)
    assert not Role.MEMBER.at_least(Role.ACCOUNT_ADMIN)


def test_an_unknown_role_names_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="viewer, member, account-admin, platform-admin"):
        Role.parse("owner")


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600.0), ("30m", 1800.0), ("12h", 43200.0), ("90d", 7776000.0)]
)
def test_a_lifetime_reads_seconds_minutes_hours_and_days(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5", "1w", "soon", ""])
def test_a_bad_lifetime_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValidationError, match="90d, 12h, 30m or 3600"):
        parse_duration(text)
