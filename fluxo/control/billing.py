"""Billing: credit entries, invoices (draft -> issued), and their JSON and CSV forms.

Shared by the API routes (:mod:`fluxo.api.billing`) and ``fluxo billing`` on the local
database, so both check and answer the same way. The printable HTML page is the API's
(:mod:`fluxo.api.invoice_html`): templates stay out of the control plane.

- A **credit** is a ledger entry of its own with a negative amount, a reason and who made it;
  the ledger is never edited. It counts in the usage sums and in the invoice of the period it
  was made in.
- An **invoice** is an account's usage of one calendar month in UTC (``2026-11``): lines per
  service and workflow (and currency; amounts of different currencies are never added up),
  then one line per credit. A *draft* is read from the ledger whenever asked; *issuing* freezes
  its lines under the account's next number (``ACME-2026-0001``). Only a month that has ended
  can be issued, and an issued invoice never changes (issuing it again is refused).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fluxo.control.usage import decimal_text
from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import ConflictError, NotFoundError, ValidationError
from fluxo_core.storage import Database, InvoiceLines, InvoiceStore, UsageLedger
from fluxo_core.storage.invoices import InvoiceHeader
from fluxo_core.storage.ledger import UsageRecord, month_bounds, new_credit

__all__ = [
    "Billing",
    "CreditRequest",
    "header_json",
    "invoice_csv",
    "invoice_json",
    "money_text",
    "parse_credit",
    "parse_period",
]

_CURRENCY = re.compile(r"[A-Z]{3}")
# What is meant as a month (checked by parse_period); anything else is an invoice number.
_PERIOD_LIKE = re.compile(r"[0-9]{4}-[0-9]{1,2}")
_MAX_REASON = 500
_MAX_CREDIT = Decimal(10) ** 12  # a bound that keeps micros well inside BIGINT


@dataclass(frozen=True, slots=True)
class CreditRequest:
    """A checked credit: ``amount_micros`` (above zero) to take off, why, in which currency."""

    amount_micros: int
    currency: str
    reason: str
    service: str


def parse_period(text: str, where: str = "path.period") -> str:
    """``YYYY-MM`` checked, or :class:`ValidationError` naming ``where``."""
    try:
        month_bounds(text)
    except ValueError:
        raise ValidationError(
            f"{text[:20]!r} is not a period: give a UTC month YYYY-MM, e.g. 2026-11",
            problems=[(where, "expected a UTC month YYYY-MM")],
        ) from None
    return text


def parse_credit(body: Any) -> CreditRequest:
    """Check a credit's body: ``{"amount": "12.50", "currency": "EUR", "reason": "...",
    "service": "..."}`` (``service`` optional: what the credit is for; default ``credit``).

    One error lists every problem. The account is always the caller's, so the body names none."""
    problems: list[tuple[str, str]] = []
    if not isinstance(body, dict):
        raise ValidationError(
            "a credit is a JSON object with amount, currency and reason",
            problems=[("body", "expected an object")],
        )
    known = {"amount", "currency", "reason", "service"}
    problems.extend((f"body.{k}", "unknown field") for k in sorted(set(body) - known))
    amount_micros = 0
    raw = body.get("amount")
    try:
        amount = Decimal(raw) if isinstance(raw, str) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        problems.append(("body.amount", 'a decimal string above zero, e.g. "12.50"'))
    elif not (0 < amount < _MAX_CREDIT):
        problems.append(("body.amount", "must be above zero (a credit takes it off)"))
    elif amount.scaleb(6) != amount.scaleb(6).to_integral_value():
        problems.append(("body.amount", "at most six decimal places"))
    else:
        amount_micros = int(amount.scaleb(6))
    currency = body.get("currency", "EUR")
    if not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        problems.append(("body.currency", "an ISO 4217 code in capitals, e.g. EUR"))
    reason = body.get("reason")
    if not (isinstance(reason, str) and reason.strip() and len(reason) <= _MAX_REASON):
        problems.append(("body.reason", f"why the credit is given: 1 to {_MAX_REASON} characters"))
    service = body.get("service", "credit")
    if not (isinstance(service, str) and 0 < len(service) <= 100):
        problems.append(("body.service", "a service name, up to 100 characters"))
    if problems:
        raise ValidationError(
            "bad credit: " + "; ".join(sorted({where for where, _ in problems})),
            problems=problems,
        )
    return CreditRequest(amount_micros, str(currency), str(reason).strip(), str(service))


