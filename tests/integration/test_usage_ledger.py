"""Reading the usage ledger: one account's records filtered and paginated, and their grouped sums
(by service, workflow, job, UTC day and month; per currency), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fluxo_core.errors import ValidationError
from fluxo_core.storage import Database, UsageLedger, UsageRecord, bulk_insert
from fluxo_core.storage.ledger import UsageFilter, UsageSum, month_bounds
from fluxo_core.storage.tables import jobs
from tests.support.rows import JobRowToWrite


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


LAST_OF_NOV = at("2026-11-30T23:59:59.500000")
FIRST_OF_DEC = at("2026-12-01T00:00:00")


def usage(
    call_id: str,
    *,
    account: str = "acc",
    service: str = "echo",
    job: str | None = None,
    units: int = 1,
    price: int = 12_500,
    currency: str = "EUR",
    when: float = LAST_OF_NOV,
) -> UsageRecord:
    step = "s1" if job else None
    return UsageRecord(
        call_id, account, "u1", service, "1", job, step, units, price, units * price, currency, when
    )


RECORDS = [
    usage("c1", job="j-orders", when=at("2026-11-02T10:00:00")),
    usage("c2", job="j-orders", service="http", units=3, price=100, when=at("2026-11-02T11:00:00")),
    usage("c3", job="j-invoices", when=LAST_OF_NOV),
    usage("c4", when=FIRST_OF_DEC),  # a direct call: no job, no workflow
    usage("c5", service="http", currency="USD", price=7, when=FIRST_OF_DEC + 60),
    # Another account's usage, even on a job id of this account: never read for "acc".
    usage("x1", account="other", job="j-orders", when=LAST_OF_NOV),
    # This account's record naming another account's job: that job's workflow is not lent.
    usage("c6", job="j-other", when=at("2026-10-15T00:00:00")),
]


@pytest.fixture
async def ledger(db: Database) -> UsageLedger:
    job_rows = [
        JobRowToWrite("j-orders", "acc", "u1", "orders", 1, "step", "succeeded", b"{}", 0, 1.0),
        JobRowToWrite("j-invoices", "acc", "u1", "invoices", 2, "step", "succeeded", b"{}", 0, 1.0),
        JobRowToWrite("j-other", "other", "u9", "orders", 1, "step", "succeeded", b"{}", 0, 1.0),
    ]

    def setup(tx: Any) -> None:
        bulk_insert(tx, jobs, job_rows)
        UsageLedger.record(tx, RECORDS)

    await db.transact(setup)
    return UsageLedger(db)


async def test_records_come_newest_first_with_their_jobs_workflow(ledger: UsageLedger) -> None:
    lines, cursor = await ledger.lines("acc", UsageFilter(), limit=10)
    assert cursor is None
    assert [(line.call_id, line.workflow) for line in lines] == [
        ("c5", None),
        ("c4", None),
        ("c3", "invoices"),
        ("c2", "orders"),
        ("c1", "orders"),
        ("c6", None),
    ]
    assert lines[3][1:] == (
        "c2", "u1", "http", "1", "orders", "j-orders", "s1", 3, 100, 300, "EUR",
        at("2026-11-02T11:00:00"), "succeeded", 0, None, None,
    )  # fmt: skip


async def test_pages_follow_the_cursor_to_the_end_without_repeats(ledger: UsageLedger) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        lines, cursor = await ledger.lines("acc", UsageFilter(), limit=2, cursor=cursor)
        assert len(lines) == 2
        seen += [line.call_id for line in lines]
        if cursor is None:
            break
    assert seen == ["c5", "c4", "c3", "c2", "c1", "c6"]


async def test_a_malformed_cursor_names_the_query_parameter(ledger: UsageLedger) -> None:
    with pytest.raises(ValidationError) as caught:
        await ledger.lines("acc", UsageFilter(), limit=2, cursor="not-a-cursor")
    assert caught.value.problems[0][0] == "query.cursor"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (UsageFilter(workflow="orders"), ["c2", "c1"]),
        (UsageFilter(service="http"), ["c5", "c2"]),
        (UsageFilter(job_id="j-invoices"), ["c3"]),
        (UsageFilter(job_id="j-other"), ["c6"]),
        (UsageFilter(workflow="orders", service="echo"), ["c1"]),
        (UsageFilter(since=FIRST_OF_DEC), ["c5", "c4"]),
        (UsageFilter(until=FIRST_OF_DEC, since=at("2026-11-01T00:00:00")), ["c3", "c2", "c1"]),
        (UsageFilter(workflow="nope"), []),
    ],
)
async def test_filters_narrow_the_records(
    ledger: UsageLedger, where: UsageFilter, expected: list[str]
) -> None:
    lines, _ = await ledger.lines("acc", where, limit=50)
    assert [line.call_id for line in lines] == expected


async def test_another_accounts_usage_is_never_read(ledger: UsageLedger) -> None:
    lines, _ = await ledger.lines("other", UsageFilter(), limit=50)
    assert [line.call_id for line in lines] == ["x1"]
    assert await ledger.lines("nobody", UsageFilter(), limit=50) == ([], None)
    assert await ledger.sums("nobody", UsageFilter()) == []


async def test_totals_are_summed_per_currency(ledger: UsageLedger) -> None:
    assert await ledger.sums("acc", UsageFilter()) == [
        UsageSum((), "EUR", 5, 7, 12_500 * 4 + 300),
        UsageSum((), "USD", 1, 1, 7),
    ]


async def test_sums_group_by_service_and_workflow(ledger: UsageLedger) -> None:
    sums = await ledger.sums("acc", UsageFilter(), ["workflow", "service"])
    # A direct call's (and a foreign job's) workflow is None; it sorts first on SQLite and
    # last on PostgreSQL, so compare as a set of groups.
    assert set(sums) == {
        UsageSum((None, "echo"), "EUR", 2, 2, 25_000),
        UsageSum((None, "http"), "USD", 1, 1, 7),
        UsageSum(("invoices", "echo"), "EUR", 1, 1, 12_500),
        UsageSum(("orders", "echo"), "EUR", 1, 1, 12_500),
        UsageSum(("orders", "http"), "EUR", 1, 3, 300),
    }
    assert [s.key for s in sums if s.key[0] is not None] == [
        ("invoices", "echo"),
        ("orders", "echo"),
        ("orders", "http"),
    ]


async def test_days_and_months_are_utc_calendar_days_and_months(ledger: UsageLedger) -> None:
    by_month = await ledger.sums("acc", UsageFilter(), ["month"])
    assert by_month == [
        UsageSum(("2026-10",), "EUR", 1, 1, 12_500),
        UsageSum(("2026-11",), "EUR", 3, 5, 25_300),
        UsageSum(("2026-12",), "EUR", 1, 1, 12_500),
        UsageSum(("2026-12",), "USD", 1, 1, 7),
    ]
    november = UsageFilter(*(None,) * 3, *month_bounds("2026-11"))
    by_day = await ledger.sums("acc", november, ["day", "job"])
    assert by_day == [
        UsageSum(("2026-11-02", "j-orders"), "EUR", 2, 4, 12_800),
        UsageSum(("2026-11-30", "j-invoices"), "EUR", 1, 1, 12_500),
    ]


def test_a_month_is_its_utc_start_to_the_next_months_start() -> None:
    assert month_bounds("2026-11") == (at("2026-11-01T00:00:00"), FIRST_OF_DEC)
    assert month_bounds("2026-12") == (FIRST_OF_DEC, at("2027-01-01T00:00:00"))
    for bad in (
        "2026-13",
        "2026-00",
        "2026-1",
        "26-11",
        "2026/11",
        "2026-+1",
        "2026-\uff11\uff11",  # fullwidth digits
        "abcd-ef",
    ):
        with pytest.raises(ValueError, match=r"not a month YYYY-MM|month must be in"):
            month_bounds(bad)


async def test_an_unknown_group_is_refused(ledger: UsageLedger) -> None:
    with pytest.raises(ValueError, match="cannot group usage by"):
        await ledger.sums("acc", UsageFilter(), ["year"])
