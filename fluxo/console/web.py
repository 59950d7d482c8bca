"""What every console page uses: its route, the signed-in user, rendering and links."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from jinja2 import Environment

from fluxo.api.common import PLATFORM
from fluxo.console import i18n
from fluxo.console.session import csrf_token
from fluxo.control.platform import Platform
from fluxo_core.storage import Principal

__all__ = [
    "ENVIRONMENTS",
    "SESSION_TOKEN",
    "VIEWER",
    "Handler",
    "Route",
    "locale_of",
    "platform",
    "render",
    "render_fragment",
    "url",
    "viewer",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VIEWER = web.RequestKey("console_viewer", Principal)
SESSION_TOKEN = web.RequestKey("console_session_token", str)
LOCALE = web.RequestKey("console_locale", str)
ENVIRONMENTS = web.AppKey("console_environments", dict[str, Environment])


@dataclass(frozen=True)
class Route:
    """One page (or action) of the console; ``path`` is relative to ``/console``."""

    method: str
    path: str
    handler: Handler
    name: str
    public: bool = False  # answered without a signed-in user (sign-in, static files)


def platform(request: web.Request) -> Platform:
    return request.config_dict[PLATFORM]


def viewer(request: web.Request) -> Principal:
    """The signed-in user: every read and act of a page is scoped to its account."""
    return request[VIEWER]


def locale_of(request: web.Request) -> str:
    if LOCALE not in request:
        request[LOCALE] = i18n.negotiate(
            request.cookies.get(i18n.COOKIE), request.headers.get("Accept-Language")
        )
    return request[LOCALE]


def url(
    request: web.Request, name: str, query: Mapping[str, str] | None = None, **parts: str
) -> str:
    """The path of the named console route, with ``parts`` filled in."""
    built = request.app.router[name].url_for(**{k: str(v) for k, v in parts.items()})
    if query:
        built = built.with_query({k: v for k, v in query.items() if v not in ("", None)})
    return str(built)


def _context(request: web.Request, values: dict[str, Any]) -> dict[str, Any]:
    token = request.get(SESSION_TOKEN)
    return {
        "request": request,
        "who": request.get(VIEWER),
        "locale": locale_of(request),
        "locales": i18n.LOCALES,
        "csrf": csrf_token(request, token),
        "url": lambda name, query=None, **parts: url(request, name, query, **parts),
        "path": request.path_qs,
        **values,
    }


def render_fragment(request: web.Request, template: str, **values: Any) -> str:
    """A template rendered as text in the request's language (for live updates)."""
    env = request.app[ENVIRONMENTS][locale_of(request)]
    return env.get_template(template).render(_context(request, values))


def render(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    """A full page: ``template`` (extending ``base.html``) in the request's language."""
    response = web.Response(
        text=render_fragment(request, template, **values),
        status=status,
        content_type="text/html",
        charset="utf-8",
    )
    response.headers["Content-Language"] = locale_of(request).replace("_", "-")
    return response