class Billing:
    """Credits and invoices of accounts, over the ledger of ``db``."""

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.ledger = UsageLedger(db)
        self.invoices = InvoiceStore(db)
        self.clock = clock

    async def credit(self, account_id: str, created_by: str, request: CreditRequest) -> UsageRecord:
        """Append a credit entry to the account's ledger, dated now."""
        record = new_credit(
            account_id,
            amount_micros=request.amount_micros,
            currency=request.currency,
            reason=request.reason,
            created_by=created_by,
            service=request.service,
            created_at=self.clock.time(),
        )
        await self.ledger.add([record])
        return record

    async def invoice(self, account_id: str, ref: str) -> InvoiceLines:
        """``ref``: a period (its issued invoice, else the draft the ledger holds now) or an
        issued invoice's number (of this account: another's answers not found)."""
        if not _PERIOD_LIKE.fullmatch(ref):
            found = await self.invoices.by_number(account_id, ref)
            if found is None:
                raise NotFoundError(
                    f"no invoice numbered {ref[:160]!r} (list them with 'fluxo billing invoices')",
                    number=ref[:160],
                )
            return found
        period = parse_period(ref)
        issued = await self.invoices.issued(account_id, period)
        return issued if issued is not None else await self.invoices.draft(account_id, period)

    async def issue(self, account_id: str, period: str, issued_by: str) -> InvoiceLines:
        """Issue the account's invoice of ``period``, which must have ended (UTC)."""
        parse_period(period)
        _, end = month_bounds(period)
        now = self.clock.time()
        if now < end:
            ends = datetime.fromtimestamp(end, UTC).isoformat()
            raise ConflictError(
                f"period {period} has not ended (it ends {ends}); issue it after, so the "
                "invoice holds the whole month",
                period=period,
            )
        return await self.invoices.issue(account_id, period, issued_by=issued_by, now=now)

    async def list(self, account_id: str) -> list[InvoiceHeader]:
        return await self.invoices.list(account_id)


def money_text(micros: int) -> str:
    """Exact micros as money: at least two decimal places (``"12.50"``), more only when the
    amount has them (``"0.0125"``)."""
    text = decimal_text(micros)
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def invoice_json(invoice: InvoiceLines) -> dict[str, Any]:
    """An invoice as JSON: amounts exact decimal strings, totals per currency."""
    start, end = month_bounds(invoice.period)
    header = invoice.header
    totals: dict[str, int] = {}
    for line in invoice.lines:
        totals[line.currency] = totals.get(line.currency, 0) + line.amount_micros
    return {
        "account": invoice.account_id,
        "period": invoice.period,
        "period_start": _iso(start),
        "period_end": _iso(end),
        "status": "draft" if header is None else "issued",
        "number": None if header is None else header.number,
        "issued_at": None if header is None else _iso(header.issued_at),
        "issued_by": None if header is None else header.issued_by,
        "lines": [
            {
                "kind": line.kind,
                "service": line.service,
                "workflow": line.workflow,
                "description": line.description,
                "calls": line.calls,
                "units": line.units,
                "amount": money_text(line.amount_micros),
                "currency": line.currency,
            }
            for line in invoice.lines
        ],
        "totals": [
            {"currency": currency, "amount": money_text(totals[currency])}
            for currency in sorted(totals)
        ],
    }


def header_json(header: InvoiceHeader) -> dict[str, Any]:
    return {
        "account": header.account_id,
        "period": header.period,
        "number": header.number,
        "status": "issued",
        "issued_at": _iso(header.issued_at),
        "issued_by": header.issued_by,
    }


CSV_COLUMNS = ("number", "period", "kind", "service", "workflow", "description", "calls",
               "units", "amount", "currency")  # fmt: skip


_TEXT = {"service", "workflow", "description"}


def _cell(value: Any, text: bool) -> Any:
    """A CSV cell; text that a spreadsheet would run as a formula is quoted with ``'``."""
    if value is None:
        return ""
    if text and str(value)[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + str(value)
    return value


def invoice_csv(invoice: InvoiceLines) -> str:
    """An invoice as CSV: one row per line, then one ``total`` row per currency."""
    doc = invoice_json(invoice)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    number = doc["number"] or "draft"
    for line in doc["lines"]:
        writer.writerow(
            [number, doc["period"]] + [_cell(line[k], k in _TEXT) for k in CSV_COLUMNS[2:]]
        )
    for total in doc["totals"]:
        writer.writerow(
            [number, doc["period"], "total", "", "", "", "", "", total["amount"], total["currency"]]
        )
    return out.getvalue()
