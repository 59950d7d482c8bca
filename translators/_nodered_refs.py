"""References between the nodes of a flow generated from an imported workflow.

A native step keeps its node's configuration, and with it the node ids it names: a ``catch``,
``status`` or ``complete`` node's ``scope``, a ``link`` node's ``links``. A generated flow gives
every step new ids, so those names are carried over to the new ids of the native steps that came
from the named nodes. A name of any other node (one the import mapped to another kind, dropped,
or left on another tab) stays as it is: the generated flow has no node standing for it, and the
pre-deploy check (:func:`~translators.nodered.check_flow`) refuses the flow saying so, rather
than a deploy that silently catches, or links to, something else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fluxo_core.ir import NativeStep, Step

__all__ = ["carry_references"]

Ids = Callable[[str], str]

_REFERENCE_KEYS = ("scope", "links")


def carry_references(
    steps: Iterable[Step], rendered: Mapping[str, list[dict[str, Any]]], main_ids: Ids
) -> None:
    """Rewrite, in place, the node references of the native steps' rendered nodes.

    Args:
        steps: the workflow's steps.
        rendered: step id -> the nodes rendered for it.
        main_ids: step id -> the id its node (a native step's kept node) is rendered under.
    """
    natives = [s for s in steps if isinstance(s, NativeStep) and s.engine == "nodered"]
    renamed = {
        str(step.config["id"]): main_ids(step.id)
        for step in natives
        if isinstance(step.config.get("id"), str)
    }
    for step in natives:
        main = main_ids(step.id)
        for node in rendered.get(step.id, []):
            if node.get("id") != main:
                continue
            for key in _REFERENCE_KEYS:
                refs = node.get(key)
                if isinstance(refs, list):
                    node[key] = [renamed.get(r, r) if isinstance(r, str) else r for r in refs]
