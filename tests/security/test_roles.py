"""Roles over every route of the OpenAPI document, enumerated from the document itself.

A viewer's token gets 403 naming its role on every write route and changes nothing; a revoked
token and an expired token get 401 saying so on every route that is not public. A route added
later is covered without a new case: the requests are made from the document.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.auth import Auth
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, Principal, Role
from fluxo_core.storage.secrets import SecretStore
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)

# Answered without a token: the probes, this document, and console sign-in.
PUBLIC = frozenset(
    {
        ("get", "/"),
        ("get", "/v1/health"),
        ("get", "/v1/openapi.json"),
        ("get", "/livez"),
        ("get", "/readyz"),
        ("post", "/v1/sessions"),
    }
)
# The one write a viewer may make: ending its own session (tested below).
VIEWER_WRITES = frozenset({("delete", "/v1/sessions/current")})
# Authenticated by their trigger's secret, not by a token: any token is no credential there
# (test_a_webhook_takes_no_token below).
BY_TRIGGER = frozenset(
    {("post", "/hooks/{account}/{trigger}"), ("post", "/hooks/{account}/{trigger}/sms")}
)
WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "count-up"},
    "spec": {"steps": [{"id": "up", "kind": "service", "service": "inc"}]},
}
ACME = Principal(account_id="acme", user_id="ada")


@dataclass
class World:
    platform: Platform
    http: TestClient[Any, Any]
    auth: Auth
    job_id: str

    async def send(
        self, method: str, path: str, token: str, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        data = None if body is None else json.dumps(body)
        response = await self.http.request(method, path, data=data, headers=headers)
        text = await response.text()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = {"text": text}
        return response.status, parsed if isinstance(parsed, dict) else {"items": parsed}

    async def routes(self) -> list[tuple[str, str]]:
        response = await self.http.get("/v1/openapi.json")
        document = await response.json()
        methods = {"get", "post", "put", "patch", "delete"}
        return sorted(
            (method, path)
            for path, operations in document["paths"].items()
            for method in operations
            if method in methods
        )

    async def state(self) -> Any:
        """Everything of acme a write could change, as plain data."""
        accounts = self.platform.accounts
        assert self.platform.secrets is not None
        jobs = await self.platform.jobs.list(ACME)
        return (
            [
                (a.ref, a.workflow.model_dump(mode="json"))
                for a in await self.platform.workflows.list("acme")
            ],
            [(j.id, j.status) for j in jobs.items],
            [(s.name, s.updated_at) for s in await self.platform.secrets.list("acme")],
            [u.to_json() for u in await self.auth.users.list("acme")],
            # Tokens as they stand, but for their last use (the requests themselves are uses).
            [_unused(t.to_json()) for t in await accounts.list_tokens("acme")],
            [_unused(t.to_json()) for t in await accounts.list_tokens("acme", kind="session")],
            [a.id for a in await accounts.list_accounts()],
        )


def _unused(token: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in token.items() if k != "last_used_at"}


def _concrete(template: str, job_id: str) -> str:
    """A path of the template: the account's own job, else an id that names nothing."""
    return re.sub(r"\{([^}]+)\}", lambda m: job_id if m.group(1) == "job_id" else "x", template)


def _body(method: str) -> Any:
    return None if method in ("get", "delete") else {"name": "x", "value": "y"}


@pytest.fixture
async def world(db: Database, tmp_path: Path) -> AsyncIterator[World]:
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        admission_cache_s=0,
        secrets=SecretStore(db, tmp_path / "secret.key"),
    )
    await platform.accounts.ensure_account("acme")
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
    ):
        await platform.jobs.apply(WORKFLOW, ACME)
        job = await platform.jobs.create(ACME, "count-up", {"n": 1})
        assert platform.secrets is not None
        await platform.secrets.put("acme", "stripe", "sk_test")
        auth = Auth(db, platform.accounts)
        await auth.users.add("acme", "ada", Role.ACCOUNT_ADMIN)
        await auth.users.add("acme", "vic", Role.VIEWER, await auth.hash_password("viewer-pass-1"))
        yield World(platform, http, auth, job.id)


