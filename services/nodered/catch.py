"""The ``catch`` node: a step's failure as the message Node-RED hands its catch nodes.

The step engine enters a catch step through ``on_error: goto`` with the failure
``{error, input, step, node}`` as ``msg.payload`` (the message's other properties travel beside
it, as they were at the failed node; a function body's failure carries the message as the
body left it, which Node-RED hands on). Node-RED's catch sends a copy of the message the node
failed on with ``msg.error = {message, source: {id, type, name, count}}`` (an earlier
``msg.error`` moved to ``msg._error``), see ``Flow.handleError`` in Node-RED's runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.nodered.common import Sent, node_error

__all__ = ["run_catch"]


def run_catch(node: Mapping[str, Any], msg: dict[str, Any]) -> Sent:
    failure = msg.get("payload")
    if not isinstance(failure, dict) or "input" not in failure or "error" not in failure:
        raise node_error(
            node,
            "a catch node receives a failed step's {error, input} (from on_error: goto), "
            "not a message; wire failures to it with on_error",
        )
    error = _object(failure["error"])
    details = _object(error.get("context"))
    source = _object(failure.get("node"))
    failed_msg = details.get("nodered_msg")
    if isinstance(failed_msg, dict):  # a function body's message as it left it
        out = dict(failed_msg)
    else:
        out = {k: v for k, v in msg.items() if k != "payload"}
        out["payload"] = failure["input"]
    if "error" in out:
        out["_error"] = out["error"]
    out["error"] = {
        "message": str(details.get("nodered_message") or error.get("message") or "error"),
        "source": {
            "id": source.get("id", failure.get("step")),
            "type": source.get("type"),
            **({"name": source["name"]} if "name" in source else {}),
            "count": 1,
        },
    }
    return [(0, out)]


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
