"""Credits and invoices over the API, on SQLite and PostgreSQL: a draft reflects the ledger, a
credit is an entry of its own, issuing numbers and freezes an invoice that never changes again;
JSON, CSV and a printable HTML page that Chromium prints to PDF."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.clock import ManualClock
from fluxo_core.storage import Database, UsageLedger, bulk_insert
from fluxo_core.storage.tables import jobs
from tests.integration.test_usage_ledger import FIRST_OF_DEC, LAST_OF_NOV, at, usage
from tests.support import services as svc
from tests.support.rows import JobRowToWrite

pytestmark = pytest.mark.timeout(60)

SEEDED = [
    usage("c1", account="acme", job="j-orders", when=at("2026-11-02T10:00:00")),
    usage("c2", account="acme", job="j-orders", service="http", units=3, price=100),
    usage("c3", account="acme"),  # a direct call
    usage("c4", account="acme", when=FIRST_OF_DEC),  # December's
    usage("c5", account="acme", service="http", currency="USD", price=7),
    usage("g1", account="globex", job="j-globex"),
]
NOV = [
    {"kind": "usage", "service": "echo", "workflow": None, "description": None,
     "calls": 1, "units": 1, "amount": "0.0125", "currency": "EUR"},
    {"kind": "usage", "service": "echo", "workflow": "orders", "description": None,
     "calls": 1, "units": 1, "amount": "0.0125", "currency": "EUR"},
    {"kind": "usage", "service": "http", "workflow": None, "description": None,
     "calls": 1, "units": 1, "amount": "0.000007", "currency": "USD"},
    {"kind": "usage", "service": "http", "workflow": "orders", "description": None,
     "calls": 1, "units": 3, "amount": "0.0003", "currency": "EUR"},
]  # fmt: skip


@dataclass
class Api:
    http: TestClient[Any, Any]
    headers: dict[str, str]  # acme's account admin
    admin: dict[str, str]  # the platform admin: credits are the platform's corrections
    clock: ManualClock
    ledger: UsageLedger

    async def call(
        self, method: str, path: str, status: int, body: Any = None, *, as_admin: bool = False
    ) -> Any:
        headers = self.admin if as_admin else self.headers
        response = await self.http.request(method, path, headers=headers, json=body)
        text = await response.text()
        assert response.status == status, text
        return await response.json() if response.content_type == "application/json" else text


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    # The platform's clock stands in the last hours of November 2026.
    clock = ManualClock(at("2026-11-30T12:00:00"))
    platform = Platform(db, svc.SERVICES, workers=1, poll_interval_s=0.2, clock=clock)
    for account in ("default", "acme", "globex"):
        await platform.accounts.ensure_account(account)
    headers = {"Authorization": f"Bearer {await platform.accounts.issue_token('acme', 'ada')}"}
    admin = {"Authorization": f"Bearer {await platform.accounts.issue_token('default', 'root')}"}
    job_rows = [
        JobRowToWrite("j-orders", "acme", "ada", "orders", 1, "step", "succeeded", b"{}", 0, 1.0),
        JobRowToWrite("j-globex", "globex", "gus", "orders", 1, "step", "succeeded", b"{}", 0, 1.0),
    ]

    def seed(tx: Any) -> None:
        bulk_insert(tx, jobs, job_rows)
        UsageLedger.record(tx, SEEDED)

    await db.transact(seed)
    app = create_app(platform, max_packet_bytes=65536)
    async with platform, TestClient(TestServer(app)) as http:
        yield Api(http, headers, admin, clock, UsageLedger(db))


async def test_a_draft_holds_the_months_lines_per_service_and_workflow(api: Api) -> None:
    invoice = await api.call("GET", "/v1/invoices/2026-11", 200)
    assert invoice["status"] == "draft"
    assert invoice["number"] is None
    assert (invoice["period_start"], invoice["period_end"]) == (
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    )
    assert invoice["lines"] == NOV
    # Exact decimals, per currency: never one total across currencies.
    assert invoice["totals"] == [
        {"currency": "EUR", "amount": "0.0253"},
        {"currency": "USD", "amount": "0.000007"},
    ]
    # A draft reflects the ledger: a new record shows at once.
    await api.ledger.add([usage("c6", account="acme", when=LAST_OF_NOV)])
    invoice = await api.call("GET", "/v1/invoices/2026-11", 200)
    assert invoice["totals"][0] == {"currency": "EUR", "amount": "0.0378"}


async def test_a_credit_is_an_entry_of_its_own_counted_in_usage_and_invoice(api: Api) -> None:
    before = await api.ledger.of_account("acme")
    body = {"account": "acme", "amount": "0.02", "reason": "outage on 2026-11-03"}
    # Not the account's own admin: a credit is money the seller gives back.
    await api.call("POST", "/v1/usage/credits", 404, body)
    assert await api.ledger.of_account("acme") == before
    credit = await api.call("POST", "/v1/usage/credits", 201, body, as_admin=True)
    assert credit["amount"] == "-0.02"
    assert (credit["account"], credit["created_by"], credit["currency"]) == ("acme", "root", "EUR")
    # Append-only: the earlier records are as they were, the credit follows them.
    after = await api.ledger.of_account("acme")
    assert after[: len(before)] == before
    [entry] = after[len(before) :]
    assert (entry.outcome, entry.amount_micros, entry.reason) == (
        "credit",
        -20_000,
        "outage on 2026-11-03",
    )
    usage_now = await api.call("GET", "/v1/usage?period=2026-11&group_by=service", 200)
    assert usage_now["totals"][0] == {"currency": "EUR", "calls": 3, "units": 5, "amount": "0.0053"}
    invoice = await api.call("GET", "/v1/invoices/2026-11", 200)
    assert invoice["lines"][-1] == {
        "kind": "credit",
        "service": "credit",
        "workflow": None,
        "description": "outage on 2026-11-03",
        "calls": 0,
        "units": 0,
        "amount": "-0.02",
        "currency": "EUR",
    }
    assert invoice["totals"][0] == {"currency": "EUR", "amount": "0.0053"}


async def test_a_bad_credit_is_refused_naming_each_problem(api: Api) -> None:
    body = {"amount": "-5", "currency": "eur", "reason": " ", "account": "acme", "to": "x"}
    error = (await api.call("POST", "/v1/usage/credits", 422, body, as_admin=True))["error"]
    assert {p["location"] for p in error["problems"]} == {
        "body.amount",
        "body.currency",
        "body.reason",
        "body.to",
    }
    body = {"amount": "1", "reason": "x", "account": ["acme"]}
    error = (await api.call("POST", "/v1/usage/credits", 422, body, as_admin=True))["error"]
    assert [p["location"] for p in error["problems"]] == ["body.account"]
    body = {"amount": "1", "reason": "x", "account": "initech"}
    await api.call("POST", "/v1/usage/credits", 404, body, as_admin=True)
    body = {"amount": "0.0000001", "reason": "x", "account": "acme"}
    error = (await api.call("POST", "/v1/usage/credits", 422, body, as_admin=True))["error"]
    assert [(p["location"], p["message"]) for p in error["problems"]] == [
        ("body.amount", "at most six decimal places")
    ]


async def test_issuing_numbers_and_freezes_the_invoice_for_good(api: Api) -> None:
    # November has not ended yet: its invoice cannot be issued.
    await api.call("POST", "/v1/invoices/2026-11/issue", 409)
    api.clock.advance(24 * 3600)  # December 1st, noon
    issued = await api.call("POST", "/v1/invoices/2026-11/issue", 201)
    assert (issued["status"], issued["number"], issued["issued_by"]) == (
        "issued",
        "ACME-2026-0001",
        "ada",
    )
    assert issued["lines"] == NOV
    # The ledger goes on (a late record, a credit); the issued invoice does not change.
    await api.ledger.add([usage("late", account="acme", when=LAST_OF_NOV)])
    shown = await api.call("GET", "/v1/invoices/2026-11", 200)
    assert shown == issued == await api.call("GET", "/v1/invoices/ACME-2026-0001", 200)
    error = (await api.call("POST", "/v1/invoices/2026-11/issue", 409))["error"]
    assert "ACME-2026-0001" in error["message"]
    # Numbers are sequential per account.
    october = await api.call("POST", "/v1/invoices/2026-10/issue", 201)
    assert october["number"] == "ACME-2026-0002"
    assert october["lines"] == []
    assert october["totals"] == []
    listed = await api.call("GET", "/v1/invoices", 200)
    assert [(i["period"], i["number"]) for i in listed["items"]] == [
        ("2026-10", "ACME-2026-0002"),
        ("2026-11", "ACME-2026-0001"),
    ]


async def test_unknown_invoices_and_bad_periods_are_named(api: Api) -> None:
    await api.call("GET", "/v1/invoices/ACME-2026-0099", 404)
    await api.call("GET", "/v1/invoices/2026-13", 422)
    await api.call("GET", "/v1/invoices/2026-11?format=pdf", 422)
    await api.call("POST", "/v1/invoices/november/issue", 422)


async def test_csv_has_a_row_per_line_and_a_total_per_currency(api: Api) -> None:
    body = {"account": "acme", "amount": "0.01", "reason": "=HYPERLINK(evil)"}
    await api.call("POST", "/v1/usage/credits", 201, body, as_admin=True)
    text = await api.call("GET", "/v1/invoices/2026-11?format=csv", 200)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [
        "number", "period", "kind", "service", "workflow", "description", "calls", "units",
        "amount", "currency",
    ]  # fmt: skip
    assert rows[2] == ["draft", "2026-11", "usage", "echo", "orders", "", "1", "1", "0.0125", "EUR"]
    # A formula in a credit's reason is kept as text.
    assert rows[5][2:] == ["credit", "credit", "", "'=HYPERLINK(evil)", "0", "0", "-0.01", "EUR"]
    assert rows[-2:] == [
        ["draft", "2026-11", "total", "", "", "", "", "", "0.0153", "EUR"],
        ["draft", "2026-11", "total", "", "", "", "", "", "0.000007", "USD"],
    ]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


async def test_the_html_page_prints_to_a_pdf_with_the_invoice_number(
    api: Api, tmp_path: Path
) -> None:
    body = {"account": "acme", "amount": "0.01", "reason": "<b>late</b>"}
    await api.call("POST", "/v1/usage/credits", 201, body, as_admin=True)
    api.clock.advance(24 * 3600)
    issued = await api.call("POST", "/v1/invoices/2026-11/issue", 201)
    page = await api.call("GET", f"/v1/invoices/{issued['number']}?format=html", 200)
    assert "<title>Invoice ACME-2026-0001 - acme</title>" in page
    assert "&lt;b&gt;late&lt;/b&gt;" in page  # autoescaped
    assert "0.000007" in page
    assert "0.0153" in page
    browser = chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have chromium (scripts/setup installs it)")
        pytest.skip("no chromium binary on PATH: install chromium (apt) to print the PDF")
    html = tmp_path / "invoice.html"
    html.write_text(page, encoding="utf-8")
    pdf = tmp_path / "invoice.pdf"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    text = pdf_text(pdf, data)
    assert "ACME-2026-0001" in text


def pdf_text(pdf: Path, data: bytes) -> str:
    """The PDF's text (pdftotext), else its metadata, where Chromium puts the page's title."""
    if shutil.which("pdftotext"):
        return subprocess.run(
            ["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True
        ).stdout
    return data.decode("latin-1")
