"""``fluxo billing``: credit an account, show, issue and list its invoices.

With ``FLUXO_URL`` each command asks that server (the account of ``FLUXO_TOKEN``); without, it
works on the local database (the default account, or ``--account``). Both ways check and shape
the answers with the same code (:mod:`fluxo.control.billing`), so they print the same thing.

    fluxo billing credit --account acme --amount 12.50 --reason "outage on 2026-11-03"
    fluxo billing invoice --account acme --period 2026-11 -o html > acme-2026-11.html
    fluxo billing issue --account acme --period 2026-11
    fluxo billing invoices --account acme
    fluxo billing margin --account pub --period 2026-11
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fluxo.cli._client import HttpClient, server_or_database
from fluxo.control.billing import (
    Billing,
    header_json,
    invoice_csv,
    invoice_json,
    money_text,
    parse_credit,
    parse_period,
)
from fluxo.control.workflow_services import margin_report
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError
from fluxo_core.storage import Principal
from fluxo_core.storage.resources import ResourceStore

__all__ = ["add_parser", "render_invoice"]

_FORMATS = ("table", "json", "csv", "html")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``billing`` to ``fluxo``'s sub-commands."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "billing",
        help="credits and invoices (per account and UTC month)",
        description="Amounts are exact decimals per currency; periods are UTC months.",
    )
    sub = p.add_subparsers(required=True, metavar="ACTION")
    account_help = (
        "the account, on the local database (default: the default account); with FLUXO_URL "
        "it is always FLUXO_TOKEN's"
    )

    q = sub.add_parser("credit", help="credit an account: a ledger entry taking AMOUNT off")
    q.add_argument("--amount", required=True, help='the amount taken off, e.g. "12.50"')
    q.add_argument("--currency", default="EUR", help="ISO 4217 code (default EUR)")
    q.add_argument("--reason", required=True, help="why (shown on the invoice)")
    q.add_argument("--service", help="what the credit is for (default: credit)")
    q.add_argument("--account", help=account_help)
    q.add_argument("--by", help="who makes it, locally (default: your login name)")
    q.add_argument("-o", "--output", choices=("table", "json"), default="table")
    q.set_defaults(func=_credit)

    q = sub.add_parser("invoice", help="a month's invoice: issued, else the draft of now")
    q.add_argument("--period", help="a UTC month YYYY-MM (e.g. 2026-11)")
    q.add_argument("--number", help="an issued invoice's number instead of --period")
    q.add_argument("--account", help=account_help)
    q.add_argument("-o", "--output", choices=_FORMATS, default="table")
    q.set_defaults(func=_invoice)

    q = sub.add_parser("issue", help="issue a month's invoice (numbered, then never changed)")
    q.add_argument("--period", required=True, help="a UTC month YYYY-MM that has ended")
    q.add_argument("--account", help=account_help)
    q.add_argument("--by", help="who issues it, locally (default: your login name)")
    q.add_argument("-o", "--output", choices=_FORMATS, default="table")
    q.set_defaults(func=_issue)

    q = sub.add_parser("invoices", help="the issued invoices of an account")
    q.add_argument("--account", help=account_help)
    q.add_argument("-o", "--output", choices=("table", "json"), default="table")
    q.set_defaults(func=_invoices)

    q = sub.add_parser(
        "margin",
        help="revenue, cost and margin of each workflow the account publishes as a service",
    )
    q.add_argument("--period", help="a UTC month YYYY-MM (default: this month)")
    q.add_argument("--account", help=account_help)
    q.add_argument("-o", "--output", choices=("table", "json"), default="table")
    q.set_defaults(func=_margin)
    return p


@asynccontextmanager
async def _target(
    args: argparse.Namespace, config: FluxoConfig, *, account_on_server: bool = False
) -> AsyncIterator[tuple[HttpClient | None, Billing | None, str]]:
    """The server's client (with FLUXO_URL), else the local database's billing; the account."""
    async with server_or_database(args, config, account_on_server=account_on_server) as target:
        billing = Billing(target.db) if target.db is not None else None
        yield target.client, billing, target.account


def _who(args: argparse.Namespace) -> str:
    return str(args.by or getpass.getuser())


async def _credit(args: argparse.Namespace, config: FluxoConfig) -> int:
    body: dict[str, Any] = {"amount": args.amount, "currency": args.currency, "reason": args.reason}
    if args.service:
        body["service"] = args.service
    request = parse_credit(body)  # before anything is opened: bad options fail fast
    # On a server, the account named is credited (a platform admin's token may do that).
    async with _target(args, config, account_on_server=True) as (client, billing, account):
        if client is not None:
            answer = await client.credit({**body, "account": account} if account else body)
        else:
            assert billing is not None
            record = await billing.credit(account, _who(args), request)
            answer = {
                "id": record.call_id,
                "account": record.account_id,
                "service": record.service,
                "amount": money_text(record.amount_micros),
                "currency": record.currency,
                "reason": record.reason,
                "created_by": record.created_by,
            }
    if args.output == "json":
        print(json.dumps(answer, indent=2))
    else:
        print(
            f"credited {answer['account']}: {answer['amount']} {answer['currency']} "
            f"({answer['reason']}) by {answer['created_by']}, entry {answer['id']}"
        )
    return 0


async def _invoice(args: argparse.Namespace, config: FluxoConfig) -> int:
    if bool(args.period) == bool(args.number):
        raise ConfigError("give --period YYYY-MM or --number NUMBER (one of them)")
    ref = parse_period(args.period, "--period") if args.period else args.number
    async with _target(args, config) as (client, billing, account):
        if client is not None:
            fmt = "json" if args.output == "table" else args.output
            text = await client.invoice(ref, fmt)
            if args.output != "table":
                print(text, end="" if text.endswith("\n") else "\n")
                return 0
            doc = json.loads(text)
        else:
            assert billing is not None
            invoice = await billing.invoice(account, ref)
            if args.output in ("csv", "html"):
                print(_local_text(invoice, args.output), end="")
                return 0
            doc = invoice_json(invoice)
    _print(doc, args.output)
    return 0


async def _issue(args: argparse.Namespace, config: FluxoConfig) -> int:
    period = parse_period(args.period, "--period")
    async with _target(args, config) as (client, billing, account):
        if client is not None:
            doc = await client.issue_invoice(period)
        else:
            assert billing is not None
            invoice = await billing.issue(account, period, _who(args))
            if args.output in ("csv", "html"):
                print(_local_text(invoice, args.output), end="")
                return 0
            doc = invoice_json(invoice)
    if args.output in ("csv", "html"):
        raise ConfigError("with FLUXO_URL, issue prints table or json; fetch csv or html with "
                          "'fluxo billing invoice --number N -o csv'")  # fmt: skip
    _print(doc, args.output)
    return 0


async def _invoices(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _target(args, config) as (client, billing, account):
        if client is not None:
            items = await client.invoices()
        else:
            assert billing is not None
            items = [header_json(h) for h in await billing.list(account)]
    if args.output == "json":
        print(json.dumps({"items": items}, indent=2))
        return 0
    print(f"{'NUMBER':20}  {'PERIOD':7}  {'ISSUED':20}  BY")
    for item in items:
        print(
            f"{item['number']:20}  {item['period']:7}  {item['issued_at']:20}  {item['issued_by']}"
        )
    return 0


async def _margin(args: argparse.Namespace, config: FluxoConfig) -> int:
    period = parse_period(args.period or datetime.now(UTC).strftime("%Y-%m"), "--period")
    async with server_or_database(args, config) as target:
        if target.client is not None:
            doc = await target.client.call("GET", f"/v1/billing/margin?period={period}")
        else:
            assert target.db is not None
            who = Principal(account_id=target.account, user_id=getpass.getuser())
            doc = await margin_report(ResourceStore(target.db), who, period)
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{'SERVICE':24}  {'CUR':3}  {'CALLS':>6}  {'REVENUE':>12}  {'COST':>12}  {'MARGIN':>12}")
    for item in doc["items"]:
        print(
            f"{item['service']:24}  {item['currency']:3}  {item['calls']:>6}  "
            f"{item['revenue']:>12}  {item['cost']:>12}  {item['margin']:>12}"
        )
    return 0


def _local_text(invoice: Any, fmt: str) -> str:
    if fmt == "csv":
        return invoice_csv(invoice)
    from fluxo.api.invoice_html import invoice_html

    return invoice_html(invoice)


def _print(doc: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(render_invoice(doc), end="")


def render_invoice(doc: dict[str, Any]) -> str:
    """An invoice's JSON as text: a heading, aligned lines, a total per currency."""
    title = f"Invoice {doc['number']}" if doc["number"] else f"Draft invoice {doc['period']}"
    head = f"{title}  account {doc['account']}  period {doc['period']} (UTC)  {doc['status']}\n"
    if doc.get("issued_at"):
        head += f"issued {doc['issued_at']} by {doc['issued_by']}\n"
    header = ["SERVICE", "WORKFLOW", "CALLS", "UNITS", "AMOUNT", "CURRENCY"]
    rows = [
        [
            line["service"] if line["kind"] == "usage" else f"credit: {line['description']}",
            line["workflow"] or "-",
            str(line["calls"]) if line["kind"] == "usage" else "",
            str(line["units"]) if line["kind"] == "usage" else "",
            line["amount"],
            line["currency"],
        ]
        for line in doc["lines"]
    ]
    totals = [["TOTAL", "", "", "", t["amount"], t["currency"]] for t in doc["totals"]] or [
        ["TOTAL", "", "", "", "0.00", ""]
    ]
    table = [header, *rows, *totals]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = {2, 3, 4}

    def line(row: list[str]) -> str:
        cells = [
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        return "  ".join(cells).rstrip() + "\n"

    rule = "  ".join("-" * w for w in widths) + "\n"
    return (
        head + "".join(line(r) for r in [header, *rows]) + rule + "".join(line(r) for r in totals)
    )
