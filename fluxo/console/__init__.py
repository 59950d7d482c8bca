"""The web console: server-rendered pages over the control plane, mounted at ``/console``.

A face, like :mod:`fluxo.api`: it reads and acts through the control plane's services (and the
API's shared helpers), never through SQL. ``fluxo up`` mounts it on the API application
(:func:`mount`, handed to :func:`fluxo.api.server.run_server` by the CLI).

Adding pages
============
One module per page group under ``fluxo/console/pages/`` (``jobs.py``, ``workflows.py``...). Each
defines one function, found by :func:`fluxo.console.pages.discover` without being listed
anywhere::

    from fluxo.console.web import Route, render, viewer

    def routes() -> list[Route]:
        return [Route("GET", "/things/{thing_id}", thing_page, "thing")]

    async def thing_page(request: web.Request) -> web.StreamResponse:
        who = viewer(request)            # the signed-in Principal: scope EVERY read to it
        thing = await ...(who.account_id, request.match_info["thing_id"])   # NotFoundError -> 404 page
        return render(request, "thing.html", thing=thing)

- Paths are relative to ``/console``; names are Python identifiers (``job_page``: aiohttp
  refuses ``-`` and keywords). ``url(name, **parts)`` in templates (and
  :func:`fluxo.console.web.url`) builds links. Routes are signed-in only unless ``public=True``.
- Every POST must carry the form's CSRF field: templates put ``{{ csrf_field() }}`` in each form;
  the middleware refuses a POST without the right one (403 page) before the handler runs.
- A :class:`~fluxo_core.errors.FluxoError` raised by a handler becomes an error page with its
  status (another account's thing is ``NotFoundError``: the same 404 page as a missing one).
- Templates extend ``base.html`` and fill ``{% block content %}``; text goes through
  ``{% trans %}``/``_()`` and the catalogue ``locale/pt_BR/LC_MESSAGES/messages.po``
  (``tests/console/test_i18n.py`` fails on an untranslated string); values go through the locale
  filters ``datetime``, ``number``, ``percent``, ``money`` (:mod:`fluxo.console.i18n`).
- Live parts: a handler returns :func:`fluxo.console.sse.stream` with a function that renders
  fragments; an element with ``data-live="<url>"`` is updated by ``static/console.js``.
- The Content-Security-Policy allows no inline script or ``style=`` attribute: put CSS in
  ``static/console.css`` and behaviour in ``static/console.js`` (the browser tests fail on the
  violation).
"""

from __future__ import annotations

from aiohttp import web

from fluxo.console.app import PREFIX, create_console

__all__ = ["PREFIX", "create_console", "mount"]


def mount(app: web.Application) -> str:
    """Mount the console on the API application; answers the path it is served at."""
    app.add_subapp(PREFIX, create_console())
    return PREFIX + "/"
