"""Users, tokens, sessions, accounts and ``GET /v1/me`` (the role rules live in fluxo.control.auth).

``POST /v1/sessions`` (console sign-in) is the one route here without a token. Every other answer
is scoped to the caller's account: another account's user, token or session is 404. Token values
are shown once, in the answer that creates them; lists never hold a value or a digest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from fluxo.api.common import PLATFORM, json_body, principal
from fluxo.control.auth import Auth, platform_only, require
from fluxo_core.errors import ValidationError
from fluxo_core.storage import Role

__all__ = ["AUTH", "PUBLIC_ROUTES", "add_routes", "viewer_may"]

AUTH = web.AppKey("auth", Auth)

PUBLIC_ROUTES = frozenset({("POST", "/v1/sessions")})
"""Routes answered without a token (sign-in makes one)."""

# What a viewer may do besides reading: end its own session.
_VIEWER_WRITES = frozenset({("DELETE", "/v1/sessions/current")})


def viewer_may(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") or (request.method, request.path) in _VIEWER_WRITES


def add_routes(app: web.Application) -> None:
    platform = app[PLATFORM]
    app[AUTH] = Auth(platform.db, platform.accounts)
    app.router.add_get("/v1/me", _me)
    app.router.add_get("/v1/users", _list_users)
    app.router.add_post("/v1/users", _add_user)
    app.router.add_get("/v1/users/{user_id}", _get_user)
    app.router.add_delete("/v1/users/{user_id}", _remove_user)
    app.router.add_put("/v1/users/{user_id}/password", _set_password)
    app.router.add_get("/v1/tokens", _list_tokens)
    app.router.add_post("/v1/tokens", _create_token)
    app.router.add_delete("/v1/tokens/{token_id}", _revoke_token)
    app.router.add_post("/v1/sessions", _sign_in)
    app.router.add_get("/v1/sessions", _list_sessions)
    app.router.add_delete("/v1/sessions/current", _sign_out)
    app.router.add_delete("/v1/sessions/{session_id}", _revoke_session)
    app.router.add_get("/v1/accounts", _list_accounts)
    app.router.add_post("/v1/accounts", _create_account)


def _auth(request: web.Request) -> Auth:
    return request.app[AUTH]


def _fields(body: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    """The body as an object with string fields ``required`` and maybe ``optional``."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", problems=[("body", "an object")])
    problems = [(f"body.{k}", "unknown field") for k in sorted(set(body) - required - optional)]
    problems += [(f"body.{k}", "required") for k in sorted(required - set(body))]
    problems += [
        (f"body.{k}", "must be a string")
        for k, v in sorted(body.items())
        if k != "expires_in_s"
        and ((k in required and not isinstance(v, str)) or not isinstance(v, str | None))
    ]
    if problems:
        raise ValidationError(
            "the body has problems: " + "; ".join(f"{w}: {m}" for w, m in problems),
            problems=problems,
        )
    return body


