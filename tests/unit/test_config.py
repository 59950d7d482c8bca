"""Configuration from the environment: defaults, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError


def test_defaults_run_embedded_sqlite_under_the_home(tmp_path: Path) -> None:
    config = FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path)})
    assert config.database_url == f"sqlite:///{tmp_path}/fluxo.db"
    assert config.transport == "sql"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite+aiosqlite:////x.db", "sqlite:////x.db"),
    ],
)
def test_database_urls_are_normalised(given: str, expected: str) -> None:
    assert FluxoConfig.from_env({"FLUXO_DATABASE_URL": given}).database_url == expected


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"FLUXO_DATABASE_URL": "mysql://x"}, "FLUXO_DATABASE_URL"),
        ({"FLUXO_TRANSPORT": "kafka"}, "FLUXO_TRANSPORT"),
        ({"FLUXO_MAX_PACKET_BYTES": "lots"}, "FLUXO_MAX_PACKET_BYTES"),
        ({"FLUXO_MAX_PACKET_BYTES": "10"}, "FLUXO_MAX_PACKET_BYTES"),
        ({"FLUXO_POLL_INTERVAL": "0"}, "FLUXO_POLL_INTERVAL"),
        ({"FLUXO_LEASE_S": "0"}, "FLUXO_LEASE_S"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting) as info:
        FluxoConfig.from_env(env)
    assert info.value.context["setting"] == setting


def test_http_allow_list_is_split(tmp_path: Path) -> None:
    config = FluxoConfig.from_env({"FLUXO_HTTP_ALLOW": "api.example.com, 10.0.0.0/8,"})
    assert config.http_allow == ("api.example.com", "10.0.0.0/8")
