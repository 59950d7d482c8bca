"""Stored secrets on SQLite and PostgreSQL: sealed at rest, used by reference, never shown.

A job whose http step sends a stored secret leaves the value nowhere in the database (calls,
queue, outbox, steps, jobs), nor in the job as the API shows it, nor in the log.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError, NotFoundError, StorageError, ValidationError
from fluxo_core.redaction import install_log_redaction
from fluxo_core.storage import Database, Principal, SecretKey, SecretStore
from fluxo_core.storage.secrets import KEY_FILE
from fluxo_core.storage.tables import metadata
from fluxo_core.storage.tables import secrets as secrets_table
from services import BuiltinConfig, builtin_services
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)

ACME = Principal(account_id="acme", user_id="ada")
KEY = SecretKey.parse(base64.b64encode(b"k" * 32).decode(), "test key")
OTHER_KEY = SecretKey.parse(base64.b64encode(b"o" * 32).decode(), "test key")
STRIPE = "sk_live_51HxQ9dLkT0pTopSecret"


@pytest.fixture
async def store(db: Database) -> SecretStore:
    for account in ("acme", "globex"):
        await _ensure_account(db, account)
    return SecretStore(db, KEY)


async def _ensure_account(db: Database, account: str) -> None:
    from fluxo_core.storage import AccountStore

    await AccountStore(db).ensure_account(account)


async def everything_stored(db: Database) -> bytes:
    """Every value of every row of every table, as one blob to search."""

    def dump(conn: sa.Connection) -> bytes:
        parts: list[bytes] = []
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        parts.append(bytes(value))
                    elif value is not None:
                        parts.append(str(value).encode())
        return b"\n".join(parts)

    return await db.read(dump)


# --- the store ------------------------------------------------------------------------------


async def test_a_secret_is_sealed_at_rest_and_revealed_only_by_name(
    db: Database, store: SecretStore
) -> None:
    info, created = await store.put("acme", "stripe", STRIPE)
    assert (info.name, created) == ("stripe", True)
    assert STRIPE.encode() not in await everything_stored(db)
    assert await store.reveal("acme", ["stripe"]) == {"stripe": STRIPE}
    again, created = await store.put("acme", "stripe", STRIPE + "-2")
    assert created is False
    assert again.created_at == info.created_at
    assert await store.reveal("acme", ["stripe"]) == {"stripe": STRIPE + "-2"}
    assert [i.name for i in await store.list("acme")] == ["stripe"]


async def test_secrets_belong_to_one_account(store: SecretStore) -> None:
    await store.put("acme", "stripe", STRIPE)
    assert await store.list("globex") == []
    with pytest.raises(NotFoundError) as info:
        await store.reveal("globex", ["stripe"])
    assert "fluxo secret set stripe --account globex" in info.value.message
    with pytest.raises(NotFoundError):
        await store.delete("globex", "stripe")
    with pytest.raises(NotFoundError):
        await store.put("nobody", "stripe", STRIPE)
    await store.delete("acme", "stripe")
    assert await store.list("acme") == []


async def test_a_sealed_value_moved_to_another_row_does_not_open(
    db: Database, store: SecretStore
) -> None:
    await store.put("acme", "stripe", STRIPE)
    await store.put("globex", "stripe", "globex-own-value")

    def move(tx: Any) -> None:
        sealed = tx.conn.scalar(
            sa.select(secrets_table.c.ciphertext).where(secrets_table.c.account_id == "acme")
        )
        tx.execute(
            sa.update(secrets_table)
            .where(secrets_table.c.account_id == "globex")
            .values(ciphertext=sealed)
        )

    await db.transact(move)
    with pytest.raises(StorageError) as info:
        await store.reveal("globex", ["stripe"])
    assert STRIPE not in str(info.value)


async def test_another_key_is_named_instead_of_failing_blindly(
    db: Database, store: SecretStore
) -> None:
    await store.put("acme", "stripe", STRIPE)
    with pytest.raises(ConfigError) as info:
        await SecretStore(db, OTHER_KEY).reveal("acme", ["stripe"])
    assert KEY.key_id in info.value.message
    assert "FLUXO_SECRET_KEY" in info.value.message


@pytest.mark.parametrize("name", ["", "has space", "-lead", "x" * 101, "a/b"])
async def test_bad_names_and_values_are_refused(store: SecretStore, name: str) -> None:
    with pytest.raises(ValidationError):
        await store.put("acme", name, "v")
    with pytest.raises(ValidationError) as info:
        await store.put("acme", "ok", "")
    assert info.value.problems == [("value", "empty")]


async def test_the_key_file_is_made_0600_on_the_first_secret_only(
    db: Database, tmp_path: Path
) -> None:
    await _ensure_account(db, "acme")
    config = FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path / "home")})
    config.ensure_home()
    store = SecretStore.for_config(db, config)
    key_file = tmp_path / "home" / KEY_FILE
    with pytest.raises(NotFoundError):
        await store.reveal("acme", ["stripe"])
    assert not key_file.exists()  # reading makes no key
    await store.put("acme", "stripe", STRIPE)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Another process (a worker) with the same home opens what this one sealed.
    assert await SecretStore.for_config(db, config).reveal("acme", ["stripe"]) == {"stripe": STRIPE}


def test_a_bad_secret_key_setting_is_one_clear_error(tmp_path: Path) -> None:
    config = FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path), "FLUXO_SECRET_KEY": "short"})
    with pytest.raises(ConfigError) as info:
        SecretStore.for_config(Database(f"sqlite:///{tmp_path}/x.db"), config)
    assert "FLUXO_SECRET_KEY" in info.value.message
    assert "openssl rand -base64 32" in info.value.message


# --- a job that sends a secret ----------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A local API that echoes the credentials it got (in its body and a header)."""
    seen: list[dict[str, str]] = []

    async def charge(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        auth = request.headers.get("Authorization", "")
        return web.json_response(
            {"charged": True, "echo": {"authorization": auth}, "debug": f"used {auth}"},
            # The bare value, in a header whose name says nothing: only knowing the value
            # keeps it out of a debug log that prints response headers.
            headers={"X-Echo": auth.removeprefix("Bearer ")},
        )

    app = web.Application()
    app.router.add_post("/v1/charges", charge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/charges", seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[tuple[Platform, TestClient[Any, Any], str]]:
    store = SecretStore(db, KEY)
    services = [
        *builtin_services(BuiltinConfig(http_allow=("127.0.0.1",)), secrets=store),
        *svc.SERVICES,
    ]
    platform = Platform(
        db, services, workers=1, poll_interval_s=0.2, admission_cache_s=0, secrets=store
    )
    for account in ("acme", "globex"):
        await platform.accounts.ensure_account(account)
    token = await platform.accounts.issue_token("acme", "ada")
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as client,
    ):
        yield platform, client, token


CHARGE = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "charge"},
    "spec": {"engine": "step", "steps": [{"id": "pay", "kind": "service", "service": "http"}]},
}


