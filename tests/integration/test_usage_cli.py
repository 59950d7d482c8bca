"""``fluxo usage`` as a user runs it: on the local database, and against a running server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from fluxo_core.storage import Database, Transaction, UsageLedger, bulk_insert
from fluxo_core.storage.tables import jobs
from tests.integration.test_usage_ledger import FIRST_OF_DEC, at, usage
from tests.support.fluxo_process import fluxo_up, free_port, run_fluxo
from tests.support.rows import JobRowToWrite

fluxo = run_fluxo


def seed(home: Path) -> None:
    """The local database of ``home`` with usage of the default account (and of another)."""

    async def write() -> None:
        db = Database(f"sqlite:///{home / 'fluxo.db'}")
        await db.migrate()
        job = JobRowToWrite(
            "j-orders", "default", "admin", "orders", 1, "step", "succeeded", b"{}", 0, 1.0
        )
        records = [
            usage("c1", account="default", job="j-orders", when=at("2026-11-02T10:00:00")),
            usage("c2", account="default", service="http", units=3, price=100),
            usage("c3", account="default", when=FIRST_OF_DEC),
            usage("x1", account="acme", job="j-orders"),
        ]

        def rows(tx: Transaction) -> None:
            bulk_insert(tx, jobs, [job])
            UsageLedger.record(tx, records)

        await db.transact(rows)
        await db.close()

    asyncio.run(write())


def test_usage_groups_a_month_into_a_table_with_a_total_line(tmp_path: Path) -> None:
    seed(tmp_path)
    result = fluxo("usage", "--period", "2026-11", "--group-by", "service,workflow", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "SERVICE  WORKFLOW  CALLS  UNITS  AMOUNT  CURRENCY",
        "echo     orders        1      1  0.0125  EUR",
        "http     -             1      3  0.0003  EUR",
        "-------  --------  -----  -----  ------  --------",
        "TOTAL                  2      4  0.0128  EUR",
    ]


def test_usage_lists_records_as_json_or_a_table(tmp_path: Path) -> None:
    seed(tmp_path)
    listed = fluxo("usage", "--workflow", "orders", "-o", "json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    answer = json.loads(listed.stdout)
    assert [(i["call_id"], i["amount"]) for i in answer["items"]] == [("c1", "0.0125")]
    assert answer["totals"] == [{"currency": "EUR", "calls": 1, "units": 1, "amount": "0.0125"}]

    table = fluxo("usage", "--limit", "2", home=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "TIME", "SERVICE", "WORKFLOW", "JOB", "CALLS", "UNITS", "AMOUNT", "CURRENCY",
    ]  # fmt: skip
    assert lines[1].split() == [
        "2026-12-01",
        "00:00:00",
        "echo@1",
        "-",
        "-",
        "1",
        "1",
        "0.0125",
        "EUR",
    ]
    assert lines[-2].split() == ["TOTAL", "3", "5", "0.0253", "EUR"]  # every record, not the page
    assert lines[-1].startswith("(more: --cursor ")


def test_a_bad_option_is_named_with_its_fix(tmp_path: Path) -> None:
    result = fluxo("usage", "--period", "November", "--group-by", "year", home=tmp_path)
    assert result.returncode == 1
    assert "--period: expected a UTC month YYYY-MM, e.g. 2026-11" in result.stderr
    assert "--group-by: a comma list of distinct names from service, workflow" in result.stderr


@pytest.mark.slow
def test_usage_from_a_running_server_is_the_tokens_account(tmp_path: Path) -> None:
    port = free_port()
    with fluxo_up(home=tmp_path, FLUXO_PORT=str(port)):
        url = f"http://127.0.0.1:{port}"
        token = (tmp_path / "admin.token").read_text().strip()
        order = {
            "payload": {
                "id": "A-1",
                "customer": {"email": "a@example.com"},
                "items": [{"sku": "K", "qty": 1, "price": 2.5}],
            }
        }
        called = httpx.post(
            f"{url}/v1/services/parse-order/calls",
            json=order,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert called.status_code == 200, called.text
        other = tmp_path / "other"  # the CLI's own home: empty, so the answer is the server's
        result = fluxo("usage", "-o", "json", home=other, FLUXO_URL=url, FLUXO_TOKEN=token)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert [(i["service"], i["amount"]) for i in answer["items"]] == [("parse-order", "0.002")]
        refused = fluxo("usage", "--account", "x", home=other, FLUXO_URL=url, FLUXO_TOKEN=token)
        assert refused.returncode == 1
        assert "--account works on the local database" in refused.stderr
        bad = fluxo("usage", "--limit", "0", home=other, FLUXO_URL=url, FLUXO_TOKEN=token)
        assert "--limit: expected a whole number from 1 to 500" in bad.stderr
