"""The terms in force for a service: what the platform applied, over what its code declares.

A Service resource (platform admin) sets a service's price and limits; the Service controller
keeps them in the ``service_terms`` table (:class:`~fluxo_core.storage.ServiceTermsStore`), apart
from the ``services`` row its code publishes at start, which therefore never resets them.
Every process that prices or runs calls reads them through :class:`ServiceTerms`: the workers
(the price Metering charges, the timeout of a handler run, the attempts before dead-lettering)
and the catalog (what ``fluxo services`` shows, and the gateway enqueues with).

Which terms win, field by field (the price counts as one field: per call, per item and currency
together): the terms applied to the call's version, then those applied to every version, then
the code's. :class:`ServiceTerms` reloads them at most every ``ttl_s`` (one second by default),
so a change is in force everywhere within about a second without a read per call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.storage import Database, ServiceTermsStore, TermsRow
from service_runtime.sdk import MICROS, Price, Service

__all__ = ["APPLIED", "DECLARED", "Applied", "ServiceTerms"]

APPLIED = "applied"
DECLARED = "declared"


@dataclass(frozen=True, slots=True)
class Applied:
    """The applied terms of one service version, merged (``None``: the code's value holds)."""

    price: tuple[int, int, str] | None = None  # per-call and per-item micros, currency
    max_attempts: int | None = None
    timeout_s: float | None = None

    @property
    def empty(self) -> bool:
        """Nothing applied: the code's terms hold."""
        return self.price is None and self.max_attempts is None and self.timeout_s is None

    def price_over(self, declared: Price) -> Price:
        """The price in force: the applied one with the code's price policy (which failed,
        retried and cancelled calls are billed), or the declared one."""
        if self.price is None:
            return declared
        per_call, per_item, currency = self.price
        return dataclasses.replace(
            declared,
            per_call=Decimal(per_call) / MICROS,
            per_item=Decimal(per_item) / MICROS,
            currency=currency,
        )

    def service(self, svc: Service) -> Service:
        """``svc`` as it runs under these terms (its handler and contract unchanged)."""
        retry = svc.retry
        if self.max_attempts is not None:
            retry = dataclasses.replace(retry, max_attempts=self.max_attempts)
        return dataclasses.replace(
            svc,
            price=self.price_over(svc.price),
            retry=retry,
            timeout_s=svc.timeout_s if self.timeout_s is None else self.timeout_s,
        )

    def sources(self) -> dict[str, str]:
        """Where each term comes from: ``applied`` (a Service resource) or ``declared``."""
        return {
            "price": DECLARED if self.price is None else APPLIED,
            "max_attempts": DECLARED if self.max_attempts is None else APPLIED,
            "timeout_s": DECLARED if self.timeout_s is None else APPLIED,
        }


NOTHING_APPLIED = Applied()


class ServiceTerms:
    """The applied terms as this process last read them: at most ``ttl_s`` old after
    :meth:`refresh` (which reads the table only once they are that old).

    ``generation`` grows whenever what was read differs from before, so a reader can keep
    what it derives from the terms (a worker's services) until it changes.
    """

    def __init__(self, db: Database, *, ttl_s: float = 1.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = ServiceTermsStore(db)
        self.ttl_s = ttl_s
        self.clock = clock
        self.generation = 0
        self._rows: dict[tuple[str, str | None], TermsRow] = {}
        self._names: frozenset[str] = frozenset()
        self._merged: dict[tuple[str, str], Applied] = {}
        self._expires = float("-inf")

    @property
    def stale(self) -> bool:
        return self.clock.monotonic() >= self._expires

    def invalidate(self) -> None:
        """Read again at the next :meth:`refresh` (the terms were changed in this process)."""
        self._expires = float("-inf")

    async def refresh(self) -> None:
        if self.stale:
            self._load(await self.store.all())

    def _load(self, rows: list[TermsRow]) -> None:
        by_key = {(r.name, r.version): r for r in rows}
        if by_key != self._rows:
            self._rows = by_key
            self._names = frozenset(r.name for r in rows)
            self._merged = {}
            self.generation += 1
        self._expires = self.clock.monotonic() + self.ttl_s

    def applied(self, name: str, version: str) -> Applied:
        """The applied terms of ``name@version`` (as last read); :data:`NOTHING_APPLIED`
        when the platform set none."""
        if name not in self._names:  # the common case: costs one set lookup
            return NOTHING_APPLIED
        key = (name, version)
        merged = self._merged.get(key)
        if merged is None:
            merged = self._merged[key] = _merge(
                self._rows.get((name, version)), self._rows.get((name, None))
            )
        return merged


def _merge(exact: TermsRow | None, every: TermsRow | None) -> Applied:
    """Field by field: the version's own terms, then those of every version."""

    def first(field: str) -> int | float | None:
        for row in (exact, every):
            if row is not None and getattr(row, field) is not None:
                value: int | float = getattr(row, field)
                return value
        return None

    price = None
    for row in (exact, every):
        if row is not None and row.price_per_call_micros is not None:
            price = (
                row.price_per_call_micros,
                row.price_per_item_micros or 0,
                row.currency or "EUR",
            )
            break
    max_attempts = first("max_attempts")
    return Applied(
        price=price,
        max_attempts=None if max_attempts is None else int(max_attempts),
        timeout_s=first("timeout_s"),
    )
