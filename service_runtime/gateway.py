"""The gateway: the one door through which every engine and every client calls a service.

``call`` checks the packet (size, account scope, input schema), runs the interceptors' ``admit``
(blocks, quotas: the control plane hands its interceptors in at start-up, so this layer never
imports it), then writes the call row and the input-queue message in ONE transaction, in which the
interceptors' ``on_record`` runs too. A synchronous caller then sleeps until the worker's result
transaction wakes it.

The call id is the packet id: sending the same packet again returns the same call instead of a
second one, so a client that retries after a lost response causes no second effect. One
exception: a failed call a job retry superseded (``calls.retry_id``) is answered by the call
its retry id names, made the first time the packet comes again (see :meth:`Gateway.record_calls`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field

from fluxo_core.errors import (
    CallNotFoundError,
    ConflictError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from fluxo_core.ir import Packet
from fluxo_core.logs import bind_ids, reset_ids
from fluxo_core.redaction import mask_credentials
from fluxo_core.storage import CallRow, CallStore, Database, NewCall, Principal, Transaction
from service_runtime.catalog import ServiceCatalog, ServiceInfo
from service_runtime.interceptors import (
    AdmitRequest,
    CallRequest,
    InterceptorChain,
    PreparedCall,
    RecordPlace,
    RecordRequest,
    call_span_id,
)
from service_runtime.transports import OutgoingMessage, Transport

__all__ = [
    "REPLY_TO_HEADER",
    "CallRecord",
    "CallStatus",
    "Gateway",
    "PreparedCall",
    "call_channel",
]

REPLY_TO_HEADER = "fluxo-reply-to"
CallStatus = Literal["queued", "retrying", "succeeded", "failed"]
FINAL_STATUSES = ("succeeded", "failed")
# How many retries of one call a packet is followed through (a bound, never reached in practice:
# each link is a job retry a user asked for).
MAX_RETRY_CHAIN = 100


def call_channel(call_id: str) -> str:
    return f"call:{call_id}"


class CallRecord(BaseModel):
    """A call as callers see it."""

    model_config = ConfigDict(frozen=True)

    id: str
    service: str
    version: str
    account_id: str
    user_id: str
    job_id: str | None
    step_id: str | None
    status: CallStatus
    attempts: int
    result: list[Packet] | None = None
    error: dict[str, Any] | None = None
    created_at: datetime
    finished_at: datetime | None = None
    retry_id: str | None = Field(
        default=None,
        description="A failed call a job retry superseded: the id of the call that is its next "
        "attempt (the one its packet is answered by now)",
    )

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES


class Gateway:
    """Admits, records and enqueues service calls; lets callers wait for their results.

    Args:
        db: the database holding call rows (and the queues, with the SQL transport).
        transport: where input messages go.
        catalog: resolves service names.
        max_packet_bytes: packets larger than this (serialised) are refused.
        interceptors: the runtime's chain: its ``admit`` runs before anything is written, its
            ``on_record`` in the transaction that writes the calls.
    """

    def __init__(
        self,
        db: Database,
        transport: Transport,
        catalog: ServiceCatalog,
        *,
        max_packet_bytes: int = 1_048_576,
        interceptors: InterceptorChain | None = None,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.db = db
        self.transport = transport
        self.catalog = catalog
        self.max_packet_bytes = max_packet_bytes
        self.interceptors = interceptors if interceptors is not None else InterceptorChain()
        self.poll_interval_s = poll_interval_s
        self.calls = CallStore(db)

    async def call(
        self,
        service: str,
        packet: Packet,
        *,
        principal: Principal | None = None,
        wait: float | None = None,
        reply_to: str | None = None,
        reveal: bool = False,
    ) -> CallRecord:
        """Call ``service`` with ``packet``; with ``wait`` seconds, return once it finished.

        If ``wait`` runs out the record returned is still unfinished (the call goes on).
        ``reveal``: see :func:`record_from_row`.
        """
        (call_id,) = await self.submit(service, [packet], principal=principal, reply_to=reply_to)
        if wait is None:
            return await self.get(call_id, reveal=reveal)
        return await self.wait(call_id, wait, reveal=reveal)

    async def submit(
        self,
        service: str,
        packets: Sequence[Packet],
        *,
        principal: Principal | None = None,
        reply_to: str | None = None,
    ) -> list[str]:
        """Admit and enqueue many calls of one service in one transaction; returns call ids."""
        if len(packets) != 1:
            return await self._submit(service, packets, principal=principal, reply_to=reply_to)
        # One call: what is logged while it is admitted and recorded carries its ids.
        packet = packets[0]
        ids = bind_ids(
            job_id=packet.job_id,
            call_id=packet.id,
            trace_id=packet.trace_id,
            span_id=call_span_id(packet.id),
            account=packet.actor.account.id,
        )
        try:
            return await self._submit(service, packets, principal=principal, reply_to=reply_to)
        finally:
            reset_ids(ids)

    async def _submit(
        self,
        service: str,
        packets: Sequence[Packet],
        *,
        principal: Principal | None,
        reply_to: str | None,
    ) -> list[str]:
        info = await self.catalog.resolve(service)
        prepared = []
        for packet in packets:
            body = pydantic_core.to_json(packet)
            self._check(info, packet, body, principal)
            prepared.append(PreparedCall.of(packet, body))
        if self.interceptors.admits:
            # One request per call (a quota counts calls), decided together for the batch.
            request = AdmitRequest(
                "gateway", [CallRequest.for_call(p, info.name, info.version) for p in packets]
            )
            await self.interceptors.admit(request)
            request.raise_refused()
        return await self.db.transact(
            lambda tx: self.record_calls(tx, info, prepared, reply_to=reply_to, place="gateway")
        )

    def check_call(self, info: ServiceInfo, packet_id: str, payload: Any, body: bytes) -> None:
        """Check a serialised call packet as :meth:`submit` would (size, input schema).

        For engines, so a bad packet fails its step where the engine can handle it, instead
        of failing the engine's whole transaction in :meth:`record_calls`.
        """
        self._check_size(packet_id, body)
        info.validate_payload(payload)

    def _check(
        self, info: ServiceInfo, packet: Packet, body: bytes, principal: Principal | None
    ) -> None:
        self._check_size(packet.id, body)
        if principal is not None and packet.account_id != principal.account_id:
            raise PermissionDeniedError(
                f"packet {packet.id} is for account {packet.account_id!r} but the token belongs to "
                f"account {principal.account_id!r}; use a token of that account",
                packet_id=packet.id,
            )
        info.validate_payload(packet.payload)

    def _check_size(self, packet_id: str, body: bytes) -> None:
        if len(body) > self.max_packet_bytes:
            raise PayloadTooLargeError(
                f"packet {packet_id} is {len(body)} bytes, over the limit of "
                f"{self.max_packet_bytes} bytes (FLUXO_MAX_PACKET_BYTES); send a reference to the "
                "data instead, or raise the limit",
                size=len(body),
                limit=self.max_packet_bytes,
            )

    def record_calls(
        self,
        tx: Transaction,
        info: ServiceInfo,
        prepared: Sequence[PreparedCall],
        *,
        reply_to: str | None = None,
        place: RecordPlace = "engine",
    ) -> list[str]:
        """Write call rows and input messages inside the caller's transaction; returns the id
        of the call that answers each packet, in order.

        For engines whose own state change causes the calls (a step finished, so the next step's
        call starts): both commit together or not at all. The packets were checked before
        (:meth:`check_call`). The interceptors' ``admit`` is not run here (it is async); the
        worker runs it again before the handlers, so blocks still hold. Their ``on_record``
        runs here, for the calls that are new.

        A packet id seen before is the same call retried by its client: the first is kept and
        nothing new is enqueued, unless a job retry superseded that call (it failed, and the
        job was retried from its step): then the packet is the call its ``retry_id`` names,
        made now (the packet under that id) if this is the first time the packet comes again.
        Two deliveries of the packet therefore make one new attempt, in whichever transaction
        inserts it first; a call superseded by several retries is followed to the latest.

        Raises:
            ConflictError: a packet id was already used for a different call.
        """
        now = time.time()
        answers = [p.id for p in prepared]  # the call answering each packet, followed below
        pending = list(enumerate(prepared))
        new: list[PreparedCall] = []
        for _ in range(MAX_RETRY_CHAIN):
            inserted = self.calls.insert(
                tx, [_new_call(p, info, reply_to, now) for _, p in pending]
            )
            new += [p for _, p in pending if p.id in inserted]
            repeats = [(i, p) for i, p in pending if p.id not in inserted]
            if not repeats:
                break
            retries = self._check_repeats(tx, info, [p for _, p in repeats])
            pending = [(i, _renamed(p, retries[p.id])) for i, p in repeats if p.id in retries]
            for i, p in pending:
                answers[i] = p.id
            if not pending:
                break
        else:
            raise ConflictError(
                f"a call was retried more than {MAX_RETRY_CHAIN} times; create a new job",
                packet_id=pending[0][1].id,
            )
        if self.interceptors.records:
            self.interceptors.on_record(RecordRequest(info, new, reply_to, place), tx)
        headers = {REPLY_TO_HEADER: reply_to} if reply_to else {}
        self.transport.enqueue(
            tx,
            [
                OutgoingMessage(
                    queue=info.input_queue,
                    message_id=p.id,
                    body=p.body,
                    headers=headers,
                    max_attempts=info.max_attempts,
                )
                for p in new
            ],
        )
        return answers

    def _check_repeats(
        self, tx: Transaction, info: ServiceInfo, repeats: Sequence[PreparedCall]
    ) -> dict[str, str]:
        """Check that repeated packets are the calls stored under their ids; returns the retry
        ids of those a job retry superseded, by packet id."""
        stored = self.calls.owners(tx, [p.id for p in repeats])
        retries = {}
        for packet in repeats:
            old = stored.get(packet.id)
            if old is None or old.account_id != packet.account_id or old.service != info.name:
                raise ConflictError(
                    f"packet id {packet.id!r} was already used for another call; "
                    "give every new packet a new id",
                    packet_id=packet.id,
                )
            if old.retry_id is not None:
                retries[packet.id] = old.retry_id
        return retries

    async def get(
        self, call_id: str, *, account_id: str | None = None, reveal: bool = False
    ) -> CallRecord:
        """The call's current record; ``account_id`` scopes the lookup (others' calls are 404)."""
        row = await self.calls.get(call_id, account_id=account_id)
        if row is None:
            raise CallNotFoundError(f"no call {call_id!r} in this account", call_id=call_id)
        return record_from_row(row, reveal=reveal)

    async def wait(
        self,
        call_id: str,
        timeout: float,
        *,
        account_id: str | None = None,
        reveal: bool = False,
    ) -> CallRecord:
        """Wait up to ``timeout`` seconds for the call to finish; returns its record either way."""
        deadline = time.monotonic() + timeout
        with await self.db.subscribe([call_channel(call_id)]) as sub:
            while True:
                sub.clear()
                record = await self.get(call_id, account_id=account_id, reveal=reveal)
                left = deadline - time.monotonic()
                if record.done or left <= 0:
                    return record
                # A wake-up is only a hint; the record is the truth, so a missed notification
                # (another process on SQLite) costs at most poll_interval_s.
                await sub.wait(min(left, self.poll_interval_s))


def _new_call(p: PreparedCall, info: ServiceInfo, reply_to: str | None, now: float) -> NewCall:
    return NewCall(
        p.id,
        p.account_id,
        p.user_id,
        info.name,
        info.version,
        p.job_id,
        p.step_id,
        p.body,
        reply_to,
        now,
    )


def _renamed(call: PreparedCall, call_id: str) -> PreparedCall:
    """The same call under another id (a superseded call's next attempt): the packet's id is
    the call's, for the worker and the service."""
    packet = orjson.loads(call.body)
    packet["id"] = call_id
    return dataclasses.replace(call, id=call_id, body=orjson.dumps(packet))


def record_from_row(row: CallRow, *, reveal: bool = False) -> CallRecord:
    """The call as shown (the one mapping of a stored call to a record): values of
    credential-looking keys in its result masked (``"***"``).

    ``reveal`` keeps them, for the one reader that needs the data itself: the engine that made
    the call for a job step and passes its result on to the next step.
    """
    result = None
    if row.result is not None:
        packets = orjson.loads(row.result)
        if not reveal:
            packets = [_masked(p) for p in packets]
        result = [Packet.model_validate(p) for p in packets]
    return CallRecord(
        id=row.id,
        service=row.service,
        version=row.version,
        account_id=row.account_id,
        user_id=row.user_id,
        job_id=row.job_id,
        step_id=row.step_id,
        status=row.status,
        attempts=row.attempts,
        result=result,
        error=orjson.loads(row.error) if row.error else None,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        finished_at=datetime.fromtimestamp(row.finished_at, UTC) if row.finished_at else None,
        retry_id=row.retry_id,
    )


def _masked(packet: dict[str, Any]) -> dict[str, Any]:
    payload = packet.get("payload")
    masked = mask_credentials(payload)
    return packet if masked is payload else {**packet, "payload": masked}
