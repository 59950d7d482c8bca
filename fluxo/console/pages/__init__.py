"""The console's page groups: every module here defines ``routes() -> list[Route]``.

:func:`discover` imports them all, so a new group is a new module and nothing else to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from fluxo.console.web import Route

__all__ = ["discover"]


def discover() -> list[Route]:
    """The routes of every page group, in module-name order; a name used twice is an error."""
    found: list[Route] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        routes = getattr(module, "routes", None)
        if routes is None:
            raise TypeError(f"{module.__name__} is a console page group without routes()")
        found.extend(routes())
    names = [r.name for r in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"console route names used twice: {', '.join(twice)}")
    return found
