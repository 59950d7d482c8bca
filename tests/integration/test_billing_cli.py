"""``fluxo billing`` as a user runs it: on the local database, and against a running server."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from tests.integration.test_usage_cli import seed
from tests.support.fluxo_process import fluxo_up, free_port, run_fluxo

fluxo = run_fluxo
# Each command is a process of its own (a second or more on a busy machine); several per test.
pytestmark = pytest.mark.timeout(300)


def test_a_month_is_shown_issued_once_and_listed(tmp_path: Path) -> None:
    seed(tmp_path)  # November 2026 usage of the default account (and another's)
    draft = fluxo("billing", "invoice", "--period", "2026-11", home=tmp_path)
    assert draft.returncode == 0, draft.stderr
    assert draft.stdout.splitlines() == [
        "Draft invoice 2026-11  account default  period 2026-11 (UTC)  draft",
        "SERVICE  WORKFLOW  CALLS  UNITS  AMOUNT  CURRENCY",
        "echo     orders        1      1  0.0125  EUR",
        "http     -             1      3  0.0003  EUR",
        "-------  --------  -----  -----  ------  --------",
        "TOTAL                            0.0128  EUR",
    ]
    issued = fluxo("billing", "issue", "--period", "2026-11", "--by", "ops", "-o", "json",
                   home=tmp_path)  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    doc = json.loads(issued.stdout)
    assert (doc["number"], doc["issued_by"], doc["totals"]) == (
        "DEFAULT-2026-0001",
        "ops",
        [{"currency": "EUR", "amount": "0.0128"}],
    )
    again = fluxo("billing", "issue", "--period", "2026-11", home=tmp_path)
    assert again.returncode == 1
    assert "invoice DEFAULT-2026-0001 of 2026-11 is issued and never changes" in again.stderr
    as_csv = fluxo("billing", "invoice", "--number", "DEFAULT-2026-0001", "-o", "csv",
                   home=tmp_path)  # fmt: skip
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[-1] == [
        "DEFAULT-2026-0001",
        "2026-11",
        "total",
        "",
        "",
        "",
        "",
        "",
        "0.0128",
        "EUR",
    ]
    page = fluxo("billing", "invoice", "--period", "2026-11", "-o", "html", home=tmp_path)
    assert "<h1>Invoice DEFAULT-2026-0001</h1>" in page.stdout
    listed = fluxo("billing", "invoices", home=tmp_path)
    assert listed.stdout.splitlines()[1].split()[:2] == ["DEFAULT-2026-0001", "2026-11"]
    # Another account's month is its own, with its own numbers.
    acme = fluxo("billing", "issue", "--account", "acme", "--period", "2026-11", home=tmp_path)
    assert acme.returncode == 0, acme.stderr
    assert acme.stdout.startswith("Invoice ACME-2026-0001  account acme")


def test_a_credit_counts_in_this_months_invoice(tmp_path: Path) -> None:
    seed(tmp_path)
    made = fluxo("billing", "credit", "--amount", "1.5", "--reason", "goodwill", "--by", "ops",
                 home=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("credited default: -1.50 EUR (goodwill) by ops, entry credit-")
    month = time.strftime("%Y-%m", time.gmtime())
    shown = fluxo("billing", "invoice", "--period", month, "-o", "json", home=tmp_path)
    doc = json.loads(shown.stdout)
    credits = [line for line in doc["lines"] if line["kind"] == "credit"]
    assert [(line["description"], line["amount"]) for line in credits] == [("goodwill", "-1.50")]
    bad = fluxo("billing", "credit", "--amount", "-2", "--reason", "", home=tmp_path)
    assert bad.returncode == 1
    assert "body.amount" in bad.stderr
    assert "body.reason" in bad.stderr
    wrong = fluxo("billing", "invoice", "--period", "2026-13", home=tmp_path)
    assert wrong.returncode == 1
    assert "--period: expected a UTC month YYYY-MM" in wrong.stderr


@pytest.mark.slow
def test_billing_on_a_running_server_is_the_tokens_account(tmp_path: Path) -> None:
    port = free_port()
    with fluxo_up(home=tmp_path, FLUXO_PORT=str(port)):
        env = {
            "FLUXO_URL": f"http://127.0.0.1:{port}",
            "FLUXO_TOKEN": (tmp_path / "admin.token").read_text().strip(),
        }
        other = tmp_path / "other"  # the CLI's own home: empty, so the answers are the server's
        made = fluxo("billing", "credit", "--amount", "2", "--reason", "sorry", home=other, **env)
        assert made.returncode == 0, made.stderr
        # A platform admin credits the account it names; the server knows no such account.
        elsewhere = ["--account", "initech", "--amount", "2", "--reason", "sorry"]
        unknown = fluxo("billing", "credit", *elsewhere, home=other, **env)
        assert unknown.returncode == 1
        assert "no account 'initech'" in unknown.stderr
        month = time.strftime("%Y-%m", time.gmtime())
        shown = fluxo("billing", "invoice", "--period", month, "-o", "csv", home=other, **env)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[-1] == f"draft,{month},total,,,,,,-2.00,EUR"
        early = fluxo("billing", "issue", "--period", month, home=other, **env)
        assert early.returncode == 1
        assert f"period {month} has not ended" in early.stderr
        refused = fluxo("billing", "invoices", "--account", "x", home=other, **env)
        assert refused.returncode == 1
        assert "--account works on the local database" in refused.stderr