async def test_a_job_sends_a_stored_secret_that_is_stored_and_shown_nowhere(
    fluxo: tuple[Platform, TestClient[Any, Any], str],
    upstream: tuple[str, list[dict[str, str]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    platform, client, token = fluxo
    url, seen = upstream
    install_log_redaction()  # as every Fluxo process does at start
    auth = {"Authorization": f"Bearer {token}"}
    resp = await client.put("/v1/secrets/stripe", json={"value": STRIPE}, headers=auth)
    assert resp.status == 201
    assert STRIPE not in await resp.text()
    await platform.jobs.apply(CHARGE, ACME)
    request = {
        "url": url,
        "method": "POST",
        "json": {"amount": 1200},
        "headers": {"Authorization": {"secret": "stripe", "prefix": "Bearer "}},
    }
    with caplog.at_level(logging.DEBUG):
        job = await platform.jobs.create(ACME, "charge", request)
        done = await platform.jobs.wait(ACME, job.id, 20)
        assert done.status == "succeeded", done.error
        resp = await client.get(f"/v1/jobs/{job.id}", headers=auth)
        shown = await resp.text()

    assert seen[0]["Authorization"] == f"Bearer {STRIPE}"  # the upstream got the credential
    assert STRIPE not in shown
    assert STRIPE.encode() not in await everything_stored(platform.db)
    assert STRIPE not in caplog.text
    body = await resp.json()
    assert body["result"]["json"]["charged"] is True
    assert body["result"]["json"]["debug"] == "used [redacted]"
    [step] = body["steps"]
    # The step shows what it was given: a reference, by name.
    assert step["input"]["headers"] == {"Authorization": {"secret": "stripe", "prefix": "Bearer "}}


async def test_a_reference_resolves_only_in_the_calls_own_account(
    fluxo: tuple[Platform, TestClient[Any, Any], str],
    upstream: tuple[str, list[dict[str, str]]],
) -> None:
    platform, _, _ = fluxo
    url, seen = upstream
    assert platform.secrets is not None
    await platform.secrets.put("acme", "stripe", STRIPE)
    globex = Principal(account_id="globex", user_id="eve")
    await platform.jobs.apply(CHARGE, globex)
    request = {"url": url, "headers": {"Authorization": {"secret": "stripe"}}}
    job = await platform.jobs.create(globex, "charge", request)
    done = await platform.jobs.wait(globex, job.id, 20)
    assert done.status == "failed"
    assert done.error is not None
    assert "secret 'stripe' is not set in account 'globex'" in done.error["message"]
    assert seen == []


# --- the routes -----------------------------------------------------------------------------


async def test_secret_routes_take_values_and_show_only_names(
    fluxo: tuple[Platform, TestClient[Any, Any], str],
) -> None:
    platform, client, token = fluxo
    auth = {"Authorization": f"Bearer {token}"}
    other = {"Authorization": f"Bearer {await platform.accounts.issue_token('globex', 'eve')}"}
    engine = await platform.accounts.issue_token("acme", "node-red", engine="nodered")

    assert (await client.put("/v1/secrets/crm", json={"value": "v-1"}, headers=auth)).status == 201
    resp = await client.put("/v1/secrets/crm", json={"value": "v-22"}, headers=auth)
    assert resp.status == 200
    assert set(await resp.json()) == {"name", "created_at", "updated_at"}
    listed = await (await client.get("/v1/secrets", headers=auth)).json()
    assert [i["name"] for i in listed["items"]] == ["crm"]
    assert "v-22" not in repr(listed)
    assert (await (await client.get("/v1/secrets", headers=other)).json())["items"] == []
    assert (await client.delete("/v1/secrets/crm", headers=other)).status == 404
    engine_auth = {"Authorization": f"Bearer {engine}"}
    assert (await client.get("/v1/secrets", headers=engine_auth)).status == 403
    resp = await client.put("/v1/secrets/x", json={"value": "v"}, headers=engine_auth)
    assert resp.status == 403
    bad_bodies = (
        {"value": 5},
        {"value": "v", "extra": 1},
        ["v"],
        {"value": "\ud800"},  # a lone surrogate: JSON can spell it, UTF-8 cannot
        {"value": "x" * 16_385},
    )
    for body in bad_bodies:
        resp = await client.put("/v1/secrets/crm", json=body, headers=auth)
        assert resp.status == 422, body
    resp = await client.put("/v1/secrets/bad%20name", json={"value": "v"}, headers=auth)
    assert resp.status == 422
    assert (await client.delete("/v1/secrets/crm", headers=auth)).status == 204
    assert (await client.delete("/v1/secrets/crm", headers=auth)).status == 404


# --- masking where packets are shown ------------------------------------------------------------


async def test_credential_looking_values_are_masked_in_jobs_and_calls_shown(
    fluxo: tuple[Platform, TestClient[Any, Any], str],
) -> None:
    platform, client, token = fluxo
    auth = {"Authorization": f"Bearer {token}"}
    secret_input = {"user": "ada", "password": "hunter2-pw", "headers": {"X-Api-Key": "k-123456"}}
    echo = {**CHARGE, "metadata": {"name": "echo"}}
    echo["spec"] = {"engine": "step", "steps": [{"id": "e", "kind": "service", "service": "echo"}]}
    await platform.jobs.apply(echo, ACME)
    job = await platform.jobs.create(ACME, "echo", secret_input)
    await platform.jobs.wait(ACME, job.id, 20)
    shown = await (await client.get(f"/v1/jobs/{job.id}", headers=auth)).json()
    masked = {"user": "ada", "password": "***", "headers": {"X-Api-Key": "***"}}
    assert shown["input"] == masked
    assert shown["result"] == masked
    assert [(s["input"], s["output"]) for s in shown["steps"]] == [(masked, [masked])]
    listed = await (await client.get("/v1/jobs", headers=auth)).json()
    assert "input" not in listed["items"][0]  # lists carry summaries, not packets

    resp = await client.post(
        "/v1/services/echo/calls", json={"payload": secret_input}, headers=auth
    )
    call = await resp.json()
    assert call["result"][0]["payload"] == masked
    again = await (await client.get(f"/v1/calls/{call['id']}", headers=auth)).json()
    assert again["result"][0]["payload"] == masked
    # The data itself is whole: the engine that passes it on to the next step reads it.
    record = await platform.runtime.gateway.get(call["id"], reveal=True)
    assert record.result is not None
    assert record.result[0].payload == secret_input


# --- files on disk ----------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_sqlite_files_are_private_to_their_user(tmp_path: Path) -> None:
    old_mask = os.umask(0o022)  # the usual umask: without care, files would be 0644
    try:
        db = Database(f"sqlite:///{tmp_path}/data/fluxo.db")
        try:
            await db.migrate()
            await _ensure_account(db, "acme")  # a write: the -wal and -shm files exist now
            files = [tmp_path / "data" / n for n in ("fluxo.db", "fluxo.db-wal", "fluxo.db-shm")]
            assert [_mode(p) for p in files] == [0o600] * 3
            assert _mode(tmp_path / "data") == 0o700
        finally:
            await db.close()
        loose = tmp_path / "old.db"
        loose.touch(mode=0o644)
        Database(f"sqlite:///{loose}")  # an older Fluxo's file is tightened when opened
        assert _mode(loose) == 0o600
    finally:
        os.umask(old_mask)


def test_the_fluxo_home_is_created_0700_and_an_old_one_tightened(tmp_path: Path) -> None:
    old_mask = os.umask(0o022)
    try:
        fresh = FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path / "new")})
        assert fresh.ensure_home() == tmp_path / "new"
        assert _mode(tmp_path / "new") == 0o700
        (tmp_path / "old").mkdir(mode=0o755)
        FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path / "old")}).ensure_home()
        assert _mode(tmp_path / "old") == 0o700
    finally:
        os.umask(old_mask)


