"""The service SDK: declare a service, its price, retry policy and handler.

A handler receives the payload (or, with ``takes="packet"``, the whole :class:`Packet`) and returns:

* a ``dict`` or a ``list`` of dicts: ONE output packet with that payload (an object or an array);
* ``Outputs([...])``: N output packets, one per element (1 -> N);
* ``None``: no output at all (a filter that dropped the packet);
* :data:`DEFERRED`: the result comes later. The worker settles the delivery (it is not run
  again) but writes no result; whoever finishes the work completes the call, in its own
  transaction, with :class:`~service_runtime.deferred.DeferredCalls` (a workflow service
  answers when its child job ends, without holding a worker while the job runs).

Raising :class:`~fluxo_core.errors.ServiceError` lets the handler say whether a retry can help
(``retryable=False`` goes straight to the dead-letter queue); any other exception is retried.

Results and usage records are committed exactly once, but a handler runs AT LEAST once: after a
crash, or a retry of a failure, it runs again for the same call. A handler with an effect outside
Fluxo (a payment, an email) declares a ``call`` parameter and passes ``call.idempotency_key``,
the same on every run of the call, to the outside world, which then does the effect once.

Example::

    @service("parse-order", version="1", price=Price(per_call="0.002"))
    def parse_order(payload: dict) -> dict:
        return {"order_id": payload["id"], "total": sum(i["price"] for i in payload["items"])}

    @service("charge-card")
    async def charge_card(payload: dict, call: Call) -> dict:
        return await psp.charge(payload["amount"], idempotency_key=call.idempotency_key)
"""

from __future__ import annotations

import functools
import inspect
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from fluxo_core.errors import ConfigError, PayloadSchemaError
from fluxo_core.ir import Packet, Payload

__all__ = [
    "DEFERRED",
    "Call",
    "Deferred",
    "Handler",
    "Outputs",
    "Price",
    "RetryPolicy",
    "Service",
    "input_queue",
    "output_queue",
    "service",
]

Handler = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$")
MICROS = Decimal(1_000_000)


class Outputs(list[Payload]):
    """A handler's result that means N output packets, one per element."""


