"""The data packet: the one JSON envelope that everything in Fluxo moves.

A packet says who asks (``actor``: user and the account that pays), where it is (job, step, workflow,
trace) and carries a ``payload`` that is ONE JSON object or an ARRAY of objects. Services receive one
packet and return one or many; the runtime copies the envelope, handlers see payloads.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fluxo_core.errors import PacketValidationError
from fluxo_core.ir._problems import problems_from_pydantic

__all__ = [
    "ENTRIES_LABEL",
    "ENTRY_HEADER",
    "MAX_ATTEMPTS_HEADER",
    "Account",
    "Actor",
    "Packet",
    "PacketTemplate",
    "Payload",
    "User",
    "dump_json",
    "keyed_id",
    "new_packet_id",
    "new_span_id",
    "new_trace_id",
    "parse_packet",
]

MAX_ATTEMPTS_HEADER = "fluxo-max-attempts"
"""Packet header: the caller's cap on the deliveries of a call that fails, below its service's
``RetryPolicy.max_attempts``. A workflow step that declares ``retry`` sends ``1``: its engine
retries the step itself, each attempt a new call, so the two policies never multiply."""

ENTRY_HEADER = "fluxo-entry"
"""Job input header: the entry the job begins at, one of the steps its workflow's start step
leads to, instead of the start step. A workflow imported from a Node-RED flow with several
triggers has one entry per trigger and a start step that refuses a job naming none (Node-RED
starts only the nodes of the trigger that fired)."""

ENTRIES_LABEL = "fluxo.dev/entries"
"""Workflow label: how many entries (the steps its start step leads to) a job of it names in
:data:`ENTRY_HEADER`, set on a workflow imported from a Node-RED tab with several triggers (its
start step fails a job that names none). An engine that plans runs ahead (Argo) makes each
entry a start of its own for such a workflow only."""

_IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"
_WORKFLOW_REF_PATTERN = r"^[a-z0-9][a-z0-9._-]*@[A-Za-z0-9._-]+$"
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=_IDENTIFIER_PATTERN)
]
WorkflowRef = Annotated[str, StringConstraints(pattern=_WORKFLOW_REF_PATTERN)]
TraceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
SpanId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]

JsonObject = dict[str, Any]
Payload = JsonObject | list[JsonObject]
"""One JSON object, or an array of JSON objects (a Node-RED ``msg`` / n8n items)."""


def new_packet_id() -> str:
    """A new id: 32 hex digits laid out as a UUIDv7 (RFC 9562), so ids sort by creation time.

    Packet ids become the keys of the busiest tables (jobs, calls, steps, inbox, usage). Random
    keys scatter each batch of inserts over the whole of every index, so each commit rewrites
    hundreds of pages; ids made close in time land on the same few pages at the end of the
    index (measured with bench/sql_floor.py on SQLite: 3,300 -> 5,450 jobs/s).
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 74 of these 80 bits are used
    value = (
        (millis & _MILLIS_MASK) << 80
        | 0x7 << 76  # version 7
        | (rand >> 62 & 0xFFF) << 64
        | 0b10 << 62  # the RFC 4122 variant
        | rand & (1 << 62) - 1
    )
    return f"{value:032x}"


def keyed_id(anchor: str, text: str) -> str:
    """A stable id for ``text`` (32 hex digits) that sorts next to the id ``anchor``.

    The same ``text`` always gives the same id, so a record written twice collides instead of
    doubling. When ``anchor`` is an id from :func:`new_packet_id`, the result keeps its time
    prefix: the ids of a job's calls and of a call's outputs sort with the job, for the same
    reason as in :func:`new_packet_id`.
    """
    prefix = anchor[:_TIME_DIGITS]
    if not _TIME_PREFIX.fullmatch(prefix):
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return prefix + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


_MILLIS_MASK = (1 << 48) - 1
_TIME_DIGITS = 12  # the 48-bit millisecond time at the front of a UUIDv7, in hex
_TIME_PREFIX = re.compile(r"[0-9a-f]{12}")


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def _now() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class User(_Model):
    """The person or machine user who asked."""

    id: Identifier
    name: str | None = Field(default=None, max_length=200)


class Account(_Model):
    """The account that owns the request and pays for it."""

    id: Identifier


class Actor(_Model):
    """Who asks: a user acting for an account."""

    user: User
    account: Account


