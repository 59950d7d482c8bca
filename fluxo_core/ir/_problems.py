"""Turn pydantic's validation errors into Fluxo's located problems."""

from __future__ import annotations

from collections.abc import Sequence

import pydantic

from fluxo_core.errors import Problem


def format_location(loc: Sequence[int | str], prefix: str = "") -> str:
    """``("payload", 2, "sku")`` -> ``payload[2].sku`` (prefixed when given)."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def problems_from_pydantic(exc: pydantic.ValidationError, prefix: str = "") -> list[Problem]:
    """Every error of ``exc`` as ``(location, message)``, with the offending input type named."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        # pydantic reports union members as extra location parts ('dict[str,any]', 'list[...]');
        # they mean nothing to a user, so drop them.
        loc = [
            p
            for p in err["loc"]
            if not (isinstance(p, str) and ("[" in p or (p.islower() and p in _UNION_TAGS)))
        ]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (remove it or check its spelling)"
        problems.append((format_location(loc, prefix), msg))
    return problems


_UNION_TAGS = {"dict", "list", "str", "int", "float", "bool", "none"}
