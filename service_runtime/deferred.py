"""Deferred calls: a call whose handler returned ``DEFERRED`` is completed later, by whoever
finishes its work, exactly as the worker would have completed it.

The worker settled the call's delivery without a result (see :mod:`service_runtime.worker`).
:meth:`DeferredCalls.complete` writes, in the caller's transaction (the one that finishes the
work, e.g. the end of a workflow service's child job): the call's result or failure, its output
messages to the caller's ``reply_to`` (or the service's output queue) through the transport, so
through the outbox with a broker, and what the interceptors' ``on_result`` writes (Metering's
usage record, which bills the caller the service's price). A waiting caller is woken as by the
worker. The outcome is written only over a call that has none yet, so two transactions that
both complete one call (the child's end and a sweep, or two processes) apply it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fluxo_core.errors import FluxoError, PacketValidationError, ServiceError
from fluxo_core.ir import Packet, new_span_id, parse_packet
from fluxo_core.storage import CallOutcome, CallRow, CallStore, Database, Transaction
from service_runtime.gateway import call_channel
from service_runtime.interceptors import CallResult, InterceptorChain, ResultRequest
from service_runtime.sdk import Outputs, Service
from service_runtime.transports import OutgoingMessage, Transport
from service_runtime.worker import failure_message, normalize_outputs, output_messages

__all__ = ["Completion", "DeferredCalls"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Completion:
    """How deferred ``call`` of ``service`` ended: its output payloads, or ``error``."""

    call: CallRow
    service: Service
    outputs: Sequence[Any] = ()
    error: FluxoError | None = None
    started_at: float = field(default_factory=time.time)


class DeferredCalls:
    """Completes deferred calls inside the transaction that finishes their work."""

    def __init__(self, db: Database, transport: Transport, interceptors: InterceptorChain) -> None:
        self.transport = transport
        self.interceptors = interceptors
        self.calls = CallStore(db)

    def complete(self, tx: Transaction, completions: Sequence[Completion]) -> list[str]:
        """Write each call's outcome, output messages and usage in ``tx``; returns the ids of
        the calls completed here (a call completed before is left as it is)."""
        now = time.time()
        readable: list[tuple[Completion, Packet]] = []
        for done in completions:
            # Read before anything is written: what cannot be completed is left out whole
            # (the call stays open) instead of failing the transaction that ends the work.
            try:
                readable.append(
                    (done, parse_packet(done.call.request, where=f"call {done.call.id}"))
                )
            except PacketValidationError as exc:
                log.error("deferred call %s cannot be completed: %s", done.call.id, exc.message)
        results: list[CallResult] = []
        messages: list[OutgoingMessage] = []
        for done, packet in readable:
            result = self._complete_one(tx, done, packet, now, messages)
            if result is not None:
                results.append(result)
        # Completed here or before: no longer open either way.
        self.calls.undefer(tx, [done.call.id for done, _ in readable])
        if results and self.interceptors.observes_results:
            self.interceptors.on_result(ResultRequest(results, now), tx)
        self.transport.enqueue(tx, messages)
        completed = [r.packet.id for r in results]
        if completed:
            tx.notify(*(call_channel(call_id) for call_id in completed))
        return completed

    def _complete_one(
        self,
        tx: Transaction,
        done: Completion,
        packet: Packet,
        now: float,
        messages: list[OutgoingMessage],
    ) -> CallResult | None:
        svc, call = done.service, done.call
        span_id = new_span_id()
        reply_to = call.reply_to or svc.output_queue
        error, outputs = done.error, list(done.outputs)
        attempt = max(call.attempts, 1)
        if error is None:
            try:
                outputs = normalize_outputs(svc, Outputs(outputs))
                results = packet.derive_json(outputs or [[]], span_id=span_id)
            except ServiceError as exc:
                error = exc
            except TypeError as exc:
                error = ServiceError(
                    f"service {svc.ref} returned an output that is not JSON: {exc}",
                    retryable=False,
                    service=svc.ref,
                )
        if error is None:
            body = b"[" + b",".join(b for _, b in results[: len(outputs)]) + b"]"
            outcome = CallOutcome(call.id, "succeeded", body, None, attempt, now)
            if not self.calls.complete_open(tx, outcome):
                return None
            messages.extend(output_messages(call.id, reply_to, results, len(outputs)))
        else:
            detail = error.to_dict()
            outcome = CallOutcome(
                call.id, "failed", None, orjson.dumps(detail).decode(), attempt, now
            )
            if not self.calls.complete_open(tx, outcome):
                return None
            messages.append(failure_message(packet, reply_to, detail, span_id))
            outputs = []
        return CallResult(
            packet,
            svc,
            "succeeded" if error is None else "failed",
            attempt,
            outputs,
            error,
            span_id,
            done.started_at,
            max(0.0, now - done.started_at),
        )