class Packet(_Model):
    """The standard envelope.

    Attributes:
        id: unique id; also the idempotency key of its delivery (a packet delivered twice has effect once).
        job_id: the job this packet belongs to (absent for direct calls).
        step_id: the workflow step that produced or will consume it.
        workflow: ``name@version`` of the workflow, when inside a job.
        trace_id: W3C trace id (32 lowercase hex), shared by every packet of a job or call chain.
        parent_id: W3C span id (16 lowercase hex) of the call that produced this packet.
        actor: who asks; ``actor.account`` is who pays.
        payload: one JSON object or an array of JSON objects.
        headers: free string metadata (content type, source trigger, ...).
        created_at: when the packet was made (UTC).
        attempt: the delivery attempt this packet is on (1 for the first delivery).
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"$id": "https://fluxo.dev/schemas/packet.json", "title": "Fluxo packet"},
    )

    id: Identifier = Field(default_factory=new_packet_id)
    job_id: Identifier | None = None
    step_id: Identifier | None = None
    workflow: WorkflowRef | None = None
    trace_id: TraceId = Field(default_factory=new_trace_id)
    parent_id: SpanId | None = None
    actor: Actor
    payload: Payload
    headers: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={"propertyNames": {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"}},
    )
    created_at: datetime = Field(default_factory=_now)
    attempt: int = Field(default=1, ge=1)

    @pydantic.field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"header name {name!r} is not allowed: use letters, digits, '-', '_' or '.'"
                )
        return value

    @property
    def account_id(self) -> str:
        return self.actor.account.id

    @property
    def items(self) -> list[JsonObject]:
        """The payload as a list (one object becomes a list of one)."""
        return self.payload if isinstance(self.payload, list) else [self.payload]

    def derive(self, payload: Payload, *, index: int, span_id: str, **changes: Any) -> Packet:
        """A result packet of this one: same actor, job, trace; a stable id per output index.

        The id is derived (not random) so that a result written twice would collide instead of
        silently doubling; the runtime writes it once anyway, inside the result transaction.
        """
        data: dict[str, Any] = {
            "id": derived_id(self.id, index),
            "job_id": self.job_id,
            "step_id": self.step_id,
            "workflow": self.workflow,
            "trace_id": self.trace_id,
            "parent_id": span_id,
            "actor": self.actor,
            "payload": payload,
            "headers": dict(self.headers),
            "created_at": _now(),
            "attempt": 1,
        }
        data.update(changes)
        # Validated, not model_construct()ed: pydantic's construct is Python, its validation Rust;
        # measured 12 us against 7 us per packet.
        return Packet.model_validate(data)

    def derive_json(self, payloads: list[Payload], *, span_id: str) -> list[tuple[str, bytes]]:
        """``(id, JSON)`` of what :meth:`derive` makes of each payload, by index, without
        building the models (the worker turns every result into JSON and nothing else).

        Every envelope field comes from this validated packet; the caller has checked that each
        payload is an object or an array of objects. Values JSON has no type for are written as
        pydantic would (models, dataclasses, dates); anything else raises ``TypeError``.
        """
        envelope = {
            "job_id": self.job_id,
            "step_id": self.step_id,
            "workflow": self.workflow,
            "trace_id": self.trace_id,
            "parent_id": span_id,
            "actor": self.actor.model_dump(),
            "headers": self.headers,
            "created_at": _now(),
            "attempt": 1,
        }
        derived = []
        for index, payload in enumerate(payloads):
            packet_id = derived_id(self.id, index)
            body = dump_json({"id": packet_id, **envelope, "payload": payload})
            derived.append((packet_id, body))
        return derived


class PacketTemplate:
    """The envelope that packets share with ``source`` (job, trace, actor), checked once: makes
    the JSON of such a packet for a new id, step, payload and headers without building a model.

    For the step engine, which writes a call packet for every step it runs; the JSON is what
    ``Packet.model_validate(...)`` would accept and ``to_json`` would write.
    """

    def __init__(self, source: Packet, *, workflow: str | None) -> None:
        self.source = source
        if workflow is not None and not _WORKFLOW_REF.fullmatch(workflow):
            raise PacketValidationError(
                f"invalid workflow reference {workflow!r}: use name@version",
                problems=[("workflow", "not name@version")],
            )
        self._envelope = {
            "job_id": source.job_id,
            "workflow": workflow,
            "trace_id": source.trace_id,
            "parent_id": None,
            "actor": source.actor.model_dump(),
        }

    def json(
        self, *, id: str, step_id: str, payload: Any, headers: dict[str, str], where: str
    ) -> bytes:
        """The packet's JSON, with the source's headers and ``headers``. Raises
        PacketValidationError, located, as ``parse_packet`` would."""
        data = {
            "id": id,
            **self._envelope,
            "step_id": step_id,
            "payload": payload,
            "headers": {**self.source.headers, **headers},
            "created_at": _now(),
            "attempt": 1,
        }
        if not (_is_payload(payload) and _is_identifier(id) and _is_identifier(step_id)):
            parse_packet(data, where=where)  # says what is wrong, and where
        for name, value in headers.items():  # the source's own were checked by the model
            if not (_HEADER_NAME.fullmatch(name) and isinstance(value, str)):
                parse_packet(data, where=where)
        try:
            return dump_json(data)
        except TypeError as exc:
            raise PacketValidationError(
                f"invalid {where}: the payload is not JSON ({exc})",
                problems=[("payload", str(exc))],
            ) from exc


def dump_json(value: Any) -> bytes:
    """The JSON of a packet or payload, as Fluxo writes it everywhere: UTC times with ``Z``, and
    an integral float written as an integer (``30``, not ``30.0``).

    JSON has one number type. JavaScript (Node-RED) and Go (Argo) write ``30.0`` as ``30``, and
    Python keeps the ``.0`` of a float (a handler's ``price * qty``, ``value: 30.0`` in YAML):
    written this way, a job's result reads the same on every engine. Integers beyond 2**53 stay
    floats, as no double holds them exactly. Values JSON has no type for are written as pydantic
    would (models, dataclasses, dates); anything else raises ``TypeError``.
    """
    data = orjson.dumps(value, default=_jsonable, option=orjson.OPT_UTC_Z)
    if not _maybe_integral_float(data):  # the usual case: no float to rewrite
        return data
    return orjson.dumps(_integral(value), default=_jsonable, option=orjson.OPT_UTC_Z)


def _maybe_integral_float(data: bytes) -> bool:
    """Whether orjson may have written an integral float in ``data``: a digit, ``.0`` and the
    end of the number (it writes 1e16 and above with an exponent, all beyond 2**53). A string
    holding such text only costs a second pass, which changes floats alone. ``bytes.find``
    rather than a regular expression: most packets hold no ``.0`` at all, and this is on every
    packet's path."""
    at = data.find(b".0")
    while at != -1:
        after = data[at + 2 : at + 3]
        if at > 0 and data[at - 1 : at].isdigit() and after in (b",", b"}", b"]", b""):
            return True
        at = data.find(b".0", at + 2)
    return False


_MAX_EXACT = 2.0**53


def _integral(value: Any) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _MAX_EXACT else value
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_integral(v) for v in value]
    return value


