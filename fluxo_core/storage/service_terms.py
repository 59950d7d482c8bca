"""The terms the platform applied to services (Service resources), apart from the code's.

A service's code declares its price and limits, and the process that runs it publishes them in
the ``services`` table at every start. What the platform admin applies is kept here instead, so
a publish never overwrites it and a delete of the resource gives the code's terms back. Rows are
:class:`TermsRow`; a ``None`` field leaves the code's value in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import service_terms

__all__ = ["ALL_VERSIONS", "ServiceTermsStore", "TermsRow"]

# The `version` of terms that hold for every version of the service (no version matches it:
# versions are letters, digits and ``._-``).
ALL_VERSIONS = "*"


@dataclass(frozen=True, slots=True)
class TermsRow:
    """Applied terms of ``name`` at ``version`` (``None``: every version). A price is set
    whole (per call, per item and currency) or not at all; prices in micro-units."""

    name: str
    version: str | None
    price_per_call_micros: int | None = None
    price_per_item_micros: int | None = None
    currency: str | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    applied_at: float = 0.0


class ServiceTermsStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._all = sa.select(service_terms).order_by(service_terms.c.name, service_terms.c.version)

    async def replace(self, name: str, row: TermsRow) -> None:
        """Make ``row`` the only applied terms of service ``name`` (one Service resource
        per service name: a resource whose spec moves to another version leaves no row
        behind)."""

        def run(tx: Transaction) -> None:
            tx.execute(sa.delete(service_terms).where(service_terms.c.name == name))
            tx.execute(sa.insert(service_terms), _values_of(row))

        await self.db.transact(run)

    async def remove(self, name: str) -> int:
        """Remove the applied terms of service ``name`` (its code's terms hold again); returns
        how many rows went."""

        def run(tx: Transaction) -> int:
            result = tx.execute(sa.delete(service_terms).where(service_terms.c.name == name))
            return int(result.rowcount or 0)

        return await self.db.transact(run)

    async def all(self) -> list[TermsRow]:
        """Every applied term, by name and version (a few rows per service at most)."""
        rows = await self.db.read(lambda conn: conn.execute(self._all).all())
        return [_terms_of(r) for r in rows]


def _values_of(row: TermsRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": ALL_VERSIONS if row.version is None else row.version,
        "price_per_call_micros": row.price_per_call_micros,
        "price_per_item_micros": row.price_per_item_micros,
        "currency": row.currency,
        "max_attempts": row.max_attempts,
        "timeout_s": row.timeout_s,
        "applied_at": row.applied_at,
    }


def _terms_of(r: Any) -> TermsRow:
    """The one mapping from a ``service_terms`` row to a TermsRow."""
    return TermsRow(
        name=r.name,
        version=None if r.version == ALL_VERSIONS else r.version,
        price_per_call_micros=r.price_per_call_micros,
        price_per_item_micros=r.price_per_item_micros,
        currency=r.currency,
        max_attempts=r.max_attempts,
        timeout_s=r.timeout_s,
        applied_at=r.applied_at,
    )