class Deferred:
    """The type of :data:`DEFERRED`: a handler's result that means "answered later"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED = Deferred()
"""Returned by a handler whose call is completed later by whoever finishes its work."""


@dataclass(frozen=True)
class Price:
    """What one call costs: ``per_call`` plus ``per_item`` for each output item.

    Amounts are decimal strings or Decimals in ``currency`` (ISO 4217); they are stored as integer
    micro-units, so at most six decimal places count.

    The price policy says which calls that did not succeed are billed; by default none, only
    succeeded calls are. ``bill_failed``: a call that failed for good (dead-lettered);
    ``bill_retried``: each attempt that failed and was retried (its final outcome is billed
    on its own); ``bill_cancelled``: a call refused because its job was cancelled. Each billed
    one costs ``per_call`` (one unit: it produced no items). Calls refused by admission for
    any other reason (a blocked account, a failed job) never cost anything, and neither does a
    delivery again after a worker crashed.
    """

    per_call: Decimal | str | int = 0
    per_item: Decimal | str | int = 0
    currency: str = "EUR"
    bill_failed: bool = False
    bill_retried: bool = False
    bill_cancelled: bool = False

    @functools.cached_property
    def per_call_micros(self) -> int:
        return _micros(self.per_call, "per_call")

    @functools.cached_property
    def per_item_micros(self) -> int:
        return _micros(self.per_item, "per_item")

    def charge(self, output_items: int) -> tuple[int, int, int]:
        """``(units, unit_price_micros, amount_micros)`` for a call that produced ``output_items``.

        A per-item price bills one unit per output item (plus the per-call part in the amount);
        otherwise the call is one unit at the per-call price.
        """
        if self.per_item_micros:
            amount = self.per_call_micros + self.per_item_micros * output_items
            return output_items, self.per_item_micros, amount
        return 1, self.per_call_micros, self.per_call_micros

    def bills(self, outcome: str) -> bool:
        """Whether a call with this outcome is charged: ``succeeded`` always; ``failed``,
        ``retried`` and ``cancelled`` as the policy says."""
        if outcome == "succeeded":
            return True
        return {
            "failed": self.bill_failed,
            "retried": self.bill_retried,
            "cancelled": self.bill_cancelled,
        }.get(outcome, False)

    def policy(self) -> dict[str, str]:
        """The price policy as shown: ``{"failed": "free" | "billed", ...}``."""
        flags = {
            "failed": self.bill_failed,
            "retried": self.bill_retried,
            "cancelled": self.bill_cancelled,
        }
        return {name: "billed" if on else "free" for name, on in flags.items()}


def _micros(value: Decimal | str | int, name: str) -> int:
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise ConfigError(f"price {name}={value!r} is not a decimal amount") from None
    if amount < 0:
        raise ConfigError(f"price {name}={value!r} is negative")
    return int((amount * MICROS).to_integral_value())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how far apart a failing call is retried before it is dead-lettered."""

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 300.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with "equal jitter" after the ``attempt``-th failure (1-based).

        Half the exponential step is kept, half is random, so retries spread out but never come
        back sooner than half the nominal delay.
        """
        step = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        jitter: float = (rng or random).uniform(0, step / 2)
        return step / 2 + jitter


@dataclass(frozen=True, slots=True)
class Call:
    """The call a handler runs, for a handler that declares a ``call`` parameter.

    Attributes:
        id: the call id; every delivery of the call carries it (a crash's, a retry's).
        attempt: which delivery this is, 1 for the first; a crashed run counts as one.
        account_id: the account that pays for the call.
        user_id: the user on whose behalf it runs.
        job_id / step_id: the job and workflow step that made the call; None for a direct call.
    """

    id: str
    attempt: int
    account_id: str
    user_id: str
    job_id: str | None
    step_id: str | None

    @classmethod
    def of(cls, packet: Packet) -> Call:
        return cls(
            packet.id,
            packet.attempt,
            packet.account_id,
            packet.actor.user.id,
            packet.job_id,
            packet.step_id,
        )

    @property
    def idempotency_key(self) -> str:
        """The key to give the outside world so that an effect happens once however often the
        handler runs: the call id. A workflow step's own ``retry`` makes a new call for each of
        its attempts, with a key of its own (it asks for the effect again)."""
        return self.id


@dataclass(frozen=True)
class Service:
    """A declared service: identity, contract, price and handler.

    Attributes:
        name: DNS-like name (``parse-order``), unique with ``version``.
        version: free version string (``1``, ``2024-06``...).
        handler: the function; sync or async.
        takes: ``"payload"`` (default) or ``"packet"`` (the handler gets the whole envelope).
            A handler that also declares a ``call`` parameter gets the :class:`Call` (its
            idempotency key, attempt, job and step).
        input_schema / output_schema: optional JSON Schemas of one payload item.
        inline: a sync handler that never blocks (pure computation) runs on the event loop instead
            of a worker thread; leave False for anything that does I/O.
    """

    name: str
    version: str
    handler: Handler
    description: str = ""
    takes: Literal["payload", "packet"] = "payload"
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    price: Price = field(default_factory=Price)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 30.0
    inline: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"service name {self.name!r} is invalid: use lowercase letters, digits and '-' "
                "(at most 63 characters, starting and ending with a letter or digit)"
            )
        if not _VERSION.match(self.version):
            raise ConfigError(f"service {self.name}: version {self.version!r} is invalid")
        if self.retry.max_attempts < 1:
            raise ConfigError(f"service {self.name}: retry.max_attempts must be at least 1")
        if self.timeout_s <= 0:
            raise ConfigError(f"service {self.name}: timeout_s must be above zero")
        # Validate the price now so a bad one fails at declaration, not at the first call.
        _ = (self.price.per_call_micros, self.price.per_item_micros)
        if self.input_schema is not None:
            _check_schema(self.input_schema, f"service {self.name}: input_schema")
        if self.output_schema is not None:
            _check_schema(self.output_schema, f"service {self.name}: output_schema")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @functools.cached_property
    def is_async(self) -> bool:
        # Asked for every call the worker runs; the handler of a service never changes.
        return inspect.iscoroutinefunction(self.handler)

    @property
    def input_queue(self) -> str:
        return input_queue(self.name, self.version)

    @property
    def output_queue(self) -> str:
        return output_queue(self.name, self.version)

    @functools.cached_property
    def takes_call(self) -> bool:
        """The handler declares a ``call`` parameter: it is passed the :class:`Call`."""
        try:
            return "call" in inspect.signature(self.handler).parameters
        except (TypeError, ValueError):  # a callable without a signature (a builtin)
            return False

    def invoke(self, packet: Packet) -> Any:
        """Run the handler on ``packet``: its result, or a coroutine for an async handler."""
        arg = packet if self.takes == "packet" else packet.payload
        if self.takes_call:
            handler: Callable[..., Any] = self.handler
            return handler(arg, call=Call.of(packet))
        return self.handler(arg)

    def validate_input(self, packet: Packet) -> None:
        """Check every payload item against ``input_schema``; raise with every located problem."""
        if self.input_schema is None:
            return
        problems = _schema_problems(self.input_schema, packet.payload)
        if problems:
            raise PayloadSchemaError(
                f"payload does not match the input schema of service {self.ref}",
                problems=problems,
                service=self.ref,
            )


def input_queue(name: str, version: str) -> str:
    return f"svc.{name}@{version}.in"


def output_queue(name: str, version: str) -> str:
    return f"svc.{name}@{version}.out"


def service(
    name: str,
    *,
    version: str = "1",
    description: str = "",
    takes: Literal["payload", "packet"] = "payload",
    input_schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    price: Price | None = None,
    retry: RetryPolicy | None = None,
    timeout_s: float = 30.0,
    inline: bool = False,
) -> Callable[[Handler], Service]:
    """Decorator that turns a handler into a :class:`Service`."""

    def wrap(fn: Handler) -> Service:
        return Service(
            name=name,
            version=version,
            handler=fn,
            description=description or (inspect.getdoc(fn) or "").split("\n")[0],
            takes=takes,
            input_schema=input_schema,
            output_schema=output_schema,
            price=price or Price(),
            retry=retry or RetryPolicy(),
            timeout_s=timeout_s,
            inline=inline,
        )

    return wrap


def _check_schema(schema: dict[str, Any], where: str) -> None:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{where} is not a valid JSON Schema: {exc.message}") from exc


def _schema_problems(schema: dict[str, Any], payload: Payload) -> list[tuple[str, str]]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    items: Sequence[tuple[str, Any]] = (
        [(f"payload[{i}]", item) for i, item in enumerate(payload)]
        if isinstance(payload, list)
        else [("payload", payload)]
    )
    problems: list[tuple[str, str]] = []
    for prefix, item in items:
        for err in validator.iter_errors(item):
            loc = prefix + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path
            )
            problems.append((loc, err.message))
    return problems