async def test_an_engine_gets_the_call_result_whole_and_the_job_page_shows_it_masked(
    db: Database,
) -> None:
    # The engine passes a call's result on to the job's next step: masking it would change the
    # data (and make Node-RED and Argo differ from the step engine), so it alone reads it whole.
    from tests.integration.test_remote_engines import WORKFLOW, RecordingEngine

    engine = RecordingEngine()
    platform = Platform(db, svc.SERVICES, workers=1, poll_interval_s=0.2, engines=("step", engine))
    await platform.accounts.ensure_account("acme")
    user = await platform.accounts.issue_token("acme", "ada")
    engine_token = await platform.accounts.issue_token("acme", "node-red", engine="nodered")
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as client,
    ):
        await platform.jobs.apply(WORKFLOW, ACME)
        job = await platform.jobs.create(ACME, "remote", {"n": 1})
        for _ in range(500):
            if engine.started:
                break
            await asyncio.sleep(0.02)
        [start] = engine.started
        payload = {"n": 1, "access_token": "tok-for-the-next-step"}
        packet = {
            "id": f"nr-{job.id}-first",
            "job_id": job.id,
            "step_id": "first",
            "workflow": start.workflow,
            "actor": start.input.actor.model_dump(mode="json", exclude_none=True),
            "payload": payload,
            "headers": {"fluxo-step-key": "first"},
        }
        resp = await client.post(
            "/v1/services/inc/calls?wait=10",
            json=packet,
            headers={"Authorization": f"Bearer {engine_token}"},
        )
        call = await resp.json()
        assert resp.status == 200, call
        assert call["result"][0]["payload"] == {"n": 2, "access_token": "tok-for-the-next-step"}
        page = await client.get(f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {user}"})
        [step] = (await page.json())["steps"]
        assert step["input"] == {"n": 1, "access_token": "***"}
        assert step["output"] == [{"n": 2, "access_token": "***"}]  # its output packets
        shown = await client.get(
            f"/v1/calls/{call['id']}", headers={"Authorization": f"Bearer {user}"}
        )
        assert (await shown.json())["result"][0]["payload"]["access_token"] == "***"


def test_the_secret_key_setting_is_read_and_never_shown(tmp_path: Path) -> None:
    text = base64.b64encode(b"z" * 32).decode()
    config = FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path), "FLUXO_SECRET_KEY": text})
    assert config.secret_key == text
    assert text not in repr(config)
    key = SecretKey.parse(text, "FLUXO_SECRET_KEY")
    assert text not in repr(key)
    # The URL-safe alphabet (as Fernet keys are written) names the same key.
    urlsafe = base64.urlsafe_b64encode(b"\xfb" * 32).decode()
    standard = base64.b64encode(b"\xfb" * 32).decode()
    assert SecretKey.parse(urlsafe, "x").key == SecretKey.parse(standard, "x").key == b"\xfb" * 32