def _is_identifier(value: str) -> bool:
    return len(value) <= 128 and _IDENTIFIER.fullmatch(value) is not None


def _is_payload(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and all(isinstance(item, dict) for item in value)
    )


def _jsonable(value: Any) -> Any:
    try:
        return pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(str(exc)) from exc


def derived_id(parent_id: str, index: int) -> str:
    """A stable id for the ``index``-th packet derived from ``parent_id`` (32 hex characters)."""
    return keyed_id(parent_id, f"{parent_id}/{index}")


_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# The same checks as the model's, for PacketTemplate (fullmatch: "$" alone allows a final "\n").
_IDENTIFIER = re.compile(_IDENTIFIER_PATTERN)
_WORKFLOW_REF = re.compile(_WORKFLOW_REF_PATTERN)


def parse_packet(data: bytes | str | dict[str, Any], *, where: str = "packet") -> Packet:
    """Validate raw JSON (bytes/str) or a decoded object into a :class:`Packet`.

    Raises:
        PacketValidationError: listing every problem with its location, e.g. ``payload[2]``.
    """
    try:
        if isinstance(data, bytes | str):
            return Packet.model_validate_json(data)
        return Packet.model_validate(data)
    except pydantic.ValidationError as exc:
        raise PacketValidationError(
            f"invalid {where}: fix the fields listed below",
            problems=problems_from_pydantic(exc),
        ) from exc
