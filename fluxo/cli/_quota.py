"""``fluxo quota``: set, list and delete an account's quotas and limits, and list their events.

With ``FLUXO_URL`` it asks the server (``/v1/quotas``, the account of ``FLUXO_TOKEN``); without,
it works on the local database (the default account, or ``--account``). Both ways parse and show
quotas with the same code as the API (:mod:`fluxo.control.quotas`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fluxo.cli._client import HttpClient, server_or_database
from fluxo.control.quotas import event_json, parse_quota_spec, quotas_answer
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ValidationError
from fluxo_core.storage.quotas import QUOTA_KINDS, RATE_PERIODS, USAGE_PERIODS, QuotaStore

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``quota`` to ``fluxo``'s sub-commands (``func``: a coroutine ``(args, config)``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "quota",
        help="quotas and limits: calls and spend per day/month, concurrent jobs, request rate",
        description="Periods are UTC days or months. A call past a calls quota, or once a spend "
        "quota is reached, is refused (quota_exceeded); a job past a concurrency limit too "
        "(concurrency_limit); a request over a rate gets HTTP 429 with Retry-After.",
    )
    sub = p.add_subparsers(dest="quota_command", required=True)
    q = sub.add_parser(
        "set",
        help="create or replace a quota",
        description="Examples: fluxo quota set daily-calls --kind calls --limit 10000 --period "
        "day; fluxo quota set budget --kind spend --limit 50.00 --period month --currency EUR; "
        "fluxo quota set two-jobs --kind concurrent_jobs --limit 2 --workflow orders; "
        "fluxo quota set api-rate --kind rate --limit 100 --period second",
    )
    q.add_argument("name")
    q.add_argument("--kind", required=True, choices=QUOTA_KINDS)
    q.add_argument("--limit", required=True, help="a count; for spend a decimal amount")
    q.add_argument(
        "--period",
        choices=(*USAGE_PERIODS, *RATE_PERIODS),
        help="calls and spend: day or month; rate: second, minute or hour",
    )
    target = q.add_mutually_exclusive_group()
    target.add_argument("--workflow", help="only this workflow's jobs and calls")
    target.add_argument("--service", help="only calls of this service")
    q.add_argument("--currency", help="spend only (default EUR)")
    q.set_defaults(func=_set)
    q = sub.add_parser("list", help="the quotas, with what they used this period")
    q.add_argument("-o", "--output", choices=("table", "json"), default="table")
    q.set_defaults(func=_list)
    q = sub.add_parser("delete", help="delete a quota (its events stay)")
    q.add_argument("name")
    q.set_defaults(func=_delete)
    q = sub.add_parser("events", help="when quotas reached 80%% and 100%%, newest first")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("-o", "--output", choices=("table", "json"), default="table")
    q.set_defaults(func=_events)
    for command in sub.choices.values():
        command.add_argument(
            "--account",
            help="the account, on the local database (default: the default account); with "
            "FLUXO_URL it is always FLUXO_TOKEN's",
        )
    return p


def _spec_body(args: argparse.Namespace) -> dict[str, Any]:
    limit: Any = args.limit
    if args.kind != "spend":
        if not limit.isdigit():
            raise ValidationError(
                "bad quota options", problems=[("--limit", "a whole number, e.g. 1000")]
            )
        limit = int(limit)
    scope, target = "account", None
    if args.workflow:
        scope, target = "workflow", args.workflow
    elif args.service:
        scope, target = "service", args.service
    body = {"kind": args.kind, "limit": limit, "scope": scope, "target": target}
    body.update({"period": args.period, "currency": args.currency})
    return {k: v for k, v in body.items() if v is not None}


async def _set(args: argparse.Namespace, config: FluxoConfig) -> int:
    body = _spec_body(args)
    try:
        spec = parse_quota_spec(body)  # before anything is opened: bad options fail fast
    except ValidationError as exc:
        problems = [(where.replace("body.", "--"), what) for where, what in exc.problems]
        raise ValidationError("bad quota options", problems=problems) from None
    async with _target(args, config) as target:
        if isinstance(target, HttpClient):
            status, _ = await target.send_json(
                "PUT", f"/v1/quotas/{_segment(args.name)}", json=body
            )
            created = status == 201
        else:
            store, account = target
            _, created = await store.set(account, args.name, spec)
    print(f"quota/{args.name} {'created' if created else 'updated'}")
    return 0


async def _list(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _target(args, config) as target:
        if isinstance(target, HttpClient):
            items = (await target.send_json("GET", "/v1/quotas"))[1]["items"]
        else:
            store, account = target
            items = await quotas_answer(store, account, time.time())
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    rows = [["NAME", "KIND", "SCOPE", "LIMIT", "PERIOD", "USED", "NOW"]]
    for q in items:
        scope = q["scope"] if q["target"] is None else f"{q['scope']}:{q['target']}"
        limit = f"{q['limit']} {q['currency']}" if q["currency"] else str(q["limit"])
        used = "-" if q["used"] is None else str(q["used"])
        rows.append(
            [
                q["name"],
                q["kind"],
                scope,
                limit,
                q["period"] or "-",
                used,
                q["current_period"] or "-",
            ]
        )
    print(_table(rows), end="")
    return 0


async def _delete(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _target(args, config) as target:
        if isinstance(target, HttpClient):
            await target.send_json("DELETE", f"/v1/quotas/{_segment(args.name)}")
        else:
            store, account = target
            await store.delete(account, args.name)
    print(f"quota/{args.name} deleted")
    return 0


async def _events(args: argparse.Namespace, config: FluxoConfig) -> int:
    if not 1 <= args.limit <= 1000:
        raise ValidationError("bad quota options", problems=[("--limit", "from 1 to 1000")])
    async with _target(args, config) as target:
        if isinstance(target, HttpClient):
            path = f"/v1/quota-events?limit={args.limit}"
            items = (await target.send_json("GET", path))[1]["items"]
        else:
            store, account = target
            items = [event_json(e) for e in await store.events(account, limit=args.limit)]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    rows = [["TIME", "QUOTA", "KIND", "PERIOD", "REACHED", "USED", "LIMIT"]]
    rows += [
        [
            e["created_at"][:19].replace("T", " "),
            e["quota"],
            e["kind"],
            e["period"],
            f"{e['threshold']}%",
            str(e["used"]),
            str(e["limit"]),
        ]
        for e in items
    ]
    print(_table(rows), end="")
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n"
        for row in rows
    )


def _segment(name: str) -> str:
    return quote(name, safe="")


@contextlib.asynccontextmanager
async def _target(
    args: argparse.Namespace, config: FluxoConfig
) -> AsyncIterator[HttpClient | tuple[QuotaStore, str]]:
    """The server's client with FLUXO_URL (the token's account), else the local database's
    quota store and the account."""
    async with server_or_database(args, config) as target:
        if target.client is not None:
            yield target.client
        else:
            assert target.db is not None
            yield QuotaStore(target.db), target.account
