"""Server-sent events for live pages: re-render fragments and send the ones that changed.

A page's element ``<div id="x" data-live="URL">`` is kept current by ``static/console.js``: each
event is a JSON object ``{element id: html}`` whose elements it replaces. The HTML comes from the
same templates as the page (escaped by Jinja), so a live update looks exactly like a reload.
The stream is a console route like any other: signed in, scoped to the viewer's account.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["CLOSING", "HEARTBEAT_S", "MAX_STREAM_S", "stream"]

CLOSING = web.AppKey("console_closing", asyncio.Event)
"""Set when the server shuts down: open streams end at once instead of holding the shutdown."""

Fragments = Callable[[], Awaitable[dict[str, str]]]

HEARTBEAT_S = 15.0
# A stream ends after this long and the browser reconnects (EventSource does it by itself): the
# session is checked again, and a revoked one stops getting data.
MAX_STREAM_S = 300.0


async def stream(
    request: web.Request,
    fragments: Fragments,
    *,
    interval_s: float = 1.0,
    done: Callable[[], bool] | None = None,
) -> web.StreamResponse:
    """Send ``fragments()`` every ``interval_s`` when it changed, until the client leaves,
    :data:`MAX_STREAM_S` passes or ``done()`` says there will be nothing new (then
    ``event: done`` tells the page to stop listening)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
        }
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    start = last_sent = loop.time()
    previous: dict[str, str] = {}
    try:
        while loop.time() - start < MAX_STREAM_S:
            current = await fragments()
            changed = {k: v for k, v in current.items() if previous.get(k) != v}
            if changed:
                await response.write(_event("update", json.dumps(changed)))
                previous = current
                last_sent = loop.time()
            if done is not None and done():
                await response.write(_event("done", "{}"))
                break
            if loop.time() - last_sent >= HEARTBEAT_S:
                await response.write(b": keep-alive\n\n")
                last_sent = loop.time()
            if _gone(request) or await _closing(request, interval_s):
                break
    except ConnectionResetError:
        pass  # the browser went away (a closed tab, another page): nothing to finish
    return response


def _gone(request: web.Request) -> bool:
    """The browser left (a closed tab, another page); noticed without waiting for a write."""
    return request.transport is None or request.transport.is_closing()


async def _closing(request: web.Request, wait_s: float) -> bool:
    """Wait ``wait_s``; True at once if the server is shutting down."""
    closing = request.app[CLOSING]
    try:
        await asyncio.wait_for(closing.wait(), wait_s)
    except TimeoutError:
        return False
    return True


def _event(name: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()
