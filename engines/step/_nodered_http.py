"""An ``http request`` node of an imported flow, run as a call of the ``http`` built-in service.

The step engine builds the service's request from the node and the message, and the node's
message from the service's response, as :mod:`nodered_semantics.http_request` says Node-RED
does; so the call goes through the host policy, admission and metering like any ``http`` call.

A call that failed in the network (the service's error names it, ``context.network``) is what
Node-RED's node reports and sends on (:func:`http_request_failed`), at once: the node makes one
attempt (the engine sends its call with one attempt), and the step's own ``retry`` does not apply
to such a failure. A failure Node-RED's words are not known for fails the step as before.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from fluxo_core.errors import ValidationError
from fluxo_core.ir import NativeStep
from nodered_semantics.http_in import HTTP_ENDPOINT
from nodered_semantics.http_request import (
    HTTP_REQUEST_TYPE,
    HttpRequestError,
    http_failure,
    http_response_msg,
    http_service_request,
)
from nodered_semantics.support import REPORTED_PORT

__all__ = [
    "http_request_body",
    "http_request_failed",
    "http_request_outputs",
    "is_http_request",
]


def is_http_request(step: Any) -> TypeGuard[NativeStep]:
    """An http request node run as a call of the ``http`` service (not one calling its
    flow's own endpoint, which the ``nodered-node`` service answers in the job)."""
    return (
        isinstance(step, NativeStep)
        and step.config.get("type") == HTTP_REQUEST_TYPE
        and HTTP_ENDPOINT not in step.config
    )


def http_request_body(step: NativeStep, msg: dict[str, Any]) -> dict[str, Any]:
    """The ``http`` service's request for ``msg``; a message that makes none fails the step."""
    try:
        return http_service_request(step.config, msg)
    except HttpRequestError as exc:
        raise _failure(step, exc) from exc


def http_request_outputs(
    step: NativeStep, msg: dict[str, Any], url: str, results: list[Any]
) -> list[dict[str, Any]]:
    """The node's output (``{port, msg}``, as the ``nodered-node`` service gives) for the
    ``http`` service's result."""
    try:
        return [
            {"port": 0, "msg": http_response_msg(step.config, msg, {"url": url}, result)}
            for result in results
        ]
    except HttpRequestError as exc:
        raise _failure(step, exc) from exc


def http_request_failed(
    step: Any, msg: dict[str, Any], url: str, error: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """The node's outputs (a report on ``REPORTED_PORT``, and the message on port 0 unless the
    node has ``senderr``) for its ``http`` call that failed with ``error``; None when ``step``
    is no http request node or Node-RED's words for the failure are not known (the step fails).
    ``msg`` is the message the node got, payload included."""
    if not is_http_request(step):
        return None
    network = (error.get("context") or {}).get("network")
    failure = http_failure(step.config, msg, url, network)
    if failure is None:
        return None
    outputs = [{"port": REPORTED_PORT, "msg": {"message": failure.report, "msg": failure.msg}}]
    if failure.sent is not None:
        outputs.append({"port": 0, "msg": failure.sent})
    return outputs


def _failure(step: NativeStep, exc: Exception) -> ValidationError:
    node = step.config.get("id", "?")
    return ValidationError(f"http request node {node} (step {step.id!r}): {exc}")
