"""The service catalog: which services exist, with their contract and the terms in force.

Processes that run services publish them to the ``services`` table; any process (the gateway of an
API server, a CLI) resolves ``name`` or ``name@version`` from there. Services declared in this process
resolve without a query. What the catalog answers carries the terms in force: those the platform
applied (:mod:`service_runtime.terms`) over those the service's code declares, and says which is
which (``ServiceInfo.sources``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fluxo_core.errors import PayloadSchemaError, UnknownServiceError
from fluxo_core.storage import Database, ServiceRow, ServiceStore
from service_runtime.sdk import (
    MICROS,
    Price,
    Service,
    _schema_problems,
    input_queue,
    output_queue,
)
from service_runtime.terms import DECLARED, Applied, ServiceTerms

__all__ = ["ServiceCatalog", "ServiceInfo"]

_CACHE_TTL_S = 5.0


@dataclass(frozen=True)
class ServiceInfo:
    """What callers know about a service: enough to admit, validate, enqueue and price a call."""

    name: str
    version: str
    description: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    price: Price
    max_attempts: int
    timeout_s: float
    # Where each term comes from: "applied" (a Service resource) or "declared" (the code).
    sources: Mapping[str, str] = field(
        default_factory=lambda: dict.fromkeys(("price", "max_attempts", "timeout_s"), DECLARED)
    )

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def input_queue(self) -> str:
        return input_queue(self.name, self.version)

    @property
    def output_queue(self) -> str:
        return output_queue(self.name, self.version)

    def validate_payload(self, payload: Any) -> None:
        """Check a call's payload against ``input_schema``; raise with every located problem."""
        if self.input_schema is None:
            return
        problems = _schema_problems(self.input_schema, payload)
        if problems:
            raise PayloadSchemaError(
                f"payload does not match the input schema of service {self.ref}",
                problems=problems,
                service=self.ref,
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "price": {
                "per_call": str(self.price.per_call),
                "per_item": str(self.price.per_item),
                "currency": self.price.currency,
                "policy": self.price.policy(),
            },
            "max_attempts": self.max_attempts,
            "timeout_s": self.timeout_s,
            "terms": dict(self.sources),
        }

    def under(self, applied: Applied) -> ServiceInfo:
        """This service (as its code declares it) under the platform's ``applied`` terms."""
        return dataclasses.replace(
            self,
            price=applied.price_over(self.price),
            max_attempts=(
                self.max_attempts if applied.max_attempts is None else applied.max_attempts
            ),
            timeout_s=self.timeout_s if applied.timeout_s is None else applied.timeout_s,
            sources=applied.sources(),
        )

    @classmethod
    def of(cls, svc: Service) -> ServiceInfo:
        return cls(
            name=svc.name,
            version=svc.version,
            description=svc.description,
            input_schema=svc.input_schema,
            output_schema=svc.output_schema,
            price=svc.price,
            max_attempts=svc.retry.max_attempts,
            timeout_s=svc.timeout_s,
        )


class ServiceCatalog:
    """``terms``: the applied terms, as the runtime shares them (its own otherwise)."""

    def __init__(self, db: Database, terms: ServiceTerms | None = None) -> None:
        self.db = db
        self.terms = terms if terms is not None else ServiceTerms(db)
        self._store = ServiceStore(db)
        self._local: dict[str, ServiceInfo] = {}
        self._cache: dict[str, tuple[float, ServiceInfo]] = {}
        self._in_force_memo: dict[str, tuple[ServiceInfo, int, ServiceInfo]] = {}

    async def publish(self, services: Iterable[Service]) -> None:
        """Record these services (upsert), so every process can resolve and call them."""
        now = time.time()
        rows = []
        for svc in services:
            info = ServiceInfo.of(svc)
            self._local[info.ref] = info
            self._local.setdefault(info.name, info)
            rows.append(
                ServiceRow(
                    name=svc.name,
                    version=svc.version,
                    description=svc.description,
                    input_schema=svc.input_schema,
                    output_schema=svc.output_schema,
                    price_per_call_micros=svc.price.per_call_micros,
                    price_per_item_micros=svc.price.per_item_micros,
                    currency=svc.price.currency,
                    max_attempts=svc.retry.max_attempts,
                    timeout_s=svc.timeout_s,
                    updated_at=now,
                    bill_failed=svc.price.bill_failed,
                    bill_retried=svc.price.bill_retried,
                    bill_cancelled=svc.price.bill_cancelled,
                )
            )
        await self._store.publish(rows)

    async def resolve(self, ref: str) -> ServiceInfo:
        """``name`` (newest published version) or ``name@version``, under the terms in force."""
        await self.terms.refresh()
        return self._in_force(await self._declared(ref))

    async def list(self) -> list[ServiceInfo]:
        """Every published service, under the terms in force."""
        await self.terms.refresh()
        return [self._in_force(_info_from_row(r)) for r in await self._store.all()]

    def _in_force(self, info: ServiceInfo) -> ServiceInfo:
        applied = self.terms.applied(info.name, info.version)
        if applied.empty:
            return info
        # Kept until the terms or the declared info change: the gateway resolves every call.
        generation = self.terms.generation
        memo = self._in_force_memo.get(info.ref)
        if memo is not None and memo[0] is info and memo[1] == generation:
            return memo[2]
        effective = info.under(applied)
        self._in_force_memo[info.ref] = (info, generation, effective)
        return effective

    async def _declared(self, ref: str) -> ServiceInfo:
        local = self._local.get(ref)
        if local is not None:
            return local
        cached = self._cache.get(ref)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        name, _, version = ref.partition("@")
        row = await self._store.find(name, version or None)
        if row is None:
            known = sorted({s.name for s in await self.list()})
            hint = f"known services: {', '.join(known)}" if known else "no service is published yet"
            raise UnknownServiceError(f"no service named {ref!r} ({hint})", service=ref)
        info = _info_from_row(row)
        self._cache[ref] = (time.monotonic() + _CACHE_TTL_S, info)
        return info


def _info_from_row(row: ServiceRow) -> ServiceInfo:
    """The one mapping of a published service to what callers know of it."""
    return ServiceInfo(
        name=row.name,
        version=row.version,
        description=row.description,
        input_schema=row.input_schema,
        output_schema=row.output_schema,
        price=Price(
            per_call=Decimal(row.price_per_call_micros) / MICROS,
            per_item=Decimal(row.price_per_item_micros) / MICROS,
            currency=row.currency,
            bill_failed=row.bill_failed,
            bill_retried=row.bill_retried,
            bill_cancelled=row.bill_cancelled,
        ),
        max_attempts=row.max_attempts,
        timeout_s=row.timeout_s,
    )
