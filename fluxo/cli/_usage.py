"""``fluxo usage``: what an account used, as records or grouped sums, from the API or locally.

With ``FLUXO_URL`` it asks ``GET /v1/usage`` of that server (the account of ``FLUXO_TOKEN``);
without, it reads the local database's ledger (the default account, or ``--account``). Both
ways check the options and shape the answer with the same code as the API
(:mod:`fluxo.control.usage`), so they print the same thing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fluxo.cli._client import server_or_database
from fluxo.control.usage import DEFAULT_LIMIT, parse_usage_query, usage_answer
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ValidationError
from fluxo_core.storage import UsageLedger

__all__ = ["add_parser", "render_table"]

# The API's query parameter of each option (the option is the parameter with - for _).
_PARAMS = ("workflow", "service", "job", "period", "from", "to", "group_by", "limit", "cursor")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``usage`` to ``fluxo``'s sub-commands (``func``: a coroutine ``(args, config)``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "usage",
        help="what was used and what it cost: records, or sums grouped by service, workflow, ...",
        description="Amounts are exact decimals per currency; periods are UTC.",
    )
    p.add_argument("--workflow", help="only calls of this workflow's jobs")
    p.add_argument("--service", help="only calls of this service")
    p.add_argument("--job", help="only calls of this job (its id)")
    p.add_argument("--period", help="a UTC month, YYYY-MM (e.g. 2026-11)")
    p.add_argument("--from", dest="from_", metavar="TIME", help="from this RFC 3339 time")
    p.add_argument("--to", metavar="TIME", help="until this RFC 3339 time (excluded)")
    p.add_argument(
        "--group-by",
        metavar="KEYS",
        help="sum per group: a comma list of service, workflow, job, day, month",
    )
    p.add_argument("--limit", type=int, help=f"records per page (default {DEFAULT_LIMIT})")
    p.add_argument("--cursor", help="the next page (printed after a page that has one)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument(
        "--account",
        help="the account, on the local database (default: the default account); with "
        "FLUXO_URL it is always FLUXO_TOKEN's",
    )
    p.set_defaults(func=_command)
    return p


async def _command(args: argparse.Namespace, config: FluxoConfig) -> int:
    values = {**vars(args), "from": args.from_}
    params = {name: str(values[name]) for name in _PARAMS if values.get(name) is not None}
    try:
        answer = await _answer(args, config, params)
    except ValidationError as exc:
        # Name the options the user typed, not the API's query parameters.
        problems = [(_option(where), what) for where, what in exc.problems]
        raise ValidationError("bad usage options", problems=problems) from None
    if args.output == "json":
        print(json.dumps(answer, indent=2))
    else:
        print(render_table(answer), end="")
        if answer.get("next_cursor"):
            print(f"(more: --cursor {answer['next_cursor']})")
    return 0


def _option(where: str) -> str:
    name = where.removeprefix("query.")
    return f"--{name.replace('_', '-')}" if name in _PARAMS else where


async def _answer(
    args: argparse.Namespace, config: FluxoConfig, params: dict[str, str]
) -> dict[str, Any]:
    query = parse_usage_query(params)  # before anything is opened: bad options fail fast
    async with server_or_database(args, config) as target:
        if target.client is not None:
            return await target.client.usage(params)
        assert target.db is not None
        # An account that never used anything (or does not exist) has an empty ledger.
        return await usage_answer(UsageLedger(target.db), target.account, query)


def render_table(answer: dict[str, Any]) -> str:
    """The answer of ``GET /v1/usage`` as aligned columns, ending with a total per currency."""
    if "groups" in answer:
        keys = [key.upper() for key in answer["group_by"]]
        rows = [
            [_text(group[key]) for key in answer["group_by"]]
            + [str(group["calls"]), str(group["units"]), group["amount"], group["currency"]]
            for group in answer["groups"]
        ]
    else:
        keys = ["TIME", "SERVICE", "WORKFLOW", "JOB"]
        rows = [
            [
                item["created_at"][:19].replace("T", " "),
                f"{item['service']}@{item['version']}",
                _text(item["workflow"]),
                _text(item["job_id"]),
                "1",
                str(item["units"]),
                item["amount"],
                item["currency"],
            ]
            for item in answer["items"]
        ]
    header = [*keys, "CALLS", "UNITS", "AMOUNT", "CURRENCY"]
    totals = [
        [
            "TOTAL",
            *[""] * (len(keys) - 1),
            str(t["calls"]),
            str(t["units"]),
            t["amount"],
            t["currency"],
        ]
        for t in answer["totals"]
    ] or [["TOTAL", *[""] * (len(keys) - 1), "0", "0", "0", ""]]
    table = [header, *rows, *totals]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    # Numbers align right, text left; the totals follow a rule.
    numeric = {len(keys), len(keys) + 1, len(keys) + 2}

    def line(row: list[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip() + "\n"

    rule = "  ".join("-" * w for w in widths) + "\n"
    return "".join(line(r) for r in [header, *rows]) + rule + "".join(line(r) for r in totals)


def _text(value: str | None) -> str:
    return "-" if value is None else value
