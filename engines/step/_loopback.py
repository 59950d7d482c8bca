"""A flow that talks to itself over a socket, on the step engine: network out -> new job.

A ``tcp out``/``udp out``/``websocket out`` step whose peer is an in node of the same workflow
(:mod:`nodered_semantics.network` says which and what that in node emits) runs here, in the
engine's transaction, without a call: each message the in node would emit becomes a **new job**
of the same workflow version, started at the in node's step (its ``fluxo-entry`` header, the
message as a whole Node-RED message), as Node-RED runs the in node's nodes apart from the
sender's. The in node's step passes its message on, as the node would send it.

**Once.** The new jobs are written by the transaction that records the sending step's
execution (:func:`start_loopback_jobs`, from the engine's write of a batch): committed together
or not at all. Each job's id and idempotency key derive from the sending job and the step
execution's key (stable across re-deliveries), so a transition applied twice (a re-delivered
message, a retried batch) finds the job of the first and starts no other. Each new job starts
with a ``start`` message on the engine's queue (message id ``start:{job}``), like any queued
job (or waits queued while its workflow is paused); it names the sender as its parent
(``parent_job_id``, ``parent_step_id``), so cancelling the sender cancels it too.

Not applied to these jobs (the sender's job was admitted): the control plane's admission
interceptors and job limits, which the engine does not hold. Their nodes' calls are admitted
and metered as any call, and a chain of such jobs ends at :data:`MAX_GENERATIONS` (a flow whose
in node leads back to its out node would otherwise start jobs for ever).

Reusable for any node that starts a job of its own workflow at an entry (keyed by the sending
step, in the sender's transaction): :func:`loopback_job_row` and :func:`start_loopback_jobs`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from engines.step._nodered import CONTENT_TYPE_HEADER, NODERED_MSG_CONTENT_TYPE
from fluxo_core.ir import ENTRY_HEADER, NativeStep, Packet, Workflow
from fluxo_core.ir.packet import keyed_id
from fluxo_core.storage import Transaction
from fluxo_core.storage.blocks import BlockStore
from fluxo_core.storage.jobs import JobStore
from nodered_semantics.network import NETWORK_IN, NETWORK_OUT, received, receivers
from service_runtime.transports import OutgoingMessage

__all__ = [
    "GENERATION_HEADER",
    "MAX_GENERATIONS",
    "Spawn",
    "generation",
    "is_network_in",
    "is_network_out",
    "loopback_deliveries",
    "loopback_job_row",
    "start_loopback_jobs",
]

IDEMPOTENCY_PREFIX = "loopback:"
# How many jobs deep a chain of loopback jobs may go (a job started by a job started by ...):
# an in node wired back to its own out node would otherwise start jobs for ever, each one
# admitted by no interceptor. The generation rides in the started job's input headers.
GENERATION_HEADER = "fluxo-loopback-generation"
MAX_GENERATIONS = 100


def generation(source: Packet) -> int:
    """How many loopback jobs led to the job whose input packet is ``source`` (0: none)."""
    try:
        return max(0, int(source.headers.get(GENERATION_HEADER, "0")))
    except ValueError:
        return 0


def is_network_in(step: Any) -> TypeGuard[NativeStep]:
    return (
        isinstance(step, NativeStep)
        and step.engine == "nodered"
        and step.config.get("type") in NETWORK_IN
    )


def is_network_out(step: Any) -> TypeGuard[NativeStep]:
    return (
        isinstance(step, NativeStep)
        and step.engine == "nodered"
        and step.config.get("type") in NETWORK_OUT
    )


@dataclass(frozen=True)
class Spawn:
    """A job to start: ``entry`` the in node's step, ``msg`` what it emits, ``key`` the key of
    the sending step's execution and ``n`` the message's place among those it made."""

    step_id: str
    key: str
    n: int
    entry: str
    msg: dict[str, Any]


def loopback_deliveries(
    workflow: Workflow, step: NativeStep, msg: dict[str, Any], job_id: str, key: str
) -> list[Spawn]:
    """What out step ``step`` sending ``msg`` starts: one job per message an in node of
    ``workflow`` emits (in the order of the workflow's steps)."""
    ins = [s for s in workflow.spec.steps if is_network_in(s)]
    reached = {id(node) for node in receivers(step.config, [s.config for s in ins])}
    spawns: list[Spawn] = []
    for target in ins:
        if id(target.config) not in reached:
            continue
        seed = f"{job_id}/{key}/{target.id}"
        for message in received(step.config, target.config, msg, seed):
            spawns.append(Spawn(step.id, key, len(spawns), target.id, message))
    return spawns


def _idempotency_key(job_id: str, spawn: Spawn) -> str:
    digest = hashlib.blake2b(f"{job_id}/{spawn.key}/{spawn.n}".encode(), digest_size=20).hexdigest()
    return IDEMPOTENCY_PREFIX + digest


def loopback_job_row(job: dict[str, Any], source: Packet, ref: str, spawn: Spawn) -> dict[str, Any]:
    """The queued row of the job ``spawn`` starts, sent by job ``job`` (its row) whose input
    packet is ``source``, of workflow version ``ref`` (``name@version``)."""
    job_id = keyed_id(job["id"], f"{job['id']}/{spawn.key}/loopback/{spawn.n}")
    packet = Packet(
        id=job_id,
        job_id=job_id,
        workflow=ref,
        trace_id=source.trace_id,
        actor=source.actor,
        payload=spawn.msg,
        headers={
            ENTRY_HEADER: spawn.entry,
            CONTENT_TYPE_HEADER: NODERED_MSG_CONTENT_TYPE,
            GENERATION_HEADER: str(generation(source) + 1),
        },
    )
    return {
        "id": job_id,
        "account_id": job["account_id"],
        "user_id": job["user_id"],
        "workflow": job["workflow"],
        "version": job["version"],
        "engine": job["engine"],
        "status": "queued",
        "idempotency_key": _idempotency_key(job["id"], spawn),
        "input": packet.model_dump_json().encode(),
        "result": None,
        "error": None,
        "active": 0,
        "created_at": time.time(),
        "started_at": None,
        "finished_at": None,
        "run_id": None,
        "parent_job_id": job["id"],
        "parent_step_id": spawn.step_id,
        "parent_call_id": None,
        "via_service": None,
    }


def start_loopback_jobs(
    tx: Transaction,
    store: JobStore,
    queue: str,
    spawned: Iterable[tuple[dict[str, Any], Packet, str, Spawn]],
    pauses: BlockStore | None = None,
) -> list[OutgoingMessage]:
    """Insert the jobs ``spawned`` names (``(sender's row, its input, ref, spawn)``) that do not
    exist yet, in ``tx``; the start messages to enqueue with them on ``queue``. The jobs of a
    workflow paused meanwhile (``pauses`` says) wait queued, as any new job of it: resuming the
    workflow starts them."""
    rows = [loopback_job_row(job, source, ref, spawn) for job, source, ref, spawn in spawned]
    if not rows:
        return []
    fresh: list[dict[str, Any]] = []
    by_workflow: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_workflow.setdefault((row["account_id"], row["workflow"]), []).append(row)
    for (account, workflow), group in by_workflow.items():
        earlier = store.jobs_by_keys(tx, account, workflow, (r["idempotency_key"] for r in group))
        seen: set[str] = set()
        for row in group:
            key = row["idempotency_key"]
            if key in earlier or key in seen:
                continue
            seen.add(key)
            fresh.append(row)
    if fresh:
        store.insert_many(tx, fresh)
    paused = {
        (account, workflow)
        for account, workflow in {(r["account_id"], r["workflow"]) for r in fresh}
        if pauses is not None and pauses.pause_on(tx.conn, account, workflow) is not None
    }
    return [
        OutgoingMessage(
            queue=queue,
            message_id=f"start:{row['id']}",
            body=orjson.dumps({"kind": "start", "job_id": row["id"]}),
        )
        for row in fresh
        if (row["account_id"], row["workflow"]) not in paused
    ]
