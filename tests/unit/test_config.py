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


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:8240"),
        ({"FLUXO_PORT": "9031"}, "http://127.0.0.1:9031"),
        ({"FLUXO_HOST": "0.0.0.0", "FLUXO_PORT": "9031"}, "http://127.0.0.1:9031"),
        ({"FLUXO_HOST": "::", "FLUXO_PORT": "9031"}, "http://[::1]:9031"),
        ({"FLUXO_HOST": "fe80::1", "FLUXO_PORT": "9031"}, "http://[fe80::1]:9031"),
        ({"FLUXO_HOST": "fluxo.lan"}, "http://fluxo.lan:8240"),
        (
            {"FLUXO_PORT": "9031", "FLUXO_PUBLIC_URL": "https://fluxo.example"},
            "https://fluxo.example",
        ),
    ],
)
def test_engines_call_the_address_served_unless_a_public_url_is_set(
    env: dict[str, str], expected: str
) -> None:
    assert FluxoConfig.from_env(env).gateway_url == expected


def test_the_gateway_url_follows_a_port_given_on_the_command_line() -> None:
    # `fluxo up --port P` overrides the port of the configuration read from the environment.
    served = FluxoConfig.from_env({}).model_copy(update={"port": 9031, "host": "0.0.0.0"})
    assert served.gateway_url == "http://127.0.0.1:9031"
    public = FluxoConfig.from_env({"FLUXO_PUBLIC_URL": "https://fluxo.example"})
    assert public.model_copy(update={"port": 9031}).gateway_url == "https://fluxo.example"
