"""The console's session cookie and its CSRF tokens.

The cookie holds a session token of the control plane (``POST /v1/sessions`` makes the same kind):
HttpOnly, SameSite=Strict, Secure when the request came over https, scoped to ``/console``.
Signing out revokes the session, so a copied cookie stops working too.

CSRF: a form of a signed-in page carries a digest of the session token (unguessable without the
HttpOnly cookie, the same for every form of the session, nothing to store); the sign-in form,
before there is a session, carries a random value that must equal a cookie of its own (double
submit). Both come on top of SameSite=Strict and an Origin check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "PRE_SESSION_COOKIE",
    "clear_session",
    "csrf_ok",
    "csrf_token",
    "pre_session_cookie",
    "set_session",
]

COOKIE = "fluxo_session"
PRE_SESSION_COOKIE = "fluxo_csrf"
CSRF_FIELD = "csrf"
PATH = "/console"
_NEW_CSRF = web.RequestKey("console_new_csrf", str)


def _digest(session_token: str) -> str:
    return hashlib.sha256(b"fluxo console csrf\x00" + session_token.encode()).hexdigest()


def csrf_token(request: web.Request, session_token: str | None) -> str:
    """The CSRF value this request's forms carry."""
    if session_token is not None:
        return _digest(session_token)
    # Before sign-in: the pre-session cookie's value, made once per browser (set by the page).
    existing = request.cookies.get(PRE_SESSION_COOKIE, "")
    if len(existing) == 43:
        return existing
    if _NEW_CSRF not in request:
        request[_NEW_CSRF] = secrets.token_urlsafe(32)
    return request[_NEW_CSRF]


def pre_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Set the pre-session CSRF cookie if this response's form made a new value."""
    made = request.get(_NEW_CSRF)
    if made:
        response.set_cookie(
            PRE_SESSION_COOKIE,
            made,
            path=PATH,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )


def csrf_ok(request: web.Request, session_token: str | None, sent: str) -> bool:
    if session_token is not None:
        expected = _digest(session_token)
    else:
        expected = request.cookies.get(PRE_SESSION_COOKIE, "")
    return bool(expected) and hmac.compare_digest(expected.encode(), sent.encode())


def set_session(
    request: web.Request, response: web.StreamResponse, token: str, max_age: int
) -> None:
    response.set_cookie(
        COOKIE,
        token,
        path=PATH,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    response.del_cookie(PRE_SESSION_COOKIE, path=PATH)


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=PATH)
