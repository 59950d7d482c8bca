"""Billing routes: credit entries and invoices of the token's account.

``POST /v1/usage/credits`` appends a credit: a correction the platform (the seller) makes, so
platform admins only (to anyone else the route does not exist: 404), to the account the body
names; ``GET /v1/invoices`` lists the issued invoices; ``GET /v1/invoices/{period}`` shows
one month's invoice (issued, else the draft the ledger holds now) or an issued invoice by its
number, as JSON, CSV or a printable HTML page; ``POST /v1/invoices/{period}/issue`` issues it.
Another account's invoice number answers 404, like any invoice that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from fluxo.api.common import PLATFORM, json_body, principal
from fluxo.api.invoice_html import invoice_html
from fluxo.control.auth import platform_only, require
from fluxo.control.billing import (
    Billing,
    header_json,
    invoice_csv,
    invoice_json,
    money_text,
    parse_credit,
    parse_period,
)
from fluxo_core.errors import ValidationError
from fluxo_core.storage import Role

__all__ = ["add_routes"]

FORMATS = ("json", "csv", "html")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/usage/credits", _credit)
    app.router.add_get("/v1/invoices", _list)
    app.router.add_get("/v1/invoices/{period}", _get)
    app.router.add_post("/v1/invoices/{period}/issue", _issue)
    app.router.add_get("/v1/billing/margin", _margin)


def _billing(request: web.Request) -> Billing:
    platform = request.app[PLATFORM]
    return Billing(platform.db, clock=platform.clock)


async def _credit(request: web.Request) -> web.Response:
    """Body ``{"account": "acme", "amount": "12.50", "currency": "EUR", "reason": "...",
    "service": "..."}``; made by the token's user. 201 with the entry.

    An account's own admin may not credit it (that would be money out of the seller's pocket):
    only a platform admin does, before the body is even read."""
    who = principal(request)
    platform_only(who)
    body = await json_body(request)
    account = who.account_id
    if isinstance(body, dict) and "account" in body:
        body = dict(body)
        account = body.pop("account")
        if not isinstance(account, str):
            raise ValidationError(
                "account is the id of the account to credit, a string",
                problems=[("body.account", "a string")],
            )
    credit = parse_credit(body)
    await request.app[PLATFORM].accounts.require_account(account)
    record = await _billing(request).credit(account, who.user_id, credit)
    return web.json_response(
        {
            "id": record.call_id,
            "account": record.account_id,
            "service": record.service,
            "amount": money_text(record.amount_micros),
            "currency": record.currency,
            "reason": record.reason,
            "created_by": record.created_by,
            "created_at": datetime.fromtimestamp(record.created_at, UTC).isoformat(),
        },
        status=201,
    )


async def _list(request: web.Request) -> web.Response:
    headers = await _billing(request).list(principal(request).account_id)
    return web.json_response({"items": [header_json(h) for h in headers]})


async def _get(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        raise ValidationError(
            f"format {fmt[:20]!r} is not one of {', '.join(FORMATS)}",
            problems=[("query.format", f"one of {', '.join(FORMATS)}")],
        )
    invoice = await _billing(request).invoice(
        principal(request).account_id, request.match_info["period"]
    )
    name = invoice.header.number if invoice.header else f"draft-{invoice.period}"
    if fmt == "csv":
        return web.Response(
            text=invoice_csv(invoice),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if fmt == "html":
        return web.Response(text=invoice_html(invoice), content_type="text/html")
    return web.json_response(invoice_json(invoice))


async def _issue(request: web.Request) -> web.Response:
    """Freeze the period's lines under the account's next number; 409 if issued already or
    the period has not ended. An account admin's act (a member or viewer gets 403)."""
    who = principal(request)
    require(who, Role.ACCOUNT_ADMIN, "issue invoices")
    period = parse_period(request.match_info["period"])
    invoice = await _billing(request).issue(who.account_id, period, who.user_id)
    return web.json_response(invoice_json(invoice), status=201)


async def _margin(request: web.Request) -> web.Response:
    """Revenue, cost and margin of each workflow this account publishes as a service, in the
    month ``?period=YYYY-MM`` (this UTC month by default). Account admins only (403)."""
    platform = request.app[PLATFORM]
    period = request.query.get("period") or datetime.fromtimestamp(
        platform.clock.time(), UTC
    ).strftime("%Y-%m")
    report = await platform.workflow_services.margin(principal(request), period)
    return web.json_response(report)
