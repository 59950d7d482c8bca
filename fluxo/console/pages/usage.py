"""Usage and billing: spend per day, the ledger with filters, and the account's invoices."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aiohttp import web

from fluxo.api.invoice_html import invoice_html
from fluxo.console.charts import bar_chart
from fluxo.console.i18n import Formats
from fluxo.console.web import Route, locale_of, platform, render, url, viewer
from fluxo.control.activity import micros
from fluxo.control.billing import Billing
from fluxo_core.errors import ValidationError
from fluxo_core.storage.ledger import UsageFilter

__all__ = ["routes"]

PAGE_SIZE = 50
DAYS = 30
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,100}")
# An invoice page keeps its own inline print styles; nothing else may load or run in it.
_INVOICE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
)


def routes() -> list[Route]:
    return [
        Route("GET", "/usage", _usage, "usage"),
        Route("GET", "/usage/invoices/{ref}", _invoice, "invoice"),
    ]


def _day(raw: str, field: str) -> float | None:
    if not raw:
        return None
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError(raw)
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ValidationError(
            f"{field} must be a date like 2026-12-31", problems=[(f"query.{field}", "a date")]
        ) from None


async def _usage(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    p = platform(request)
    q = request.query
    filters = {k: q.get(k, "").strip() for k in ("workflow", "service", "from", "to")}
    for name in ("workflow", "service"):
        if filters[name] and not _NAME.fullmatch(filters[name]):
            raise ValidationError(
                f"{name} {filters[name][:40]!r} is not a {name} name",
                problems=[(f"query.{name}", "a name")],
            )
    until = _day(filters["to"], "to")
    where = UsageFilter(
        workflow=filters["workflow"] or None,
        service=filters["service"] or None,
        since=_day(filters["from"], "from"),
        until=until + 86400 if until is not None else None,
    )
    lines, cursor = await p.usage.lines(
        who.account_id, where, limit=PAGE_SIZE, cursor=q.get("cursor") or None
    )
    # Spend per day over the last 30 days (UTC), in the account's main currency.
    today = datetime.fromtimestamp(p.clock.time(), UTC).date()
    first = today - timedelta(days=DAYS - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp()
    per_day = await p.usage.sums(
        who.account_id,
        UsageFilter(workflow=where.workflow, service=where.service, since=start),
        group_by=("day",),
    )
    currencies = sorted({s.currency for s in per_day})
    currency = currencies[0] if currencies else "EUR"
    amounts: dict[str, Decimal] = {}
    for total in per_day:
        if total.currency == currency and total.key[0] is not None:
            amounts[str(total.key[0])] = micros(total.amount_micros)
    days = [(first + timedelta(days=n)).isoformat() for n in range(DAYS)]
    formats = Formats(locale_of(request))
    chart = bar_chart(
        [(day, float(amounts.get(day, 0))) for day in days],
        title="",
        label=lambda value: formats.money(value, currency),
    )
    invoices = await Billing(p.db, clock=p.clock).list(who.account_id)
    return render(
        request,
        "usage.html",
        lines=[(line, micros(line.amount_micros)) for line in lines],
        filters=filters,
        chart=chart,
        currency=currency,
        other_currencies=currencies[1:],
        invoices=invoices,
        this_month=today.strftime("%Y-%m"),
        next_url=url(request, "usage", {**filters, "cursor": cursor}) if cursor else None,
    )


async def _invoice(request: web.Request) -> web.StreamResponse:
    """An invoice (an issued one by number or period, or this period's draft) as its printable
    page, the same the API serves."""
    invoice = await Billing(platform(request).db, clock=platform(request).clock).invoice(
        viewer(request).account_id, request.match_info["ref"]
    )
    response = web.Response(text=invoice_html(invoice), content_type="text/html")
    response.headers["Content-Security-Policy"] = _INVOICE_CSP
    return response