async def test_a_viewer_gets_403_on_every_write_route_and_changes_nothing(world: World) -> None:
    token = await world.platform.accounts.issue_token("acme", "vic", role=Role.VIEWER)
    session = (await world.auth.sign_in("acme", "vic", "viewer-pass-1")).token
    writes = [
        (m, t)
        for m, t in await world.routes()
        if m != "get" and (m, t) not in PUBLIC | VIEWER_WRITES | BY_TRIGGER
    ]
    assert ("post", "/v1/workflows") in writes  # the enumeration found the routes
    before = await world.state()
    for credential in (token, session):
        for method, template in writes:
            path = _concrete(template, world.job_id)
            status, body = await world.send(method.upper(), path, credential, _body(method))
            where = f"viewer: {method.upper()} {path} -> {status} {body}"
            assert status == 403, where
            assert "viewer" in body["error"]["message"], where
    assert await world.state() == before
    # It still reads, and says who it is.
    status, me = await world.send("GET", "/v1/me", token)
    assert (status, me["role"], me["kind"]) == (200, "viewer", "api")
    status, _ = await world.send("GET", "/v1/workflows", token)
    assert status == 200


async def test_a_viewer_may_end_its_own_session(world: World) -> None:
    session = (await world.auth.sign_in("acme", "vic", "viewer-pass-1")).token
    status, _ = await world.send("DELETE", "/v1/sessions/current", session)
    assert status == 204
    status, body = await world.send("GET", "/v1/me", session)
    assert status == 401
    assert "revoked" in body["error"]["message"]


@pytest.mark.parametrize("how", ["revoked", "expired"])
async def test_a_revoked_or_expired_token_gets_401_on_every_route(world: World, how: str) -> None:
    accounts = world.platform.accounts
    expires = time.time() - 1 if how == "expired" else None
    token, info = await accounts.create_token("acme", "ada", "ci", expires_at=expires)
    if how == "revoked":
        status, _ = await world.send("GET", "/v1/me", token)
        assert status == 200  # it worked before it was revoked
        await accounts.revoke_token("acme", info.id)
    routes = [r for r in await world.routes() if r not in PUBLIC | BY_TRIGGER]
    assert ("get", "/metrics") in routes
    before = await world.state()
    for method, template in routes:
        path = _concrete(template, world.job_id)
        status, body = await world.send(method.upper(), path, token, _body(method))
        where = f"{how}: {method.upper()} {path} -> {status} {body}"
        assert status == 401, where
        assert how in body["error"]["message"], where
        assert info.id in body["error"]["message"], where
    assert await world.state() == before


async def test_a_webhook_takes_no_token(world: World) -> None:
    """No token of any role, valid, revoked or expired, opens a webhook: without its trigger's
    signature it is 401 and creates nothing; with it, it needs no token at all."""
    from fluxo.control.triggers.webhook import sign

    assert set(await world.routes()) >= BY_TRIGGER
    platform = world.platform
    assert platform.secrets is not None
    await platform.secrets.put("acme", "hook-key", "whsec-roles")
    await platform.resources.apply(
        ACME,
        {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": "hook"},
            "spec": {"workflow": "count-up", "type": "webhook", "webhook": {"secret": "hook-key"}},
        },
    )
    viewer = await platform.accounts.issue_token("acme", "vic", role=Role.VIEWER)
    admin = await platform.accounts.issue_token("acme", "ada")
    revoked, info = await platform.accounts.create_token("acme", "ada", "old")
    await platform.accounts.revoke_token("acme", info.id)
    before = await world.state()
    for token in (viewer, admin, revoked):
        status, body = await world.send("POST", "/hooks/acme/hook", token, {"n": 1})
        assert status == 401, body
        assert "webhook request is not authenticated" in body["error"]["message"]
    assert await world.state() == before
    stamp = int(time.time())
    data = b'{"n": 1}'
    response = await world.http.post(
        "/hooks/acme/hook",
        data=data,
        headers={
            "Content-Type": "application/json",
            "X-Fluxo-Timestamp": str(stamp),
            "X-Fluxo-Signature": sign("whsec-roles", stamp, data),
        },
    )
    assert response.status == 202
