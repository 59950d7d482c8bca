"""An Argo ``Workflow`` (as the server returns it) read as a Fluxo :class:`RunStatus`.

Workflow phase: ``""`` -> queued; ``Pending``/``Running`` -> running; ``Succeeded`` -> succeeded;
``Failed``/``Error`` -> failed, or cancelled when ``spec.shutdown`` is set (stop/terminate).

Nodes: each execution node (``Pod``, ``Container``, ``HTTP``, ``Plugin``, ``Suspend``,
``Skipped``, and ``Retry`` standing for its attempts) is one :class:`StepState`, keyed by the
call's ``key`` input parameter (``reserve[2]`` in a fan-out) or the node's display name; the step
id is the ``step-id`` input parameter or the display name. DAG, task-group and exit-handler nodes
are structure, not steps. Node phases: ``Pending`` -> pending, ``Running`` -> running (a
``Suspend`` node: waiting), ``Succeeded`` -> succeeded, ``Failed``/``Error`` -> failed (cancelled
when the workflow was shut down), ``Skipped``/``Omitted`` -> skipped.

A failed job's error is the step engine's: the step whose call failed it, its key and the cause
(the ``error`` Fluxo's gateway answered with, kept in the node's ``outputs.result``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fluxo_core.engine import JobPhase, RunStatus, StepPhase, StepState
from fluxo_core.ir import key_from_id

__all__ = ["FINAL", "RESULT_PARAMETER", "run_status"]

RESULT_PARAMETER = "fluxo-result"
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
MAX_MESSAGE = 500

_STEP_TYPES = frozenset({"Pod", "Container", "HTTP", "Plugin", "Suspend", "Skipped", "Retry"})
_NODE_PHASES: dict[str, StepPhase] = {
    "Pending": "pending",
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Error": "failed",
    "Skipped": "skipped",
    "Omitted": "skipped",
}


def job_phase(workflow: dict[str, Any]) -> JobPhase:
    phase = str(_get(workflow, "status", "phase") or "")
    shutdown = bool(_get(workflow, "spec", "shutdown"))
    if phase in ("Pending", "Running"):
        # Argo keeps the workflow Running until its exit handler has finished, and the exit
        # handler is what tells Fluxo the job ended: the entrypoint's node (named like the
        # workflow) is already final then, with the workflow's outputs set.
        name = _get(workflow, "metadata", "name")
        for node in (_get(workflow, "status", "nodes") or {}).values():
            if node.get("name") == name and node.get("phase") in ("Succeeded", "Failed", "Error"):
                phase = str(node["phase"])
                break
    if phase == "Succeeded":
        return "succeeded"
    if phase in ("Failed", "Error"):
        return "cancelled" if shutdown else "failed"
    if phase in ("Pending", "Running"):
        return "running"
    return "queued"


def run_status(workflow: dict[str, Any], job_id: str) -> RunStatus:
    """The Fluxo view of one Argo workflow."""
    phase = job_phase(workflow)
    status = workflow.get("status") or {}
    nodes: dict[str, Any] = status.get("nodes") or {}
    retried = {
        child
        for node in nodes.values()
        if node.get("type") == "Retry"
        for child in node.get("children") or ()
    }
    steps = [
        _step(node, phase)
        for node_id, node in sorted(nodes.items(), key=_node_order)
        if node.get("type") in _STEP_TYPES
        and node_id not in retried
        and not str(node.get("name", "")).endswith(".onExit")
    ]
    error = None
    if phase == "failed":
        error = _failure(nodes, retried) or {
            "message": _short(status.get("message") or "workflow failed")
        }
    elif phase == "cancelled":
        error = {"message": _short(status.get("message") or "workflow cancelled")}
    return RunStatus(job_id=job_id, phase=phase, steps=steps, result=_result(status), error=error)


def _failure(nodes: dict[str, Any], retried: set[str]) -> dict[str, Any] | None:
    """The step whose failure failed the workflow and the cause, as the step engine says it:
    ``{step, key, code, message, ...}``.

    That is a failed call node (the last attempt of a retried one) whose DAG did not succeed: a
    guarded call (``on_error``) fails inside a ``try-`` DAG that succeeds anyway. The cause is
    the ``error`` of the answer the gateway gave (the call record, or its refusal: Argo's HTTP
    agent keeps the response body in ``outputs.result`` whatever the status), else the node's
    message.
    """
    for node_id, node in sorted(nodes.items(), key=_node_order):
        params = _params(node)
        if (
            node.get("type") not in _STEP_TYPES
            or node_id in retried
            or node.get("phase") not in ("Failed", "Error")
            or "step-id" not in params
            or (nodes.get(str(node.get("boundaryID"))) or {}).get("phase") == "Succeeded"
        ):
            continue
        answer = _json(_get(node, "outputs", "result"))
        cause = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(cause, dict):
            cause = {
                "code": "call_failed",
                "message": _short(str(node.get("message") or "the call failed on Argo")),
            }
        key = key_from_id(str(params.get("key") or params["step-id"]))
        return {"step": str(params["step-id"]), "key": key, **cause}
    return None


def _params(node: dict[str, Any]) -> dict[str, Any]:
    return {
        str(p.get("name")): p.get("value")
        for p in _get(node, "inputs", "parameters") or ()
        if isinstance(p, dict)
    }


def _step(node: dict[str, Any], job: JobPhase) -> StepState:
    params = _params(node)
    display = str(node.get("displayName") or node.get("templateName") or node.get("name"))
    phase = _NODE_PHASES.get(str(node.get("phase") or ""), "pending")
    if phase == "running" and node.get("type") == "Suspend":
        phase = "waiting"
    if job == "cancelled" and phase in ("pending", "running", "waiting", "failed"):
        phase = "cancelled"
    attempt = len(node.get("children") or ()) if node.get("type") == "Retry" else 1
    error = None
    if phase in ("failed", "cancelled") and node.get("message"):
        error = {"message": _short(str(node["message"]))}
    return StepState(
        key=key_from_id(str(params.get("key") or display)),
        step_id=str(params.get("step-id") or display),
        phase=phase,
        attempt=max(attempt, 1),
        input=_json(params.get("payload")),
        output=_json(_get(node, "outputs", "result")),
        error=error,
        started_at=_time(node.get("startedAt")),
        finished_at=_time(node.get("finishedAt")),
    )


def _result(status: dict[str, Any]) -> Any:
    for param in _get(status, "outputs", "parameters") or ():
        if isinstance(param, dict) and param.get("name") == RESULT_PARAMETER:
            return _json(param.get("value"))
    return None


def _node_order(item: tuple[str, Any]) -> tuple[str, str]:
    node_id, node = item
    return (str(node.get("startedAt") or "~"), node_id)


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
