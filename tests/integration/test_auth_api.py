"""Users, roles, tokens and sessions over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.auth import MAX_FAILURES, Auth
from fluxo.control.platform import Platform
from fluxo_core.clock import ManualClock
from fluxo_core.storage import Database, Role
from fluxo_core.storage.accounts import LAST_USE_WRITE_S
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct-horse-battery"


@dataclass
class World:
    platform: Platform
    http: TestClient[Any, Any]
    auth: Auth
    tokens: dict[str, str]  # "root": platform admin; "admin", "member", "viewer": acme's

    async def send(
        self, method: str, path: str, who: str | None, body: Any = None
    ) -> tuple[int, Any]:
        token = self.tokens.get(who, who) if who else None
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        data = None if body is None else json.dumps(body)
        response = await self.http.request(method, path, data=data, headers=headers)
        text = await response.text()
        return response.status, json.loads(text) if text else None


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    platform = Platform(db, svc.SERVICES, workers=1, poll_interval_s=0.2, admission_cache_s=0)
    await platform.accounts.ensure_account("default")
    await platform.accounts.ensure_account("acme")
    auth = Auth(db, platform.accounts)
    await auth.users.add("default", "root", Role.PLATFORM_ADMIN)
    hashed = await auth.hash_password(PASSWORD)
    for user, role in (("ada", Role.ACCOUNT_ADMIN), ("max", Role.MEMBER), ("vic", Role.VIEWER)):
        await auth.users.add("acme", user, role, hashed)
    tokens = {
        "root": await platform.accounts.issue_token("default", "root"),
        "admin": await platform.accounts.issue_token("acme", "ada"),
        "member": await platform.accounts.issue_token("acme", "max", role=Role.MEMBER),
        "viewer": await platform.accounts.issue_token("acme", "vic", role=Role.VIEWER),
    }
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
    ):
        yield World(platform, http, auth, tokens)


async def test_me_names_the_account_user_and_role(world: World) -> None:
    status, me = await world.send("GET", "/v1/me", "member")
    assert status == 200
    assert me["token_id"].startswith("tok_")
    assert {k: v for k, v in me.items() if k != "token_id"} == {
        "account_id": "acme",
        "user_id": "max",
        "role": "member",
        "kind": "api",
    }
    status, me = await world.send("GET", "/v1/me", "root")
    assert (status, me["role"]) == (200, "platform-admin")


async def test_a_created_token_is_shown_once_and_listed_without_value(world: World) -> None:
    status, made = await world.send(
        "POST", "/v1/tokens", "member", {"name": "ci", "expires_in_s": 3600}
    )
    assert status == 201, made
    assert made["token"].startswith("fxo_")
    assert (made["user_id"], made["role"], made["kind"]) == ("max", "member", "api")
    assert made["expires_at"] is not None
    status, page = await world.send("GET", "/v1/tokens", "member")
    assert status == 200
    listed = {t["id"]: t for t in page["items"]}
    assert set(listed[made["id"]]) == set(made) - {"token"}
    assert made["token"] not in json.dumps(page)
    # The new token works, with its role.
    status, me = await world.send("GET", "/v1/me", made["token"])
    assert (status, me["role"], me["token_id"]) == (200, "member", made["id"])


async def test_a_member_manages_only_its_own_tokens(world: World) -> None:
    status, body = await world.send(
        "POST", "/v1/users", "member", {"user_id": "x", "role": "viewer"}
    )
    assert status == 403
    assert "member" in body["error"]["message"]
    status, body = await world.send("POST", "/v1/tokens", "member", {"name": "t", "user_id": "ada"})
    assert status == 403
    status, body = await world.send(
        "POST", "/v1/tokens", "member", {"name": "t", "role": "account-admin"}
    )
    assert status == 403
    # ada's token is not in max's list, and max cannot revoke it (404, as if absent).
    _, ada = await world.send("POST", "/v1/tokens", "admin", {"name": "ada-ci"})
    _, page = await world.send("GET", "/v1/tokens", "member")
    assert ada["id"] not in {t["id"] for t in page["items"]}
    status, _ = await world.send("DELETE", f"/v1/tokens/{ada['id']}", "member")
    assert status == 404
    assert (await world.send("GET", "/v1/me", ada["token"]))[0] == 200
    # Its own token it revokes; then that token is 401 saying it was revoked.
    _, own = await world.send("POST", "/v1/tokens", "member", {"name": "mine"})
    assert (await world.send("DELETE", f"/v1/tokens/{own['id']}", "member"))[0] == 204
    status, body = await world.send("GET", "/v1/me", own["token"])
    assert status == 401
    assert "revoked" in body["error"]["message"]


async def test_an_account_admin_manages_the_accounts_users_and_tokens(world: World) -> None:
    status, user = await world.send(
        "POST", "/v1/users", "admin", {"user_id": "bob", "role": "member", "password": PASSWORD}
    )
    assert (status, user["role"], user["has_password"]) == (201, "member", True)
    assert "hash" not in json.dumps(user)
    status, _ = await world.send("POST", "/v1/users", "admin", {"user_id": "bob", "role": "viewer"})
    assert status == 409
    status, _ = await world.send(
        "POST", "/v1/users", "admin", {"user_id": "eve", "role": "platform-admin"}
    )
    assert status == 403
    # A token for bob, capped at bob's role.
    status, made = await world.send("POST", "/v1/tokens", "admin", {"name": "b", "user_id": "bob"})
    assert (status, made["role"]) == (201, "member")
    status, _ = await world.send(
        "POST", "/v1/tokens", "admin", {"name": "b", "user_id": "bob", "role": "account-admin"}
    )
    assert status == 403
    _, page = await world.send("GET", "/v1/tokens", "admin")
    assert made["id"] in {t["id"] for t in page["items"]}
    # Removing bob revokes his tokens.
    assert (await world.send("DELETE", "/v1/users/bob", "admin"))[0] == 204
    assert (await world.send("GET", "/v1/users/bob", "admin"))[0] == 404
    assert (await world.send("GET", "/v1/me", made["token"]))[0] == 401


async def test_a_platform_admin_creates_accounts_and_reads_metrics(world: World) -> None:
    status, made = await world.send(
        "POST",
        "/v1/accounts",
        "root",
        {"id": "initech", "admin_user": "peter", "admin_password": PASSWORD},
    )
    assert (status, made["admin"]["role"]) == (201, "account-admin"), made
    status, page = await world.send("GET", "/v1/accounts", "root")
    assert {"acme", "initech"} <= {a["id"] for a in page["items"]}
    assert (await world.send("POST", "/v1/accounts", "root", {"id": "initech"}))[0] == 409
    status, signed = await world.send(
        "POST", "/v1/sessions", None, {"account": "initech", "user": "peter", "password": PASSWORD}
    )
    assert status == 201
    assert (await world.send("GET", "/v1/me", signed["token"]))[1]["account_id"] == "initech"
    # An account admin is no platform admin.
    assert (await world.send("GET", "/v1/accounts", "admin"))[0] == 404
    assert (await world.send("GET", "/metrics", "admin"))[0] == 404
    assert (
        await world.http.get(
            "/metrics", headers={"Authorization": f"Bearer {world.tokens['root']}"}
        )
    ).status == 200


async def test_sign_in_answers_alike_for_a_wrong_user_and_a_wrong_password(world: World) -> None:
    answers = []
    for account, user, password in (
        ("acme", "max", "wrong-password"),
        ("acme", "nobody", PASSWORD),
        ("nowhere", "max", PASSWORD),
    ):
        status, body = await world.send(
            "POST", "/v1/sessions", None, {"account": account, "user": user, "password": password}
        )
        answers.append((status, body["error"]["message"]))
    assert len(set(answers)) == 1
    assert answers[0][0] == 401


async def test_repeated_failures_hold_off_even_the_right_password(world: World) -> None:
    wrong = {"account": "acme", "user": "max", "password": "wrong-password"}
    for _ in range(MAX_FAILURES):
        assert (await world.send("POST", "/v1/sessions", None, wrong))[0] == 401
    right = {**wrong, "password": PASSWORD}
    status, body = await world.send("POST", "/v1/sessions", None, right)
    assert status == 401
    assert "too many failed attempts" in body["error"]["message"]
    # Another user of the account is not held off.
    other = {**right, "user": "ada"}
    assert (await world.send("POST", "/v1/sessions", None, other))[0] == 201


async def test_a_session_signs_in_out_and_is_revocable_by_an_admin(world: World) -> None:
    creds = {"account": "acme", "user": "max", "password": PASSWORD}
    status, first = await world.send("POST", "/v1/sessions", None, creds)
    assert status == 201
    assert (first["kind"], first["role"], first["token"][:4]) == ("session", "member", "fxs_")
    status, me = await world.send("GET", "/v1/me", first["token"])
    assert (me["kind"], me["user_id"]) == ("session", "max")
    # Sessions are not API tokens: listed apart.
    _, tokens = await world.send("GET", "/v1/tokens", "admin")
    assert first["id"] not in {t["id"] for t in tokens["items"]}
    _, sessions = await world.send("GET", "/v1/sessions", "admin")
    assert first["id"] in {s["id"] for s in sessions["items"]}
    # Signing out revokes it.
    assert (await world.send("DELETE", "/v1/sessions/current", first["token"]))[0] == 204
    assert (await world.send("GET", "/v1/me", first["token"]))[0] == 401
    # An admin revokes another user's session.
    _, second = await world.send("POST", "/v1/sessions", None, creds)
    assert (await world.send("DELETE", f"/v1/sessions/{second['id']}", "admin"))[0] == 204
    status, body = await world.send("GET", "/v1/me", second["token"])
    assert status == 401
    assert "session" in body["error"]["message"]
    # A new password ends the user's sessions.
    _, third = await world.send("POST", "/v1/sessions", None, creds)
    new = {"password": "another-good-password"}
    assert (await world.send("PUT", "/v1/users/max/password", "member", new))[0] == 204
    assert (await world.send("GET", "/v1/me", third["token"]))[0] == 401
    assert (await world.send("POST", "/v1/sessions", None, creds))[0] == 401
    assert (await world.send("POST", "/v1/sessions", None, {**creds, **new}))[0] == 201
    # A member sets no one else's password.
    assert (await world.send("PUT", "/v1/users/ada/password", "member", new))[0] == 403


async def test_last_use_is_recorded_at_most_once_a_minute(world: World) -> None:
    accounts = world.platform.accounts
    _, made = await world.send("POST", "/v1/tokens", "member", {"name": "t"})
    assert (await accounts.get_token("acme", made["id"])).last_used_at is None
    assert (await world.send("GET", "/v1/me", made["token"]))[0] == 200
    first = (await accounts.get_token("acme", made["id"])).last_used_at
    assert first is not None
    for _ in range(3):
        assert (await world.send("GET", "/v1/me", made["token"]))[0] == 200
    assert (await accounts.get_token("acme", made["id"])).last_used_at == first
    # A minute on, the next use is written again.
    clock = ManualClock(start=first)
    accounts.clock = clock
    clock.advance(LAST_USE_WRITE_S + 1)
    assert (await world.send("GET", "/v1/me", made["token"]))[0] == 200
    assert (await accounts.get_token("acme", made["id"])).last_used_at == clock.time()


async def test_an_expiry_in_the_past_or_malformed_is_refused(world: World) -> None:
    for body in (
        {"name": "t", "expires_at": "2001-01-01T00:00:00Z"},
        {"name": "t", "expires_at": "tomorrow"},
        {"name": "t", "expires_in_s": -5},
        {"name": "t", "role": "owner"},
    ):
        status, answer = await world.send("POST", "/v1/tokens", "member", body)
        assert status == 422, (body, answer)
