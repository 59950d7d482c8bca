"""Three small priced services for the product demo and the tests: an order pipeline.

``parse-order`` validates and normalizes an order, ``enrich-customer`` adds the customer's tier and
discount from a reference table, ``notify-log`` writes a notification line to the log. Chained, they
make the demo workflow ``parse-order -> enrich-customer -> notify-log``.

Money amounts are decimal strings with two places (``"25.00"``), never floats.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Any

from fluxo_core.errors import ServiceError
from fluxo_core.ir import Payload
from service_runtime.sdk import Price, Service, service

__all__ = [
    "DEMO_CUSTOMERS",
    "ORDER_SCHEMA",
    "CustomerProfile",
    "enrich_customer",
    "make_enrich_customer",
    "make_notify_log",
    "notify_log",
    "parse_order",
]

_CENT = Decimal("0.01")
_DECIMAL = r"^[0-9]+(\.[0-9]+)?$"
_EMAIL = r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"  # stray spaces are trimmed

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "customer", "items"],
    "properties": {
        "id": {"type": ["string", "integer"], "minLength": 1, "maxLength": 64},
        "customer": {
            "type": "object",
            "required": ["email"],
            "properties": {
                "email": {"type": "string", "pattern": _EMAIL, "maxLength": 254},
                "name": {"type": "string", "maxLength": 200},
            },
        },
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 500,
            "items": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string", "minLength": 1, "maxLength": 64},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 100_000},
                    "price": {
                        "anyOf": [
                            {"type": "number", "minimum": 0},
                            {"type": "string", "pattern": _DECIMAL},
                        ]
                    },
                },
            },
        },
    },
}


def _money(value: Decimal) -> str:
    return str(value.quantize(_CENT, rounding=ROUND_HALF_UP))


def _each(payload: Payload, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Payload:
    """Apply ``fn`` to one object, or to each object of an array payload."""
    if isinstance(payload, list):
        return [fn(item) for item in payload]
    return fn(payload)


# --- parse-order -------------------------------------------------------------------------------


def _normalize_order(order: dict[str, Any]) -> dict[str, Any]:
    lines: dict[tuple[str, Decimal], int] = {}
    for item in order["items"]:
        # str() first: Decimal(0.1) would carry the float's binary error into the money.
        key = (item["sku"].strip().upper(), Decimal(str(item["price"])))
        lines[key] = lines.get(key, 0) + item["qty"]
    normalized = [
        {
            "sku": sku,
            "qty": qty,
            "unit_price": _money(price),
            "amount": _money(price * qty),
        }
        for (sku, price), qty in lines.items()
    ]
    customer = order["customer"]
    out_customer: dict[str, Any] = {"email": customer["email"].strip().lower()}
    if customer.get("name"):
        out_customer["name"] = customer["name"].strip()
    return {
        "order_id": str(order["id"]),
        "customer": out_customer,
        "currency": order.get("currency", "EUR"),
        "lines": normalized,
        "item_count": sum(line["qty"] for line in normalized),
        "subtotal": _money(sum((price * qty for (_, price), qty in lines.items()), Decimal(0))),
    }


@service(
    "parse-order",
    version="1",
    input_schema=ORDER_SCHEMA,
    price=Price(per_call="0.002"),
    inline=True,
)
def parse_order(payload: Payload) -> Payload:
    """Validate an order and normalize it: merged lines, line amounts, item count and subtotal."""
    # The runtime has checked ORDER_SCHEMA before the call, so the fields are there and typed.
    return _each(payload, _normalize_order)


# --- enrich-customer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerProfile:
    """What the reference table knows about a customer."""

    tier: str
    discount_rate: Decimal
    name: str | None = None
    # Orders of a customer on credit hold are refused until finance releases the hold.
    on_hold: bool = False


DEFAULT_PROFILE = CustomerProfile(tier="standard", discount_rate=Decimal("0"))

DEMO_CUSTOMERS: Mapping[str, CustomerProfile] = MappingProxyType(
    {
        "ada@example.com": CustomerProfile("gold", Decimal("0.10"), "Ada Lovelace"),
        "grace@example.com": CustomerProfile("silver", Decimal("0.05"), "Grace Hopper"),
        "alan@example.com": CustomerProfile("standard", Decimal("0"), "Alan Turing"),
        "mallory@example.com": CustomerProfile(
            "standard", Decimal("0"), "Mallory Moody", on_hold=True
        ),
    }
)
"""The demo reference table, keyed by lowercase email."""

_ENRICH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["customer"],
    "properties": {
        "customer": {
            "type": "object",
            "required": ["email"],
            "properties": {"email": {"type": "string", "minLength": 3}},
        },
        "subtotal": {"type": "string", "pattern": _DECIMAL},
    },
}


def make_enrich_customer(customers: Mapping[str, CustomerProfile] = DEMO_CUSTOMERS) -> Service:
    """The ``enrich-customer`` service over a reference table keyed by lowercase email.

    It adds ``customer.tier`` and ``customer.known`` (and the table's name when the input has none);
    when the input has a ``subtotal`` it also adds ``discount_rate``, ``discount`` and ``total``.
    Unknown customers get the ``standard`` tier without discount; a customer on credit hold
    fails the call (not retryable).
    """
    table = {email.lower(): profile for email, profile in customers.items()}

    def enrich(order: dict[str, Any]) -> dict[str, Any]:
        email = order["customer"]["email"].strip().lower()
        profile = table.get(email)
        if profile is not None and profile.on_hold:
            # Not retryable: asking again changes nothing until the hold is released.
            raise ServiceError(
                f"customer {email} is on credit hold; release the hold in the customer table "
                "before processing their orders",
                retryable=False,
            )
        known = profile is not None
        profile = profile or DEFAULT_PROFILE
        customer = {**order["customer"], "email": email, "tier": profile.tier, "known": known}
        if profile.name and not customer.get("name"):
            customer["name"] = profile.name
        out = {**order, "customer": customer}
        if "subtotal" in order:
            subtotal = Decimal(order["subtotal"])
            discount = (subtotal * profile.discount_rate).quantize(_CENT, rounding=ROUND_HALF_UP)
            out.update(
                discount_rate=str(profile.discount_rate),
                discount=_money(discount),
                total=_money(subtotal - discount),
            )
        return out

    def handler(payload: Payload) -> Payload:
        return _each(payload, enrich)

    return Service(
        name="enrich-customer",
        version="1",
        handler=handler,
        description="Add the customer's tier and discount from the reference table.",
        input_schema=_ENRICH_SCHEMA,
        price=Price(per_call="0.001"),
        inline=True,
    )


enrich_customer: Service = make_enrich_customer()


# --- notify-log --------------------------------------------------------------------------------


def _notification(item: dict[str, Any]) -> str:
    if isinstance(item.get("message"), str):
        text = item["message"]
    elif "order_id" in item:
        email = item.get("customer", {}).get("email", "unknown customer")
        amount = item.get("total", item.get("subtotal", "?"))
        text = f"order {item['order_id']} for {email}: total {amount} {item.get('currency', '')}"
    else:
        text = json.dumps(item, sort_keys=True, default=str)
    # One notification, one log line: a payload must not be able to forge extra lines.
    return " ".join(text.split())[:1000]


def make_notify_log(logger: logging.Logger | None = None) -> Service:
    """The ``notify-log`` service: one INFO line per item on ``logger`` (``fluxo.demo.notify``).

    The line is the item's ``message``, or a summary of an order. Priced per notified item.
    """
    log = logger or logging.getLogger("fluxo.demo.notify")

    def notify(item: dict[str, Any]) -> dict[str, Any]:
        line = _notification(item)
        log.info("notification: %s", line)
        result: dict[str, Any] = {"notified": True, "channel": "log", "message": line}
        if "order_id" in item:
            result["order_id"] = item["order_id"]
        return result

    def handler(payload: Payload) -> Payload:
        return _each(payload, notify)

    return Service(
        name="notify-log",
        version="1",
        handler=handler,
        description="Write a notification line to the log.",
        input_schema={"type": "object"},
        price=Price(per_item="0.0005"),
        # Not inline: log handlers may write to files or sockets.
        inline=False,
    )


notify_log: Service = make_notify_log()
