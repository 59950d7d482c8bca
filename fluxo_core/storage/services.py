"""The service table: which services exist, with the contract and terms their code declares.

Processes that run services publish them here (an upsert per name and version); any process
resolves a name from here. The terms the platform applies on top (Service resources) live
apart, in :mod:`fluxo_core.storage.service_terms`: a publish never resets them. Rows are
:class:`ServiceRow`, its JSON schemas decoded, mapped from the table in one place
(:func:`_service_of`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import services

__all__ = ["ServiceRow", "ServiceStore"]


@dataclass(slots=True, frozen=True)
class ServiceRow:
    """A published service; prices are integer micro-units (1e-6) of ``currency``."""

    name: str
    version: str
    description: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    price_per_call_micros: int
    price_per_item_micros: int
    currency: str
    max_attempts: int
    timeout_s: float
    updated_at: float
    # The price policy (see service_runtime's Price): billed outcomes besides success.
    bill_failed: bool = False
    bill_retried: bool = False
    bill_cancelled: bool = False


class ServiceStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        key = (services.c.name == sa.bindparam("key_name")) & (
            services.c.version == sa.bindparam("key_version")
        )
        self._update = sa.update(services).where(key)
        self._insert = sa.insert(services)
        newest = services.c.updated_at.desc()
        self._by_name = (
            sa.select(services).where(services.c.name == sa.bindparam("n")).order_by(newest)
        ).limit(1)
        self._by_ref = (
            sa.select(services)
            .where(services.c.name == sa.bindparam("n"), services.c.version == sa.bindparam("v"))
            .order_by(newest)
            .limit(1)
        )
        self._all = sa.select(services).order_by(services.c.name, services.c.version)

    async def publish(self, rows: Sequence[ServiceRow]) -> None:
        """Insert or replace these services (by name and version), in one transaction."""
        values = [_values_of(row) for row in rows]

        def upsert(tx: Transaction) -> None:
            for row in values:
                key = {"key_name": row["name"], "key_version": row["version"]}
                if tx.execute(self._update.values(**row), key).rowcount == 0:
                    tx.execute(self._insert, row)

        await self.db.transact(upsert)

    async def find(self, name: str, version: str | None = None) -> ServiceRow | None:
        """``name@version``, or the most recently published version of ``name``; None if none."""
        query = self._by_ref if version else self._by_name
        params = {"n": name, "v": version}
        row = await self.db.read(lambda conn: conn.execute(query, params).first())
        return None if row is None else _service_of(row)

    async def all(self) -> list[ServiceRow]:
        """Every published service, by name and version."""
        rows = await self.db.read(lambda conn: conn.execute(self._all).all())
        return [_service_of(r) for r in rows]

    async def versions(self, name: str, version: str | None = None) -> list[str]:
        """The published versions of ``name`` (only ``version``, if given and published)."""
        key = services.c.name == name
        if version is not None:
            key = key & (services.c.version == version)
        query = sa.select(services.c.version).where(key).order_by(services.c.version)
        return await self.db.read(lambda conn: [str(v) for v in conn.scalars(query)])


def _values_of(row: ServiceRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": row.version,
        "description": row.description,
        "input_schema": json.dumps(row.input_schema) if row.input_schema else None,
        "output_schema": json.dumps(row.output_schema) if row.output_schema else None,
        "price_per_call_micros": row.price_per_call_micros,
        "price_per_item_micros": row.price_per_item_micros,
        "currency": row.currency,
        "max_attempts": row.max_attempts,
        "timeout_s": row.timeout_s,
        "updated_at": row.updated_at,
        "bill_failed": row.bill_failed,
        "bill_retried": row.bill_retried,
        "bill_cancelled": row.bill_cancelled,
    }


def _service_of(r: Any) -> ServiceRow:
    """The one mapping from a ``services`` row to a ServiceRow."""
    return ServiceRow(
        name=r.name,
        version=r.version,
        description=r.description,
        input_schema=json.loads(r.input_schema) if r.input_schema else None,
        output_schema=json.loads(r.output_schema) if r.output_schema else None,
        price_per_call_micros=r.price_per_call_micros,
        price_per_item_micros=r.price_per_item_micros,
        currency=r.currency,
        max_attempts=r.max_attempts,
        timeout_s=r.timeout_s,
        updated_at=r.updated_at,
        bill_failed=bool(r.bill_failed),
        bill_retried=bool(r.bill_retried),
        bill_cancelled=bool(r.bill_cancelled),
    )
