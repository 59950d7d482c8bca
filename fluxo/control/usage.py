"""Reading usage: the checked query and the answer of ``GET /v1/usage`` and ``fluxo usage``.

The ledger keeps amounts as integer micros (1e-6 of the currency); answers show them as exact
decimal strings (``"0.0125"``) next to their currency, never as floats, and never add up
amounts of different currencies. The account is always the token's: there is no parameter that
names another one, and another account's job id simply matches nothing.

Shared by the API route (:mod:`fluxo.api.usage`) and ``fluxo usage`` on the local database, so
the CLI checks and prints exactly what the API would (and loads no web server to do it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fluxo_core.errors import ValidationError
from fluxo_core.storage import UsageLedger
from fluxo_core.storage.ledger import GROUP_KEYS, UsageFilter, UsageLine, UsageSum, month_bounds

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "UsageQuery",
    "decimal_text",
    "parse_usage_query",
    "usage_answer",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# ASCII digits only: fromisoformat alone also takes dates without a time or a zone.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A checked usage request: which records, and either grouped sums or a page of records."""

    where: UsageFilter
    group_by: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def decimal_text(micros: int) -> str:
    """Integer micros as an exact decimal string: ``12500`` -> ``"0.0125"``, ``0`` -> ``"0"``.

    A shift of the exponent, not a division: exact for any BIGINT."""
    return f"{Decimal(micros).scaleb(-6).normalize():f}"


def parse_usage_query(params: Mapping[str, str]) -> UsageQuery:
    """Check the query parameters of ``GET /v1/usage``; one error lists every bad parameter.

    ``period`` (a UTC month ``YYYY-MM``) or ``from``/``to`` (RFC 3339 times with a zone,
    ``[from, to)``); ``workflow``, ``service``, ``job``; ``group_by`` (comma list of
    :data:`GROUP_KEYS`); ``limit`` and ``cursor`` for pages of records.
    """
    problems: list[tuple[str, str]] = []
    since = until = None
    period = params.get("period")
    if period is not None:
        try:
            since, until = month_bounds(period)
        except ValueError:
            problems.append(("query.period", "expected a UTC month YYYY-MM, e.g. 2026-11"))
        if "from" in params or "to" in params:
            problems.append(("query.period", "give either period or from/to, not both"))
    for name in ("from", "to"):
        raw = params.get(name)
        if raw is None:
            continue
        moment = _instant(raw)
        if moment is None:
            problems.append(
                (
                    f"query.{name}",
                    "expected an RFC 3339 time with a zone, e.g. 2026-11-01T00:00:00Z",
                )
            )
        elif name == "from":
            since = moment
        else:
            until = moment
    both = "from" in params and "to" in params
    if both and since is not None and until is not None and since >= until:
        problems.append(("query.to", "must be after from (the range is [from, to))"))
    group_by: tuple[str, ...] = ()
    raw_groups = params.get("group_by")
    if raw_groups is not None:
        group_by = tuple(name.strip() for name in raw_groups.split(","))
        if not all(name in GROUP_KEYS for name in group_by) or len(set(group_by)) != len(group_by):
            problems.append(
                ("query.group_by", f"a comma list of distinct names from {', '.join(GROUP_KEYS)}")
            )
    limit = DEFAULT_LIMIT
    raw_limit = params.get("limit")
    if raw_limit is not None:
        if raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT:
            limit = int(raw_limit)
        else:
            problems.append(("query.limit", f"expected a whole number from 1 to {MAX_LIMIT}"))
    cursor = params.get("cursor") or None
    if cursor is not None and group_by:
        problems.append(("query.cursor", "grouped sums come whole: drop cursor, or group_by"))
    if problems:
        raise ValidationError(
            "bad usage query: " + "; ".join(sorted({where for where, _ in problems})),
            problems=problems,
        )
    where = UsageFilter(
        workflow=params.get("workflow") or None,
        service=params.get("service") or None,
        job_id=params.get("job") or None,
        since=since,
        until=until,
    )
    return UsageQuery(where, group_by, limit, cursor)


def _instant(raw: str) -> float | None:
    """An RFC 3339 time (``Z`` or an offset; seconds required) as epoch seconds, else ``None``."""
    if not _RFC3339.fullmatch(raw):
        return None
    try:
        return datetime.fromisoformat(raw.upper()).timestamp()
    except ValueError:  # a well-formed but impossible date, e.g. 2026-02-30
        return None


async def usage_answer(ledger: UsageLedger, account_id: str, query: UsageQuery) -> dict[str, Any]:
    """The JSON of ``GET /v1/usage`` for ``account_id``: with ``group_by``, the groups' sums;
    without, a page of records newest first. ``totals`` (per currency) always covers every
    record the filters match, not only the page."""
    totals = [_sum_json(s, ()) for s in await ledger.sums(account_id, query.where)]
    if query.group_by:
        groups = await ledger.sums(account_id, query.where, query.group_by)
        return {
            "group_by": list(query.group_by),
            "groups": [_sum_json(s, query.group_by) for s in groups],
            "totals": totals,
        }
    lines, next_cursor = await ledger.lines(
        account_id, query.where, limit=query.limit, cursor=query.cursor
    )
    return {
        "items": [_line_json(line) for line in lines],
        "next_cursor": next_cursor,
        "totals": totals,
    }


def _line_json(line: UsageLine) -> dict[str, Any]:
    return {
        "call_id": line.call_id,
        "user_id": line.user_id,
        "service": line.service,
        "version": line.version,
        "workflow": line.workflow,
        "job_id": line.job_id,
        "step_id": line.step_id,
        "units": line.units,
        "unit_price": decimal_text(line.unit_price_micros),
        "amount": decimal_text(line.amount_micros),
        "currency": line.currency,
        "created_at": datetime.fromtimestamp(line.created_at, UTC).isoformat(),
        "outcome": line.outcome,
        "attempt": line.attempt,
        "reason": line.reason,
        "created_by": line.created_by,
    }


def _sum_json(total: UsageSum, group_by: tuple[str, ...]) -> dict[str, Any]:
    return {
        **dict(zip(group_by, total.key, strict=True)),
        "currency": total.currency,
        "calls": total.calls,
        "units": total.units,
        "amount": decimal_text(total.amount_micros),
    }
