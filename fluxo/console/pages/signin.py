"""Sign-in (password or API token), sign-out and the language switch."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fluxo.api.auth import AUTH
from fluxo.console import i18n
from fluxo.console.session import clear_session, set_session
from fluxo.console.web import Route, platform, render, url, viewer
from fluxo.control.auth import SESSION_TTL_S
from fluxo_core.errors import AuthError

__all__ = ["routes"]

_LANGUAGE_COOKIE_S = 365 * 24 * 3600


def routes() -> list[Route]:
    return [
        Route("GET", "/", _home, "home"),
        Route("GET", "/sign-in", _sign_in_page, "sign_in", public=True),
        Route("POST", "/sign-in", _sign_in, "sign_in_password", public=True),
        Route("POST", "/sign-in/token", _sign_in_token, "sign_in_token", public=True),
        Route("POST", "/sign-out", _sign_out, "sign_out"),
        Route("POST", "/language", _language, "language", public=True),
    ]


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(url(request, "overview"))


def _next(request: web.Request, value: Any) -> str:
    """Where to go after sign-in: a console path only (never another site)."""
    if isinstance(value, str) and value.startswith("/console/") and not value.startswith("//"):
        return value
    return url(request, "overview")


async def _sign_in_page(request: web.Request) -> web.StreamResponse:
    return render(request, "sign_in.html", next=_next(request, request.query.get("next")))


async def _sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    account, user, password = (
        str(form.get(k, "")).strip() for k in ("account", "user", "password")
    )
    target = _next(request, form.get("next"))
    if not (account and user and password):
        return _failed(request, target, account, user, "missing")
    try:
        signed = await request.config_dict[AUTH].sign_in(account, user, password)
    except AuthError as exc:
        return _failed(
            request, target, account, user, "locked" if "too many" in str(exc) else "wrong"
        )
    response = web.HTTPSeeOther(target)
    set_session(request, response, signed.token, int(SESSION_TTL_S))
    raise response


async def _sign_in_token(request: web.Request) -> web.StreamResponse:
    """An API token signs in as its user with its role, for one session of the usual length."""
    form = await request.post()
    token = str(form.get("token", "")).strip()
    target = _next(request, form.get("next"))
    accounts = platform(request).accounts
    try:
        who = await accounts.authenticate(token) if token else None
    except AuthError:
        who = None
    if who is None or who.engine is not None:
        return _failed(request, target, "", "", "token")
    session, _ = await accounts.create_token(
        who.account_id,
        who.user_id,
        "console sign-in (API token)",
        role=who.role,
        expires_at=accounts.clock.time() + SESSION_TTL_S,
        kind="session",
    )
    response = web.HTTPSeeOther(target)
    set_session(request, response, session, int(SESSION_TTL_S))
    raise response


def _failed(request: web.Request, target: str, account: str, user: str, why: str) -> web.Response:
    return render(
        request, "sign_in.html", status=401, next=target, account=account, user=user, failure=why
    )


async def _sign_out(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    if who.kind == "session":
        await request.config_dict[AUTH].sign_out(who)
    response = web.HTTPSeeOther(url(request, "sign_in"))
    clear_session(response)
    raise response


async def _language(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    chosen = str(form.get("locale", ""))
    response = web.HTTPSeeOther(_next(request, form.get("next")))
    if chosen in i18n.LOCALES:
        response.set_cookie(
            i18n.COOKIE,
            chosen,
            path="/console",
            max_age=_LANGUAGE_COOKIE_S,
            samesite="Strict",
            httponly=True,
            secure=request.secure,
        )
    raise response
