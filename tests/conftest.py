"""Shared fixtures: one database per test, on SQLite and on the machine's PostgreSQL.

PostgreSQL is found at ``FLUXO_TEST_PG_URL`` (default: the local server, database ``test``); each
test gets its own schema, dropped afterwards. Without a reachable server the PostgreSQL variants
skip, except under ``CI=true`` where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from fluxo_core.storage import Database
from tests.support.golden import RegenerateInCiError, regenerate_requested
from tests.support.nodered import nodered

__all__ = ["nodered"]  # the session's managed Node-RED, for every test that asks for it

PG_URL = os.environ.get("FLUXO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_configure(config: pytest.Config) -> None:
    # Before any test runs: a CI job that asks to regenerate golden files stops here, whole,
    # rather than passing the golden tests it would rewrite.
    try:
        regenerate_requested()
    except RegenerateInCiError as exc:
        raise pytest.UsageError(str(exc)) from None


def _plain_pg_dsn() -> str:
    return PG_URL.replace("postgresql+psycopg://", "postgresql://", 1)


def require_server(name: str, reachable: bool, how: str) -> None:
    """Skip (or, in CI, fail) a test whose server is not reachable."""
    if reachable:
        return
    message = f"{name} is not reachable ({how})"
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(f"{message}; start it to run this test")


_pg_ok: bool | None = None


def pg_reachable() -> bool:
    global _pg_ok
    if _pg_ok is None:
        try:
            psycopg.connect(_plain_pg_dsn(), connect_timeout=3).close()
            _pg_ok = True
        except psycopg.Error:
            _pg_ok = False
    return _pg_ok


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A URL of the test PostgreSQL database pinned to a fresh, empty schema."""
    require_server("PostgreSQL", pg_reachable(), f"FLUXO_TEST_PG_URL={PG_URL}")
    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(_plain_pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(_plain_pg_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """The URL of an empty database: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fluxo.db"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.migrate()
    yield database
    await database.close()
