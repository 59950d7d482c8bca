"""The ``transform`` built-in service: the IR's transform language (:mod:`fluxo_core.ir.transform`)
run as a service call.

Its payload is ``{"input": <object or array>, "ops": [...]}``, or the data itself with the ops
beside it, ``{...fields, "ops": [...]}``: what a service step sends with ``with: {ops: [...]}``
(the step's input, each item carrying the ops).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fluxo_core.errors import ValidationError
from fluxo_core.ir import Payload
from fluxo_core.ir.transform import DEFAULT_TIMEOUT_MS, Transform
from service_runtime.sdk import Service

__all__ = ["TRANSFORM_SCHEMA", "transform_service"]


def transform_service(*, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Service:
    """The ``transform`` built-in service.

    A call is ``{"input": <object or array>, "ops": [...]}`` (exactly these two fields), and
    returns the transformed ``input``; or any other object holding ``ops``, whose other fields
    are the data: ``{"id": 7, "ops": [...]}`` transforms ``{"id": 7}``. The second form is what a
    service step sends with ``with: {ops: [...]}``. An array payload transforms each element and
    returns all results in one array (an array ``input`` contributes each of its items).
    """

    def transform(payload: Payload) -> Payload:
        single = not isinstance(payload, list)
        calls: list[Any] = payload if isinstance(payload, list) else [payload]
        results: list[dict[str, Any]] = []
        for n, call in enumerate(calls):
            prefix = "payload" if single else f"payload[{n}]"
            _check_call(call, prefix)
            if set(call) == {"input", "ops"}:
                data, data_where = call["input"], f"{prefix}.input"
            else:  # the data with its ops beside it
                data = {k: v for k, v in call.items() if k != "ops"}
                data_where = prefix
            out = Transform.parse(call["ops"], where=f"{prefix}.ops", timeout_ms=timeout_ms).apply(
                data, input_where=data_where
            )
            if single:
                return out
            results.extend(out if isinstance(out, list) else [out])
        return results

    return Service(
        name="transform",
        version="1",
        handler=transform,
        description="Set, move and delete fields of the input, or reshape it with JSONata.",
        input_schema=TRANSFORM_SCHEMA,
        # Not inline: an expression may run for up to its time budget, too long for the event loop.
        inline=False,
    )


TRANSFORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ops"],
    "properties": {
        "ops": {"type": "array", "items": {"type": "object", "required": ["op"]}},
    },
    # {input, ops} exactly: input is the data, so it must be an object or an array of objects.
    "if": {"required": ["input"], "propertyNames": {"enum": ["input", "ops"]}},
    "then": {
        "properties": {
            "input": {
                "anyOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
            }
        }
    },
}
"""One call: ``{input, ops}``, or the data with ``ops`` beside it."""


def _check_call(call: Any, prefix: str) -> None:
    if not isinstance(call, Mapping):
        raise ValidationError(
            "invalid transform call",
            problems=[(prefix, "must be an object: {input, ops}, or the data with ops beside it")],
        )
    if "ops" not in call:
        raise ValidationError(
            "invalid transform call",
            problems=[
                (
                    f"{prefix}.ops",
                    "required: send {input, ops}, or set ops on a service step with "
                    "with: {ops: [...]}",
                )
            ],
        )
