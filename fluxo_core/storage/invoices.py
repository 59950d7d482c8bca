"""Invoices: an account's usage of one UTC month, as lines; issued ones frozen and numbered.

A draft is never stored: it is read from the ledger whenever asked (:meth:`InvoiceStore.draft`),
so it always reflects the ledger. Issuing (:meth:`InvoiceStore.issue`) reads the same lines and
writes them, with the invoice's number, in ONE transaction: what is issued is exactly what the
ledger held at that moment, and nothing changes it afterwards (a second issue of the period is
refused; there is no update). Numbers are per account and sequential: ``ACME-2026-0001`` is
ACME's first invoice (issued for a period of 2026), ``ACME-2027-0002`` its second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fluxo_core.errors import ConflictError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.ledger import UsageFilter, _filtered, _with_jobs, month_bounds
from fluxo_core.storage.tables import invoice_lines, invoices, jobs, usage_records

__all__ = ["InvoiceHeader", "InvoiceLine", "InvoiceLines", "InvoiceStore", "invoice_prefix"]

LineKind = Literal["usage", "credit"]


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line: the usage of one service in one workflow (``None``: direct calls) and one
    currency, or one credit entry (``description``: its reason; ``service``: ``credit``)."""

    kind: LineKind
    service: str
    workflow: str | None
    currency: str
    calls: int
    units: int
    amount_micros: int
    description: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceHeader:
    """An issued invoice's identity."""

    account_id: str
    period: str
    number: str
    seq: int
    issued_at: float
    issued_by: str


@dataclass(frozen=True, slots=True)
class InvoiceLines:
    """An invoice of ``account_id`` for ``period``: issued (``header`` set) or a draft."""

    account_id: str
    period: str
    lines: list[InvoiceLine]
    header: InvoiceHeader | None = None


def invoice_prefix(account_id: str) -> str:
    """The number prefix of an account: its id in capitals, letters and digits kept."""
    return re.sub(r"[^A-Z0-9]+", "-", account_id.upper()).strip("-") or "ACCOUNT"


class InvoiceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def draft(self, account_id: str, period: str) -> InvoiceLines:
        """The lines the ledger holds now for ``account_id`` in ``period`` (``YYYY-MM``)."""
        lines = await self.db.read(lambda conn: _ledger_lines(conn, account_id, period))
        return InvoiceLines(account_id, period, lines)

    async def issued(self, account_id: str, period: str) -> InvoiceLines | None:
        """The issued invoice of ``account_id`` for ``period``; ``None`` if none was issued."""
        return await self.db.read(lambda conn: _issued(conn, account_id, period=period))

    async def by_number(self, account_id: str, number: str) -> InvoiceLines | None:
        """The issued invoice numbered ``number``, if it is ``account_id``'s (else ``None``)."""
        return await self.db.read(lambda conn: _issued(conn, account_id, number=number))

    async def list(self, account_id: str) -> list[InvoiceHeader]:
        """The account's issued invoices, by period."""
        query = (
            sa.select(*_HEADER)
            .where(invoices.c.account_id == account_id)
            .order_by(invoices.c.period)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [InvoiceHeader(*r) for r in rows]

    async def issue(
        self, account_id: str, period: str, *, issued_by: str, now: float
    ) -> InvoiceLines:
        """Freeze the ledger's lines of ``period`` as the account's next numbered invoice.

        Raises :class:`ConflictError` if the period's invoice was issued already (an issued
        invoice never changes: correct it with a credit in an open period)."""

        def run(tx: Transaction) -> InvoiceLines:
            conn = tx.conn
            existing = _issued(conn, account_id, period=period)
            if existing is not None and existing.header is not None:
                raise _already_issued(existing.header)
            lines = _ledger_lines(conn, account_id, period)
            last = conn.scalar(
                sa.select(sa.func.max(invoices.c.seq)).where(invoices.c.account_id == account_id)
            )
            seq = int(last or 0) + 1
            number = f"{invoice_prefix(account_id)}-{period[:4]}-{seq:04d}"
            header = InvoiceHeader(account_id, period, number, seq, now, issued_by)
            tx.execute(
                sa.insert(invoices).values(
                    account_id=account_id,
                    period=period,
                    number=number,
                    seq=seq,
                    issued_at=now,
                    issued_by=issued_by,
                )
            )
            if lines:
                tx.execute(
                    sa.insert(invoice_lines),
                    [
                        {
                            "account_id": account_id,
                            "period": period,
                            "idx": idx,
                            "kind": line.kind,
                            "description": line.description,
                            "service": line.service,
                            "workflow": line.workflow,
                            "currency": line.currency,
                            "calls": line.calls,
                            "units": line.units,
                            "amount_micros": line.amount_micros,
                        }
                        for idx, line in enumerate(lines)
                    ],
                )
            return InvoiceLines(account_id, period, lines, header)

        try:
            return await self.db.transact(run)
        except ConflictError:
            # Two issuers at once: the loser's insert hit the primary key; say who won.
            won = await self.issued(account_id, period)
            if won is not None and won.header is not None:
                raise _already_issued(won.header) from None
            raise
        except sa_exc.IntegrityError as exc:  # pragma: no cover - mapped by the database
            raise ConflictError(f"invoice of {period} could not be issued: {exc.orig}") from exc


_HEADER = (
    invoices.c.account_id,
    invoices.c.period,
    invoices.c.number,
    invoices.c.seq,
    invoices.c.issued_at,
    invoices.c.issued_by,
)
_LINE = (
    invoice_lines.c.kind,
    invoice_lines.c.service,
    invoice_lines.c.workflow,
    invoice_lines.c.currency,
    invoice_lines.c.calls,
    invoice_lines.c.units,
    invoice_lines.c.amount_micros,
    invoice_lines.c.description,
)


def _already_issued(header: InvoiceHeader) -> ConflictError:
    return ConflictError(
        f"invoice {header.number} of {header.period} is issued and never changes; correct it "
        "with a credit ('fluxo billing credit'), which the next invoice counts",
        number=header.number,
        period=header.period,
    )


def _issued(
    conn: sa.Connection, account_id: str, *, period: str | None = None, number: str | None = None
) -> InvoiceLines | None:
    query = sa.select(*_HEADER).where(invoices.c.account_id == account_id)
    if period is not None:
        query = query.where(invoices.c.period == period)
    if number is not None:
        query = query.where(invoices.c.number == number)
    row = conn.execute(query).first()
    if row is None:
        return None
    header = InvoiceHeader(*row)
    rows = conn.execute(
        sa.select(*_LINE)
        .where(
            invoice_lines.c.account_id == account_id,
            invoice_lines.c.period == header.period,
        )
        .order_by(invoice_lines.c.idx)
    ).all()
    lines = [
        InvoiceLine(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]), r[7]) for r in rows
    ]
    return InvoiceLines(account_id, header.period, lines, header)


def _ledger_lines(conn: sa.Connection, account_id: str, period: str) -> list[InvoiceLine]:
    """The usage of the period grouped by service, workflow and currency (sorted), then each
    credit entry of the period (in the order they were written)."""
    since, until = month_bounds(period)
    where = UsageFilter(since=since, until=until)
    u = usage_records
    is_call = sa.case((u.c.outcome == "retried", 0), else_=1)
    usage: Any = sa.select(
        u.c.service,
        jobs.c.workflow,
        u.c.currency,
        sa.func.sum(is_call),
        sa.func.sum(u.c.units),
        sa.func.sum(u.c.amount_micros),
    ).select_from(_with_jobs())
    usage = _filtered(usage, account_id, where).where(u.c.outcome != "credit")
    usage = usage.group_by(u.c.service, jobs.c.workflow, u.c.currency)
    # PostgreSQL sums BIGINT as NUMERIC (a Decimal here): back to exact integers. Sorted here,
    # not in SQL: the databases order NULL (direct calls' workflow) differently.
    lines = sorted(
        (
            InvoiceLine("usage", r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]))
            for r in conn.execute(usage)
        ),
        key=lambda line: (line.service, line.workflow or "", line.currency),
    )
    credits: Any = sa.select(u.c.service, u.c.currency, u.c.amount_micros, u.c.reason)
    credits = _filtered(credits, account_id, where).where(u.c.outcome == "credit")
    lines.extend(
        InvoiceLine("credit", r[0], None, r[1], 0, 0, int(r[2]), r[3])
        for r in conn.execute(credits.order_by(u.c.id))
    )
    return lines
