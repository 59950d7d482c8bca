"""schemathesis over the whole API: a real ``fluxo up`` on a real database, called with a token.

Every operation of the OpenAPI document gets generated requests (valid ones and, in the coverage
phase, invalid ones). Whatever it sends, Fluxo answers with no 5xx, only status codes the
document lists, and bodies that match the document's schemas. Bounded: a few examples per
operation, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fluxo.api.openapi import openapi_document
from tests.conftest import PG_URL, _plain_pg_dsn, pg_reachable, require_server

SCHEMA = schemathesis.openapi.from_dict(openapi_document()).exclude(
    path="/v1/workflows", method="POST"
)
# A workflow document has so many fields and variants that the coverage phase (every boundary
# of every field) makes about 9,000 requests; the generated examples cover it well enough.
WORKFLOWS = schemathesis.openapi.from_dict(
    openapi_document(),
    config=SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}}),
).include(path="/v1/workflows", method="POST")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """``(base URL, admin token)`` of a ``fluxo up`` on a fresh database."""
    home = tmp_path_factory.mktemp("fluxo-home")
    port = _free_port()
    env = dict(os.environ, FLUXO_HOME=str(home), FLUXO_PORT=str(port), FLUXO_POLL_INTERVAL="0.2")
    env.pop("FLUXO_DATABASE_URL", None)
    schema = None
    if request.param == "postgres":
        require_server("PostgreSQL", pg_reachable(), f"FLUXO_TEST_PG_URL={PG_URL}")
        schema = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(_plain_pg_dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in PG_URL else "?"
        env["FLUXO_DATABASE_URL"] = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxo.cli", "up"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "fluxo up did not become ready"
            time.sleep(0.2)
        token = (home / "admin.token").read_text().strip()
        yield url, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        server_log = (home / "server.log").read_text()
        if schema is not None:
            with psycopg.connect(_plain_pg_dsn(), autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    # Whatever was sent, nothing reached the log as an unhandled error.
    assert "unhandled error" not in server_log, server_log[-5000:]
    assert "Traceback" not in server_log, server_log[-5000:]


FUZZ = settings(
    max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


def _call(case: schemathesis.Case, server: tuple[str, str]) -> None:
    url, token = server
    case.call_and_validate(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30
    )


@SCHEMA.parametrize()
@FUZZ
@pytest.mark.timeout(120)
def test_the_api_answers_every_request_as_its_document_says(
    case: schemathesis.Case, server: tuple[str, str]
) -> None:
    _call(case, server)


@WORKFLOWS.parametrize()
@settings(FUZZ, max_examples=40)
@pytest.mark.timeout(120)
def test_applying_any_workflow_document_answers_as_the_document_says(
    case: schemathesis.Case, server: tuple[str, str]
) -> None:
    _call(case, server)


def test_the_fuzzed_document_is_the_one_served(server: tuple[str, str]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/v1/openapi.json").json() == openapi_document()
