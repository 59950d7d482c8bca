"""The console's aiohttp application: pages, sign-in guard, CSRF, error pages, static files."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup

from fluxo.console import i18n, pages
from fluxo.console.session import (
    COOKIE,
    CSRF_FIELD,
    clear_session,
    csrf_ok,
    pre_session_cookie,
)
from fluxo.console.sse import CLOSING
from fluxo.console.web import (
    ENVIRONMENTS,
    SESSION_TOKEN,
    VIEWER,
    Handler,
    platform,
    render,
    url,
)
from fluxo_core.errors import AuthError, FluxoError, NotFoundError

__all__ = ["PREFIX", "create_console"]

log = logging.getLogger(__name__)

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
PUBLIC = web.AppKey("console_public", frozenset[str])

# No inline script and no style attribute: what a page shows can never run as code.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def create_console() -> web.Application:
    """The console application; mounted under :data:`PREFIX` on the API application (whose
    ``PLATFORM`` it reads through ``request.config_dict``)."""
    app = web.Application(middlewares=[_headers, _errors, _session, _csrf])
    app[ENVIRONMENTS] = {locale: _environment(locale) for locale in i18n.LOCALES}
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_close_streams)
    routes = pages.discover()
    app[PUBLIC] = frozenset(r.name for r in routes if r.public) | {"static"}
    app.router.add_static("/static", STATIC, name="static")
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
    # Last: any other path under /console is the console's 404 page, not the API's JSON.
    app.router.add_route("*", "/{tail:.*}", _not_found, name="not_found")
    return app


async def _close_streams(app: web.Application) -> None:
    app[CLOSING].set()


def _environment(locale: str) -> Environment:
    env = Environment(
        loader=PackageLoader("fluxo.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    translations = i18n.translations
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    formats = i18n.Formats(locale)
    env.filters.update(
        datetime=formats.datetime,
        number=formats.number,
        percent=formats.percent,
        money=formats.money,
        duration=formats.duration,
    )
    env.globals["csrf_field"] = _csrf_field
    names = {k: translations(locale).gettext(v) for k, v in i18n.STATUS_NAMES.items()}
    env.filters["status"] = lambda value: Markup(
        '<span class="status status-{0}">{1}</span>'
    ).format(value, names.get(value, value))
    env.globals["static"] = _static_url
    return env


@pass_context
def _csrf_field(context: Context) -> Markup:
    """The hidden field every form of the console carries (see fluxo/console/session.py)."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, context["csrf"])


_versions: dict[str, str] = {}


def _static_url(name: str) -> str:
    """A static file's URL with its content's digest, so a browser never keeps a stale copy."""
    if name not in _versions:
        _versions[name] = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]
    return f"{PREFIX}/static/{name}?v={_versions[name]}"


def _route_name(request: web.Request) -> str | None:
    route = request.match_info.route
    return route.name if route is not None else None


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if _route_name(request) != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A failure is a page of the console (status kept), never JSON or a stack trace."""
    try:
        return await handler(request)
    except FluxoError as exc:
        status = exc.http_status
        message = str(exc) if status < 500 else None
        if isinstance(exc, NotFoundError):
            message = None  # the same page whether it is missing or another account's
        return render(request, "error.html", status=status, code=status, message=message)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.status != 413:
            return render(request, "error.html", status=exc.status, code=exc.status, message=None)
        raise
    except Exception:
        log.exception("console error on %s %s", request.method, request.path)
        return render(request, "error.html", status=500, code=500, message=None)


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise NotFoundError("no such page")


@web.middleware
async def _session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is signed in, from the session cookie; a page of a signed-out user goes to sign-in."""
    token = request.cookies.get(COOKIE)
    if token:
        try:
            request[VIEWER] = await platform(request).accounts.authenticate(token)
            request[SESSION_TOKEN] = token
        except AuthError:
            token = None  # expired or revoked: as if signed out
    if VIEWER not in request and _route_name(request) not in request.app[PUBLIC]:
        if request.method == "GET" and not request.headers.get("Accept", "").startswith(
            "text/event-stream"
        ):
            target = url(request, "sign_in", {"next": request.path_qs})
            response: web.StreamResponse = web.HTTPSeeOther(target)
        else:
            response = render(request, "error.html", status=401, code=401, message=None)
        if request.cookies.get(COOKIE):
            clear_session(response)
        if isinstance(response, web.HTTPException):
            raise response
        return response
    response = await handler(request)
    pre_session_cookie(request, response)
    return response


@web.middleware
async def _csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a form POST without this session's CSRF value or from another origin."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return await handler(request)
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return _refused(request)
    form: Any = await request.post()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not csrf_ok(request, request.get(SESSION_TOKEN), sent):
        return _refused(request)
    return await handler(request)


def _refused(request: web.Request) -> web.Response:
    return render(
        request,
        "error.html",
        status=403,
        code=403,
        message=Markup(""),  # the template explains: the form expired or came from elsewhere
        csrf_refused=True,
    )