async def _me(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response(
        {
            "account_id": who.account_id,
            "user_id": who.user_id,
            "role": who.role.value,
            "kind": "engine" if who.engine else who.kind,
            "token_id": who.token_id,
        }
    )


# --- users ------------------------------------------------------------------------------------


async def _list_users(request: web.Request) -> web.Response:
    items = await _auth(request).users.list(principal(request).account_id)
    return web.json_response({"items": [u.to_json() for u in items]})


async def _get_user(request: web.Request) -> web.Response:
    user = await _auth(request).users.get(
        principal(request).account_id, request.match_info["user_id"]
    )
    return web.json_response(user.to_json())


async def _add_user(request: web.Request) -> web.Response:
    """Body ``{"user_id", "role", "password"?}``; 201. Account admins only."""
    body = _fields(await json_body(request), {"user_id", "role"}, {"password"})
    user = await _auth(request).add_user(
        principal(request),
        body["user_id"],
        Role.parse(body["role"], "body.role"),
        body.get("password"),
    )
    return web.json_response(user.to_json(), status=201)


async def _remove_user(request: web.Request) -> web.Response:
    await _auth(request).remove_user(principal(request), request.match_info["user_id"])
    return web.Response(status=204)


async def _set_password(request: web.Request) -> web.Response:
    """Body ``{"password"}``: one's own, or (account admins) another user's; 204."""
    body = _fields(await json_body(request), {"password"}, set())
    who = principal(request)
    user_id = request.match_info["user_id"]
    if user_id != who.user_id:
        require(who, Role.ACCOUNT_ADMIN, "set another user's password")
    # Another account's user, or one that does not exist: 404 before anything is hashed.
    await _auth(request).users.get(who.account_id, user_id)
    await _auth(request).set_password(who, user_id, body["password"])
    return web.Response(status=204)


# --- tokens -----------------------------------------------------------------------------------


async def _list_tokens(request: web.Request) -> web.Response:
    items = await _auth(request).list_tokens(principal(request))
    return web.json_response({"items": [t.to_json() for t in items]})


async def _create_token(request: web.Request) -> web.Response:
    """Body ``{"name", "role"?, "user_id"?, "expires_at"?|"expires_in_s"?}``; 201 with the
    token's value, shown this once."""
    body = _fields(
        await json_body(request), {"name"}, {"role", "user_id", "expires_at", "expires_in_s"}
    )
    auth = _auth(request)
    expires_at = _expiry(body, auth.accounts.clock.time())
    role = None if body.get("role") is None else Role.parse(body["role"], "body.role")
    token, info = await auth.create_token(
        principal(request),
        name=body["name"],
        user_id=body.get("user_id"),
        role=role,
        expires_at=expires_at,
    )
    return web.json_response({**info.to_json(), "token": token}, status=201)


def _expiry(body: dict[str, Any], now: float) -> float | None:
    if body.get("expires_at") is not None and body.get("expires_in_s") is not None:
        raise ValidationError(
            "give expires_at or expires_in_s, not both",
            problems=[("body.expires_in_s", "not with expires_at")],
        )
    if body.get("expires_in_s") is not None:
        seconds = body["expires_in_s"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ValidationError(
                "expires_in_s must be a positive number of seconds",
                problems=[("body.expires_in_s", "a positive number")],
            )
        return now + float(seconds)
    if body.get("expires_at") is not None:
        try:
            at = datetime.fromisoformat(body["expires_at"])
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            raise ValidationError(
                "expires_at must be an ISO 8601 time with a zone, e.g. 2027-01-31T00:00:00Z",
                problems=[("body.expires_at", "ISO 8601 with a zone")],
            )
        return at.timestamp()
    return None


async def _revoke_token(request: web.Request) -> web.Response:
    await _auth(request).revoke(principal(request), request.match_info["token_id"], "api")
    return web.Response(status=204)


# --- sessions ---------------------------------------------------------------------------------


async def _sign_in(request: web.Request) -> web.Response:
    """Body ``{"account", "user", "password"}``; 201 with the session token (shown once)."""
    body = _fields(await json_body(request), {"account", "user", "password"}, set())
    signed = await _auth(request).sign_in(body["account"], body["user"], body["password"])
    return web.json_response({**signed.session.to_json(), "token": signed.token}, status=201)


async def _list_sessions(request: web.Request) -> web.Response:
    items = await _auth(request).list_tokens(principal(request), kind="session")
    return web.json_response({"items": [t.to_json() for t in items]})


async def _sign_out(request: web.Request) -> web.Response:
    await _auth(request).sign_out(principal(request))
    return web.Response(status=204)


async def _revoke_session(request: web.Request) -> web.Response:
    await _auth(request).revoke(principal(request), request.match_info["session_id"], "session")
    return web.Response(status=204)


# --- accounts (platform admins) ---------------------------------------------------------------


async def _list_accounts(request: web.Request) -> web.Response:
    platform_only(principal(request))
    items = await _auth(request).accounts.list_accounts()
    return web.json_response(
        {"items": [{"id": a.id, "name": a.name, "blocked": a.blocked} for a in items]}
    )


async def _create_account(request: web.Request) -> web.Response:
    """Body ``{"id", "name"?, "admin_user"?, "admin_password"?}``; 201."""
    who = principal(request)
    platform_only(who)  # before the body is read: a tenant learns nothing of this route
    body = _fields(await json_body(request), {"id"}, {"name", "admin_user", "admin_password"})
    admin = None
    if body.get("admin_user") is not None:
        admin = (body["admin_user"], body.get("admin_password"))
    user = await _auth(request).create_account(who, body["id"], body.get("name"), admin)
    answer: dict[str, Any] = {"id": body["id"], "name": body.get("name") or body["id"]}
    if user is not None:
        answer["admin"] = user.to_json()
    return web.json_response(answer, status=201)
