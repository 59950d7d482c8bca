"""The HTTP gateway: authentication, account scope, sync and async calls, and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control import Admission
from fluxo.control.platform import Platform
from fluxo_core.storage import AccountStore, Database
from fluxo_core.storage.tables import calls, queue_messages
from service_runtime import ServiceRuntime, default_interceptors
from tests.support import services as svc

LIMIT = 4096


class Api:
    def __init__(self, client: TestClient[Any, Any], db: Database, tokens: dict[str, str]) -> None:
        self.client = client
        self.db = db
        self.tokens = tokens

    def auth(self, account: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[account]}"}

    async def enqueued(self) -> int:
        count = await self.db.read(
            lambda c: c.scalar(sa.select(sa.func.count()).select_from(queue_messages))
        )
        return int(count or 0)


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        max_packet_bytes=LIMIT,
        poll_interval_s=0.2,
        admission_cache_s=0,
    )
    tokens = {}
    for account in ("acme", "globex"):
        await platform.accounts.ensure_account(account)
        tokens[account] = await platform.accounts.issue_token(account, f"{account}-user")
    async with platform:
        app = create_app(platform, max_packet_bytes=LIMIT)
        async with TestClient(TestServer(app)) as client:
            yield Api(client, db, tokens)


async def test_health_needs_no_token(api: Api) -> None:
    resp = await api.client.get("/v1/health")
    assert resp.status == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["none", "unknown", "wrong-scheme"],
)
async def test_calls_need_a_valid_token(api: Api, headers: dict[str, str]) -> None:
    resp = await api.client.post("/v1/services/echo/calls", json={"payload": {}}, headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == "unauthenticated"
    assert "Bearer" in body["error"]["message"] or "token" in body["error"]["message"]
    assert await api.enqueued() == 0


async def test_synchronous_call_returns_the_result(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/echo/calls", json={"payload": {"q": 1}}, headers=api.auth()
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "succeeded"
    assert body["account_id"] == "acme"
    assert body["user_id"] == "acme-user"  # the actor comes from the token
    assert body["result"][0]["payload"] == {"q": 1}


async def test_asynchronous_call_then_poll(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/fan-out/calls?async=true",
        json={"payload": {"items": [1, 2]}},
        headers=api.auth(),
    )
    assert resp.status == 202
    location = resp.headers["Location"]
    assert (await resp.json())["status"] in ("queued", "succeeded")
    resp = await api.client.get(f"{location}?wait=10", headers=api.auth())
    assert resp.status == 200
    body = await resp.json()
    assert [p["payload"]["item"] for p in body["result"]] == [1, 2]


async def test_a_call_is_invisible_to_other_accounts(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/echo/calls", json={"payload": {}}, headers=api.auth("acme")
    )
    call_id = (await resp.json())["id"]
    resp = await api.client.get(f"/v1/calls/{call_id}", headers=api.auth("globex"))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "call_not_found"


async def test_malformed_json_is_a_400_naming_the_position(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/echo/calls",
        data=b'{"payload": {"a": 1,}}',
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "malformed"
    assert "line 1 column" in body["error"]["message"]
    assert await api.enqueued() == 0


async def test_unknown_service_is_a_404_naming_it(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/ecoh/calls", json={"payload": {}}, headers=api.auth()
    )
    assert resp.status == 404
    body = await resp.json()
    assert body["error"]["code"] == "unknown_service"
    assert "'ecoh'" in body["error"]["message"]
    assert await api.enqueued() == 0


async def test_packet_over_the_size_limit_is_a_413(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/echo/calls", json={"payload": {"blob": "x" * LIMIT}}, headers=api.auth()
    )
    assert resp.status == 413
    body = await resp.json()
    assert "FLUXO_MAX_PACKET_BYTES" in body["error"]["message"]
    assert await api.enqueued() == 0


async def test_request_far_over_the_limit_is_refused_before_reading(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/echo/calls",
        data=b'{"payload": {"blob": "' + b"x" * (LIMIT * 40) + b'"}}',
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert await api.enqueued() == 0


async def test_packet_for_another_account_is_a_403(api: Api) -> None:
    packet = {
        "actor": {"user": {"id": "mallory"}, "account": {"id": "globex"}},
        "payload": {"steal": True},
    }
    resp = await api.client.post("/v1/services/echo/calls", json=packet, headers=api.auth("acme"))
    assert resp.status == 403
    body = await resp.json()
    assert "token belongs to account 'acme'" in body["error"]["message"]
    assert await api.enqueued() == 0
    assert await api.db.read(lambda c: c.scalar(sa.select(sa.func.count()).select_from(calls))) == 0


async def test_invalid_packet_lists_every_problem_with_its_location(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/echo/calls",
        json={"payload": [{"ok": 1}, "not-an-object"], "atempt": 2},
        headers=api.auth(),
    )
    assert resp.status == 422
    problems = {p["location"] for p in (await resp.json())["error"]["problems"]}
    assert "payload[1]" in problems
    assert "atempt" in problems
    assert await api.enqueued() == 0


async def test_blocked_account_is_refused_at_admission(api: Api) -> None:
    await AccountStore(api.db).set_blocked("acme", True, "unpaid invoice")
    resp = await api.client.post(
        "/v1/services/echo/calls", json={"payload": {}}, headers=api.auth()
    )
    assert resp.status == 403
    body = await resp.json()
    assert body["error"]["code"] == "admission_denied"
    assert "unpaid invoice" in body["error"]["message"]
    assert await api.enqueued() == 0


async def test_bad_wait_parameter_is_a_422(api: Api) -> None:
    resp = await api.client.post(
        "/v1/services/echo/calls?wait=soon", json={"payload": {}}, headers=api.auth()
    )
    assert resp.status == 422
    assert (await resp.json())["error"]["problems"][0]["location"] == "query.wait"


async def test_a_block_stops_calls_already_queued(db: Database) -> None:
    accounts = AccountStore(db)
    await accounts.ensure_account("acme")
    admission = Admission(accounts, cache_s=0)
    chain = [admission, *default_interceptors()]
    async with ServiceRuntime(db, svc.SERVICES, workers=0, interceptors=chain) as rt:
        from fluxo_core.ir import Packet
        from service_runtime import Worker

        actor = {"user": {"id": "u"}, "account": {"id": "acme"}}
        (call_id,) = await rt.gateway.submit(
            "echo", [Packet.model_validate({"actor": actor, "payload": {}})]
        )
        await accounts.set_blocked("acme", True, "fraud review")
        worker = Worker(db, rt.transport, svc.SERVICES, interceptors=rt.interceptors)
        assert await worker.run_once() == 1
        record = await rt.gateway.get(call_id)
    assert record.status == "failed"
    assert record.error is not None
    assert record.error["code"] == "admission_denied"
    assert "fraud review" in record.error["message"]
    usage = await db.read(lambda c: c.scalar(sa.text("SELECT count(*) FROM usage_records")))
    assert usage == 0
