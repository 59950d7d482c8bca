"""The worker: claims input messages, runs handlers, commits every outcome in one transaction.

For a batch of claimed messages the worker runs the interceptors' ``admit`` and the handlers, then
writes in ONE transaction, per message: its inbox row (the exactly-once guard), the call's result,
what the interceptors' ``on_result`` writes (Metering's usage record), the output messages (through
the transport, i.e. the outbox) and the settlement of the input (ack, retry with backoff, or
dead-letter). A message whose inbox row already exists was applied before (delivered
twice, or re-delivered after a crash between commit and ack): it is acknowledged with no new effect.

A crash anywhere before the commit leaves the message leased; the lease expires and another worker
runs it again. A crash after the commit leaves nothing to redo. Leases are short (a few seconds)
and renewed by a heartbeat while the handlers run, so a crashed worker's messages come back within
one lease, whatever the handlers' timeouts.

Timeouts measure the handler's own run: each delivery gets its service's ``timeout_s``, shortened
by the caller's ``fluxo-timeout-s`` packet header (the step engine sends its step's ``timeout_s``).
The time a call waited in its queue, or for a crashed worker's lease, does not count.

The terms a call runs under are those in force (:mod:`service_runtime.terms`): the price,
timeout and attempts the platform applied to the service (a Service resource) over those its
code declares. Each batch starts from the applied terms as last read (at most a second old), so
a change holds from the next batch on, for calls already queued too.

Retries of a failing call follow its service's ``RetryPolicy``, capped by the caller's
``fluxo-max-attempts`` packet header: a workflow step that declares its own ``retry`` sends ``1``,
because its engine retries the step with new calls (otherwise both would retry: 3 step attempts
of a service allowing 5 ran its handler 15 times). A crashed worker's call is delivered again
whatever the cap: that is not a retry of a failure.

A handler that returns :data:`~service_runtime.sdk.DEFERRED` has started work that answers
later: its delivery is settled (inbox row, ack) with no result, no output and no usage record;
whoever finishes the work completes the call through :class:`~service_runtime.deferred.DeferredCalls`
(result, outputs and usage in its own transaction), so no worker waits for it.

Inline handlers (pure computation) need no lease when the queues live in the database (the SQL
transport): their messages are taken, run and settled inside that one transaction, so a crash
before its commit leaves them as they were, ready for the next worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic_core

from fluxo_core.errors import (
    ConfigError,
    FluxoError,
    PacketValidationError,
    ServiceError,
    ServiceTimeoutError,
)
from fluxo_core.ir import MAX_ATTEMPTS_HEADER, Packet, new_span_id, parse_packet
from fluxo_core.logs import bind_ids, reset_ids
from fluxo_core.storage import CallOutcome, CallStore, Database, InboxKey, InboxStore, Transaction
from service_runtime.gateway import REPLY_TO_HEADER, call_channel
from service_runtime.interceptors import (
    AdmitRequest,
    CallRequest,
    CallResult,
    Interceptor,
    InterceptorChain,
    ResultRequest,
    ResultStatus,
    default_interceptors,
)
from service_runtime.sdk import Deferred, Outputs, Service, _schema_problems
from service_runtime.terms import ServiceTerms
from service_runtime.transports import Delivery, OutgoingMessage, TakesInTransaction, Transport

__all__ = [
    "Worker",
    "WorkerStats",
    "failure_message",
    "normalize_outputs",
    "output_messages",
]

log = logging.getLogger(__name__)

STATUS_HEADER = "fluxo-status"
# Packet header: the caller's timeout for each run of the handler, in seconds.
TIMEOUT_HEADER = "fluxo-timeout-s"
CALL_ID_HEADER = "fluxo-call-id"
OUTPUT_INDEX_HEADER = "fluxo-output-index"
OUTPUT_COUNT_HEADER = "fluxo-output-count"


@dataclass
class WorkerStats:
    succeeded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    deferred: int = 0  # settled without a result: completed later (see DeferredCalls)


@dataclass
class _Outcome:
    delivery: Delivery
    service: Service
    packet: Packet | None = None
    outputs: list[Any] | None = None  # payloads, on success
    results: list[tuple[str, bytes]] | None = None  # (packet id, JSON) of each output packet
    error: FluxoError | None = None
    duplicate: bool = False
    deferred: bool = False  # the handler returned DEFERRED: settled now, answered later
    retry_delay: float = 0.0
    span_id: str = field(default_factory=new_span_id)
    max_attempts: int | None = None  # the caller's cap (fluxo-max-attempts), once read
    started_at: float = 0.0  # when the handler started (or the call was refused), epoch seconds
    duration_s: float = 0.0  # how long the handler ran


class Worker:
    """Runs the handlers of ``services`` from their input queues.

    Args:
        db: the database of calls, inbox and usage ledger.
        transport: the queue transport.
        services: the services this worker runs (each consumes its own input queue).
        batch_size: messages claimed and committed together; the main throughput lever
            (the handler caps below keep slow services' claims smaller).
        lease_s: how long a claim stays hidden from other workers without a renewal. A
            heartbeat renews it every third of that while the handlers run, so it only bounds
            how soon another worker gets the messages of a worker that died.
        interceptors: the interceptor chain (or its interceptors): its ``admit`` runs again
            before the handlers, its ``on_result`` in the transaction that applies the
            outcomes. Defaults to :func:`~service_runtime.interceptors.default_interceptors`.
        handler_threads: threads for the sync handlers that are not ``inline``. A claim of
            such services takes at most this many messages, so every handler of a claim starts
            at once and ends within its timeout. (Claiming more than can run would queue
            handlers behind each other: the late ones would time out before running.)
        async_calls: at most this many async handlers of one claim run at once (they all
            start together: outbound requests to one host, say). Only ``inline`` handlers,
            which take microseconds, fill a whole ``batch_size``.
    """

    def __init__(
        self,
        db: Database,
        transport: Transport,
        services: Sequence[Service],
        *,
        batch_size: int = 500,
        lease_s: float = 5.0,
        rng: random.Random | None = None,
        interceptors: InterceptorChain | Sequence[Interceptor] | None = None,
        handler_threads: int = 16,
        async_calls: int = 100,
        terms: ServiceTerms | None = None,
    ) -> None:
        if not services:
            raise ConfigError("a worker needs at least one service to run")
        if lease_s <= 0:
            raise ConfigError(f"a worker's lease_s must be above zero seconds, not {lease_s}")
        self.db = db
        self.transport = transport
        if interceptors is None:
            interceptors = default_interceptors()
        self.interceptors = (
            interceptors
            if isinstance(interceptors, InterceptorChain)
            else InterceptorChain(interceptors)
        )
        self._declared = {s.input_queue: s for s in services}
        # The services as they run under the applied terms, and the attempts applied (which
        # replace those each message was enqueued with): rebuilt when the terms change.
        self.terms = terms if terms is not None else ServiceTerms(db)
        self._by_queue = dict(self._declared)
        self._attempts_applied: dict[str, int] = {}
        self._terms_generation = 0
        self.queues = sorted(self._by_queue)
        self.batch_size = batch_size
        self.lease_s = lease_s
        # Services are claimed in groups by how their handlers run, each kind with its own cap.
        # (Leases no longer depend on timeouts: the heartbeat keeps a claim while it runs.)
        self._handler_threads = handler_threads
        self._threads = self._new_threads()
        caps = {"inline": None, "thread": handler_threads, "async": async_calls}
        groups: dict[str, list[str]] = {}
        for s in services:
            groups.setdefault(_runs_as(s), []).append(s.input_queue)
        self._claim_groups = [
            (sorted(queues), caps[kind], kind) for kind, queues in sorted(groups.items())
        ]
        # Inline handlers only compute: with the queues in this database they run inside the
        # transaction that settles them (see _take_and_run), if admission can decide in it.
        self._takes = transport if isinstance(transport, TakesInTransaction) else None
        self._take_inline = self._takes is not None and self.interceptors.admits_in_transaction
        self.stats = WorkerStats()
        self._more = False  # the last batch's claims came back full
        self._stop = asyncio.Event()
        self._channels = [f"q:{q}" for q in self.queues]
        self._rng = rng or random.Random()
        self._calls = CallStore(db)
        self._inbox = InboxStore(db)

    async def run(self, stop: asyncio.Event | None = None, *, idle_timeout_s: float = 1.0) -> None:
        """Process batches until ``stop`` is set (or :meth:`request_stop`); sleeps when idle."""
        self._stop = stop or asyncio.Event()
        # With queues in the database a commit wakes us (in-process, or LISTEN/NOTIFY); a broker
        # knows when its queues have messages, so ask the transport itself.
        in_db = self.transport.capabilities.transactional_enqueue
        try:
            await self._loop(in_db, idle_timeout_s)
        finally:
            # Threads still in a handler finish on their own; nothing waits for them here. A
            # later run gets fresh ones (threads start only when a handler needs one).
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = self._new_threads()

    async def _loop(self, in_db: bool, idle_timeout_s: float) -> None:
        with await self.db.subscribe(self._channels) as sub:
            while not self._stop.is_set():
                sub.clear()
                try:
                    await self.run_once()
                except FluxoError as exc:
                    if not exc.retryable:
                        raise
                    log.warning("worker batch failed, retrying: %s", exc.message)
                    await asyncio.sleep(0.5)
                    continue
                if not self._more and not self._stop.is_set():
                    # Drained (a full claim means more is likely waiting). Anything committed since
                    # `clear()` above has already set the subscription, so nothing is missed.
                    if in_db:
                        await sub.wait(idle_timeout_s)
                    else:
                        await self.transport.wait(self.queues, idle_timeout_s)

    def _new_threads(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            max_workers=self._handler_threads, thread_name_prefix="fluxo-handler"
        )

    def request_stop(self) -> None:
        """Stop after the current batch; wakes the worker if it is idle."""
        self._stop.set()
        self.db.notify_local(*self._channels)

    async def run_once(self) -> int:
        """Claim one batch, run it, commit its outcomes. Returns how many messages it settled."""
        await self._refresh_terms()
        deliveries: list[Delivery] = []
        taken = 0
        self._more = False
        for queues, cap, kind in self._claim_groups:
            room = self.batch_size - len(deliveries) - taken
            limit = room if cap is None else min(room, cap)
            if kind == "inline" and self._take_inline:
                got = await self._take_and_run(queues, limit)
                taken += got
            else:
                claimed = await self.transport.claim(queues, limit=limit, lease_s=self.lease_s)
                deliveries += claimed
                got = len(claimed)
            self._more = self._more or got == limit  # a full batch: more may wait
            if len(deliveries) + taken >= self.batch_size:
                break
        if not deliveries:
            return taken
        settled = asyncio.Event()
        heartbeat = asyncio.create_task(self._renew_leases(deliveries, settled))
        try:
            outcomes = [_Outcome(d, self._by_queue[d.queue]) for d in deliveries]
            _parse(outcomes)
            await self._mark_duplicates(outcomes)
            await self._run_handlers([o for o in outcomes if o.error is None and not o.duplicate])
            await self._commit(outcomes)
        finally:
            settled.set()
            await heartbeat  # at most one renewal in flight; never cancelled mid-transaction
        return taken + len(outcomes)

    async def _refresh_terms(self) -> None:
        """The services under the terms in force (a dictionary lookup while they stay)."""
        await self.terms.refresh()
        if self.terms.generation == self._terms_generation:
            return
        by_queue: dict[str, Service] = {}
        attempts: dict[str, int] = {}
        for queue, svc in self._declared.items():
            applied = self.terms.applied(svc.name, svc.version)
            by_queue[queue] = svc if applied.empty else applied.service(svc)
            if applied.max_attempts is not None:
                attempts[queue] = applied.max_attempts
        self._by_queue, self._attempts_applied = by_queue, attempts
        self._terms_generation = self.terms.generation

    async def _renew_leases(self, deliveries: list[Delivery], settled: asyncio.Event) -> None:
        """The heartbeat of one batch: renew its leases every third of a lease until it is
        settled (one statement per claim, not per message)."""
        while True:
            try:
                await asyncio.wait_for(settled.wait(), self.lease_s / 3)
                return
            except TimeoutError:
                pass
            try:
                await self.transport.extend(deliveries, lease_s=self.lease_s)
            except FluxoError as exc:
                # Not fatal: if a lease runs out, another worker runs that message again and
                # the inbox still applies its outcome once.
                log.warning(
                    "could not renew the leases of %d message(s): %s", len(deliveries), exc.message
                )

    async def _take_and_run(self, queues: list[str], limit: int) -> int:
        """Inline services whose queues are in this database: take their messages, run the
        handlers and settle everything in ONE transaction. No claim transaction, no lease on
        each message; an inline handler computes for microseconds, so the transaction holds
        its locks no longer for it. If it fails, nothing was taken: the messages stay ready."""
        takes = self._takes
        if takes is None:
            return 0

        def run(tx: Transaction) -> tuple[list[_Outcome], _Settlement]:
            deliveries = takes.take(tx, queues, limit=limit)
            outcomes = [_Outcome(d, self._by_queue[d.queue]) for d in deliveries]
            _parse(outcomes)
            runnable = [o for o in outcomes if o.packet is not None and o.error is None]
            if self.interceptors.admits and runnable:
                request = _admit_request(runnable)
                self.interceptors.admit_in_transaction(request, tx)
                _refuse(runnable, request)
            for o in runnable:
                if o.error is None:
                    self._run_inline(o)
            now = time.time()
            settlement = self._settlement(outcomes, now)
            self._settle(tx, outcomes, settlement, now)
            return outcomes, settlement

        outcomes, settlement = await self.db.transact(run, keyed=True)
        self._count(outcomes, settlement)
        return len(outcomes)

    async def _mark_duplicates(self, outcomes: list[_Outcome]) -> None:
        """Skip handlers for messages already applied (cheap pre-check; the commit re-checks).

        Not for ``inline`` handlers: they only compute, so running one again for a duplicate
        costs less than the lookup, and the commit's inbox row still applies its result once.
        """
        checked = [o for o in outcomes if not o.service.inline]
        if not checked:
            return
        seen = await self._inbox.seen(self.queues, [o.delivery.message_id for o in checked])
        for o in checked:
            key = (o.delivery.queue, o.delivery.message_id)
            if key in seen:
                o.duplicate = True
            seen.add(key)  # a second copy within this batch must not run the handler again

    async def _run_handlers(self, outcomes: list[_Outcome]) -> None:
        if not outcomes:
            return
        if self.interceptors.admits:
            # Asked again at execution, not only at the gateway: a block or a cancelled job
            # stops work already queued, on every engine alike. One request for the batch.
            request = _admit_request(outcomes)
            await self.interceptors.admit(request)
            _refuse(outcomes, request)
            outcomes = [o for o in outcomes if o.error is None]
        # Inline handlers run on the loop and never wait, so one after the other costs the
        # same time minus a task per call (~20 us each).
        others = []
        for o in outcomes:
            if o.service.inline and not o.service.is_async:
                await self._run_one(o)
            else:
                others.append(o)
        await asyncio.gather(*(self._run_one(o) for o in others))

    async def _run_one(self, o: _Outcome) -> None:
        svc, packet = o.service, o.packet
        if packet is None:  # parse failures never reach here; keeps the type narrow
            return
        timeout = svc.timeout_s
        ids = _bind_ids(o, packet)
        o.started_at = time.time()
        try:
            o.max_attempts = _caller_max_attempts(packet)
            svc.validate_input(packet)
            packet = _at_attempt(packet, o.delivery.attempt)
            timeout = min(timeout, _caller_timeout(packet) or timeout)
            if svc.is_async:
                result = await asyncio.wait_for(svc.invoke(packet), timeout)
            elif svc.inline:
                result = svc.invoke(packet)
            else:
                # In a copy of this context: the handler's thread logs with the call's ids.
                running = asyncio.get_running_loop().run_in_executor(
                    self._threads, contextvars.copy_context().run, svc.invoke, packet
                )
                result = await asyncio.wait_for(running, timeout)
            self._record_result(o, packet, result)
        except TimeoutError:
            o.error = _timeout_error(svc, o.packet, timeout)
        except FluxoError as exc:
            o.error = exc
        except Exception as exc:
            o.error = _handler_error(svc, exc)
        finally:
            reset_ids(ids)
        o.duration_s = time.time() - o.started_at

    def _run_inline(self, o: _Outcome) -> None:
        """An inline handler, right here (inside the transaction of :meth:`_take_and_run`)."""
        svc, packet = o.service, o.packet
        if packet is None:
            return
        ids = _bind_ids(o, packet)
        o.started_at = time.time()
        try:
            o.max_attempts = _caller_max_attempts(packet)
            svc.validate_input(packet)
            packet = _at_attempt(packet, o.delivery.attempt)
            self._record_result(o, packet, svc.invoke(packet))
        except FluxoError as exc:
            o.error = exc
        except Exception as exc:
            o.error = _handler_error(svc, exc)
        finally:
            reset_ids(ids)
        o.duration_s = time.time() - o.started_at

    @staticmethod
    def _record_result(o: _Outcome, packet: Packet, result: Any) -> None:
        svc = o.service
        if isinstance(result, Deferred):
            o.deferred = True
            return
        o.outputs = normalize_outputs(svc, result)
        try:
            # Zero outputs still make one (empty) packet: it tells the consumer of the
            # output queue that the call is done.
            o.results = packet.derive_json(o.outputs or [[]], span_id=o.span_id)
        except TypeError as exc:
            raise ServiceError(
                f"service {svc.ref} returned an output that is not JSON: {exc}; return "
                "only JSON values (dicts, lists, strings, numbers, booleans, None)",
                retryable=False,
                service=svc.ref,
            ) from exc

    async def _commit(self, outcomes: list[_Outcome]) -> None:
        now = time.time()
        # Built before taking the write lock: everything that does not depend on the inbox.
        settlement = self._settlement(outcomes, now)
        await self.db.transact(lambda tx: self._settle(tx, outcomes, settlement, now), keyed=True)
        self._count(outcomes, settlement)

    def _settlement(self, outcomes: list[_Outcome], now: float) -> _Settlement:
        """Which outcomes are final and which retry (with their delays), and the rows of the
        successful ones."""
        final = [o for o in outcomes if not o.duplicate and not self._should_retry(o)]
        retry = [o for o in outcomes if not o.duplicate and self._should_retry(o)]
        for o in retry:
            o.retry_delay = o.service.retry.delay(o.delivery.attempt, self._rng)
        success_rows = {
            id(o): self._success_rows(o, now) for o in final if o.error is None and not o.deferred
        }
        return _Settlement(final, retry, success_rows)

    def _settle(
        self, tx: Transaction, outcomes: list[_Outcome], settlement: _Settlement, now: float
    ) -> None:
        """Write the outcomes: inbox rows, results, what the interceptors write (usage), output
        messages, settlements."""
        final, retry = settlement.final, settlement.retry
        applied = self._claim_inbox(tx, final, now)
        acks: list[Delivery] = [o.delivery for o in outcomes if o.duplicate]
        deferred: list[tuple[str, str]] = []
        updates: list[CallOutcome] = []
        messages: list[OutgoingMessage] = []
        for o in final:
            key = (o.delivery.queue, o.delivery.message_id)
            if key not in applied:
                # Applied before, by another delivery meanwhile or earlier in this batch.
                acks.append(o.delivery)
                o.duplicate = True
                continue
            applied.discard(key)  # a second copy in this same batch is a duplicate
            if o.deferred:
                # Its result is written by whoever completes it; noted as open till then.
                acks.append(o.delivery)
                deferred.append((o.delivery.message_id, o.service.name))
            elif o.error is None:
                acks.append(o.delivery)
                row_update, row_messages = settlement.success_rows[id(o)]
                updates.append(row_update)
                messages.extend(row_messages)
            else:
                self.transport.dead_letter(tx, o.delivery, error=_describe(o.error))
                self._failure(o, now, updates, messages)
        for o in retry:
            error = o.error or ServiceError("retry without an error")
            self.transport.retry(tx, o.delivery, delay_s=o.retry_delay, error=_describe(error))
            error_json = orjson.dumps(error.to_dict()).decode()
            updates.append(
                CallOutcome(
                    o.delivery.message_id, "retrying", None, error_json, o.delivery.attempt, None
                )
            )
        if self.interceptors.observes_results:
            self.interceptors.on_result(ResultRequest(_results(final, retry), now), tx)
        if updates:
            self._calls.record_outcomes(tx, updates)
        if deferred:
            self._calls.defer(tx, deferred, now)
        self.transport.enqueue(tx, messages)
        self.transport.ack(tx, acks)
        tx.notify(*(call_channel(o.delivery.message_id) for o in outcomes))

    def _count(self, outcomes: list[_Outcome], settlement: _Settlement) -> None:
        retried = {id(o) for o in settlement.retry}
        for o in outcomes:
            if o.duplicate:
                self.stats.duplicates += 1
            elif o.deferred:
                self.stats.deferred += 1
            elif id(o) in retried:
                self.stats.retried += 1
            elif o.error is None:
                self.stats.succeeded += 1
            else:
                self.stats.dead_lettered += 1
                log.warning(
                    "dead-lettered %s on %s: %s", o.delivery.message_id, o.service.ref, o.error
                )

    def _should_retry(self, o: _Outcome) -> bool:
        if o.error is None or not o.error.retryable:
            return False
        limit = self._attempts_applied.get(o.delivery.queue, o.delivery.max_attempts)
        if o.max_attempts is not None:
            limit = min(limit, o.max_attempts)
        return o.delivery.attempt < limit

    def _claim_inbox(self, tx: Transaction, final: list[_Outcome], now: float) -> set[InboxKey]:
        """Insert inbox rows; only the ones that were new are applied in this transaction."""
        keys = [(o.delivery.queue, o.delivery.message_id) for o in final]
        return self._inbox.claim(tx, keys, now)

    def _success_rows(self, o: _Outcome, now: float) -> tuple[CallOutcome, list[OutgoingMessage]]:
        """The call update and output messages of a successful call."""
        packet, svc, outputs, results = o.packet, o.service, o.outputs or [], o.results
        if packet is None or results is None:
            raise ServiceError("a successful call without its packets", retryable=False)
        # The call's result: its output packets (none for a call that returned nothing).
        result = b"[" + b",".join(body for _, body in results[: len(outputs)]) + b"]"
        update = CallOutcome(packet.id, "succeeded", result, None, o.delivery.attempt, now)
        reply_to = o.delivery.headers.get(REPLY_TO_HEADER) or svc.output_queue
        return update, output_messages(packet.id, reply_to, results, len(outputs))

    def _failure(
        self,
        o: _Outcome,
        now: float,
        updates: list[CallOutcome],
        messages: list[OutgoingMessage],
    ) -> None:
        error = (o.error or ServiceError("failed")).to_dict()
        error_json = orjson.dumps(error).decode()
        updates.append(
            CallOutcome(o.delivery.message_id, "failed", None, error_json, o.delivery.attempt, now)
        )
        if o.packet is None:
            return  # an unparseable message has no actor to address an error packet to
        reply_to = o.delivery.headers.get(REPLY_TO_HEADER) or o.service.output_queue
        messages.append(failure_message(o.packet, reply_to, error, o.span_id))


def output_messages(
    call_id: str, reply_to: str, results: list[tuple[str, bytes]], count: int
) -> list[OutgoingMessage]:
    """The output messages of a succeeded call: its ``results`` (packet id, JSON), ``count``
    of them outputs (a call without outputs still sends one empty packet: it is done)."""
    return [
        OutgoingMessage(
            queue=reply_to,
            message_id=packet_id,
            body=body,
            headers={
                STATUS_HEADER: "succeeded",
                CALL_ID_HEADER: call_id,
                OUTPUT_INDEX_HEADER: str(i),
                OUTPUT_COUNT_HEADER: str(count),
            },
        )
        for i, (packet_id, body) in enumerate(results)
    ]


def failure_message(
    packet: Packet, reply_to: str, error: dict[str, Any], span_id: str
) -> OutgoingMessage:
    """The output message of a failed call: a packet whose payload is ``{"error": ...}``."""
    failure = packet.derive({"error": error}, index=0, span_id=span_id)
    return OutgoingMessage(
        queue=reply_to,
        message_id=failure.id,
        body=pydantic_core.to_json(failure),
        headers={STATUS_HEADER: "failed", CALL_ID_HEADER: packet.id},
    )


@dataclass
class _Settlement:
    final: list[_Outcome]
    retry: list[_Outcome]
    success_rows: dict[int, tuple[CallOutcome, list[OutgoingMessage]]]


def _parse(outcomes: list[_Outcome]) -> None:
    for o in outcomes:
        try:
            o.packet = parse_packet(o.delivery.body, where=f"message {o.delivery.message_id}")
        except PacketValidationError as exc:
            exc.retryable = False
            o.error = exc


def _bind_ids(o: _Outcome, packet: Packet) -> contextvars.Token[Any]:
    """What the handler logs carries the ids of its call (and the span of this run)."""
    return bind_ids(
        job_id=packet.job_id,
        call_id=packet.id,
        trace_id=packet.trace_id,
        span_id=o.span_id,
        account=packet.actor.account.id,
    )


def _at_attempt(packet: Packet, attempt: int) -> Packet:
    """The packet as its handler sees it on this delivery attempt."""
    return packet if packet.attempt == attempt else packet.model_copy(update={"attempt": attempt})


def _handler_error(svc: Service, exc: Exception) -> ServiceError:
    # A handler bug or a transient failure: retried, and named so the cause can be found.
    return ServiceError(
        f"service {svc.ref} raised {type(exc).__name__}: {exc}"[:2000], service=svc.ref
    )


def _caller_timeout(packet: Packet) -> float | None:
    """The caller's timeout of one run of the handler (``fluxo-timeout-s``), if it set one."""
    raw = packet.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise PacketValidationError(
            f"packet header {TIMEOUT_HEADER}={raw[:50]!r} is not a number of seconds above "
            "zero; send a positive number such as '10' or leave the header out",
            problems=[(f"headers.{TIMEOUT_HEADER}", "not a positive number")],
        )
    return value


def _caller_max_attempts(packet: Packet) -> int | None:
    """The caller's cap on deliveries after failures (``fluxo-max-attempts``), if it set one."""
    raw = packet.headers.get(MAX_ATTEMPTS_HEADER)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
        raise PacketValidationError(
            f"packet header {MAX_ATTEMPTS_HEADER}={raw[:50]!r} is not a whole number of "
            "attempts of at least 1; send e.g. '1' (no retry) or leave the header out",
            problems=[(f"headers.{MAX_ATTEMPTS_HEADER}", "not a whole number >= 1")],
        )
    return int(raw)


def _timeout_error(svc: Service, packet: Packet | None, timeout: float) -> ServiceTimeoutError:
    if timeout >= svc.timeout_s or packet is None:
        # The service's own limit: a slow moment of the service, worth another delivery.
        return ServiceTimeoutError(
            f"service {svc.ref} did not finish within {svc.timeout_s}s", service=svc.ref
        )
    # The caller's limit (a step's timeout_s): the caller decides what comes next (the step's
    # retry or on_error), not another delivery of the same call.
    what = f"step {packet.step_id!r}" if packet.step_id else f"service {svc.ref}"
    return ServiceTimeoutError(
        f"{what} did not finish within {timeout}s",
        retryable=False,
        service=svc.ref,
        step=packet.step_id,
    )


def _runs_as(svc: Service) -> str:
    if svc.is_async:
        return "async"
    return "inline" if svc.inline else "thread"


def _admit_request(outcomes: list[_Outcome]) -> AdmitRequest:
    """The worker's admit request for the parsed ``outcomes``, in their order."""
    return AdmitRequest(
        "worker",
        [
            CallRequest.for_call(o.packet, o.service.name, o.service.version)
            for o in outcomes
            if o.packet is not None
        ],
    )


def _refuse(outcomes: list[_Outcome], request: AdmitRequest) -> None:
    """Fail the outcomes the interceptors refused (they never run)."""
    parsed = [o for o in outcomes if o.packet is not None]
    for o, refusal in zip(parsed, request.refusals, strict=True):
        if refusal is not None:
            o.error = refusal
            o.started_at = time.time()


def _results(final: list[_Outcome], retry: list[_Outcome]) -> list[CallResult]:
    """What the result interceptors see: the applied outcomes (no duplicates) of packets."""
    results = []
    for outcomes, retrying in ((final, False), (retry, True)):
        for o in outcomes:
            if o.packet is None or o.duplicate or o.deferred:
                continue
            status: ResultStatus = (
                "retrying" if retrying else "succeeded" if o.error is None else "failed"
            )
            results.append(
                CallResult(
                    o.packet,
                    o.service,
                    status,
                    o.delivery.attempt,
                    o.outputs or (),
                    o.error,
                    o.span_id,
                    o.started_at,
                    o.duration_s,
                )
            )
    return results


def _describe(error: FluxoError) -> str:
    return f"{type(error).__name__}: {error.message}"


def normalize_outputs(svc: Service, result: Any) -> list[Any]:
    """A handler's return value as a list of output payloads (see the SDK docstring)."""
    if result is None:
        outputs: list[Any] = []
    elif isinstance(result, Outputs):
        outputs = list(result)
    else:
        outputs = [result]
    for i, payload in enumerate(outputs):
        ok = isinstance(payload, dict) or (
            isinstance(payload, list) and all(isinstance(x, dict) for x in payload)
        )
        if not ok:
            raise ServiceError(
                f"service {svc.ref} returned {type(payload).__name__} as output {i}; return a "
                "dict, a list of dicts, Outputs([...]) for several packets, or None",
                retryable=False,
                service=svc.ref,
            )
        if svc.output_schema is not None:
            problems = _schema_problems(svc.output_schema, payload)
            if problems:
                raise ServiceError(
                    f"service {svc.ref} returned output {i} that does not match its output "
                    f"schema: {problems[0][0]}: {problems[0][1]}",
                    retryable=False,
                    service=svc.ref,
                )
    return outputs
