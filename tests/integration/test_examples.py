"""The workflows in ``examples/`` load cleanly and run on the step engine, on SQLite and PostgreSQL.

Each example runs against the services ``fluxo up`` offers (the built-ins and the demo order
pipeline); the expected values are worked out by hand from the demo services' behaviour (the
customer table, merged order lines, two-place decimal money).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engines.step import StepEngine
from fluxo.control.jobs import JobRecord
from fluxo.control.platform import Platform
from fluxo_core.errors import PayloadSchemaError
from fluxo_core.ir import Workflow
from fluxo_core.ir.validation import load_workflows_yaml
from fluxo_core.storage import Database, Principal
from services import builtin_services, demo_services
from translators.nodered import from_nodered

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
ME = Principal(account_id="acme", user_id="ada")
SERVICES = [*builtin_services(), *demo_services()]
KNOWN_SERVICES = [s.name for s in SERVICES] + [f"{s.name}@{s.version}" for s in SERVICES]
NOTIFY_LOGGER = "fluxo.demo.notify"


def load(name: str) -> Workflow:
    (workflow,) = load_workflows_yaml(
        (EXAMPLES / f"{name}.yaml").read_text(), known_services=KNOWN_SERVICES
    )
    return workflow


def sample(name: str) -> Any:
    return json.loads((EXAMPLES / f"{name}.input.json").read_text())


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    platform = Platform(db, SERVICES, workers=2, poll_interval_s=0.2, admission_cache_s=0)
    await platform.accounts.ensure_account("acme")
    async with platform:
        yield platform


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == NOTIFY_LOGGER]


async def run(fluxo: Platform, name: str, payload: Any, timeout: float = 20) -> JobRecord:
    await fluxo.jobs.apply(load(name), ME)
    job = await fluxo.jobs.create(ME, name, payload)
    return await fluxo.jobs.wait(ME, job.id, timeout)


# --- every example ------------------------------------------------------------------------------


def test_the_three_examples_are_there() -> None:
    assert {"order-intake", "lead-enrichment", "invoice-reminder"} <= set(EXAMPLE_NAMES)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_loads_and_its_sample_input_fits(name: str) -> None:
    workflow = load(name)
    assert workflow.metadata.name == name
    assert workflow.spec.engine == "step"
    assert 4 <= len(workflow.spec.steps) <= 8
    assert {s.kind for s in workflow.spec.steps} <= StepEngine.capabilities.step_kinds
    assert workflow.spec.input_schema is not None
    jsonschema.Draft202012Validator(workflow.spec.input_schema).validate(sample(name))
    readme = (EXAMPLES / "README.md").read_text()
    assert f"fluxo apply -f examples/{name}.yaml" in readme
    assert f"fluxo run {name} --input @examples/{name}.input.json --wait" in readme


# --- order-intake -------------------------------------------------------------------------------


async def test_order_intake_sample_takes_the_priority_path(
    fluxo: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=NOTIFY_LOGGER)
    job = await run(fluxo, "order-intake", sample("order-intake"))
    assert job.status == "succeeded", job.error
    line = (
        "PRIORITY order SO-1042 for gold customer ada@example.com: total 157.23 EUR "
        "after a discount of 17.47"
    )
    assert job.result == {
        "notified": True,
        "channel": "log",
        "message": line,
        "order_id": "SO-1042",
    }
    assert job.steps is not None
    assert [s.step_id for s in job.steps] == [
        "parse",
        "enrich",
        "measure",
        "route",
        "priority",
        "notify",
    ]
    (notify,) = (s for s in job.steps if s.step_id == "notify")
    order = notify.input
    # " Ada@Example.com " normalized; "kb-01" x2 and "KB-01" x1 merged into one line.
    assert order["customer"] == {
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "tier": "gold",
        "known": True,
    }
    assert order["lines"] == [
        {"sku": "KB-01", "qty": 3, "unit_price": "49.90", "amount": "149.70"},
        {"sku": "MS-02", "qty": 1, "unit_price": "25.00", "amount": "25.00"},
    ]
    assert (order["item_count"], order["subtotal"], order["discount"], order["total"]) == (
        4,
        "174.70",
        "17.47",
        "157.23",
    )
    assert (order["total_value"], order["handling"]) == (157.23, "priority")
    assert f"notification: {line}" in logged(caplog)


@pytest.mark.parametrize(
    ("order", "path", "message"),
    [
        pytest.param(
            {
                "id": "SO-1043",
                "customer": {"email": "grace@example.com"},
                "items": [{"sku": "desk-xl", "qty": 2, "price": "650.00"}],
            },
            "review",
            # Grace is silver, but the size case comes first: 1300.00 - 5 % = 1235.00.
            "REVIEW order SO-1043 for grace@example.com: total 1235.00 EUR is 1000 or more, "
            "hold for manual review",
            id="large-order-is-reviewed",
        ),
        pytest.param(
            {
                "id": "SO-1044",
                "customer": {"email": "ada@example.com"},
                "currency": "EUR",
                "items": [{"sku": "monitor", "qty": 2, "price": "550.00"}],
            },
            "priority",
            # 1100.00 before, 990.00 after Ada's 10 %: the discounted total decides.
            "PRIORITY order SO-1044 for gold customer ada@example.com: total 990.00 EUR "
            "after a discount of 110.00",
            id="discount-brings-it-under-review",
        ),
        pytest.param(
            {
                "id": 1045,
                "customer": {"email": "alan@example.com", "name": "Alan Turing"},
                "items": [{"sku": "cable", "qty": 3, "price": 4.5}],
            },
            "standard",
            # No message of its own: notify-log's order summary (currency defaults to EUR).
            "order 1045 for alan@example.com: total 13.50 EUR",
            id="standard-customer",
        ),
    ],
)
async def test_order_intake_routes_by_total_then_tier(
    fluxo: Platform,
    caplog: pytest.LogCaptureFixture,
    order: dict[str, Any],
    path: str,
    message: str,
) -> None:
    caplog.set_level(logging.INFO, logger=NOTIFY_LOGGER)
    job = await run(fluxo, "order-intake", order)
    assert job.status == "succeeded", job.error
    assert job.result == {
        "notified": True,
        "channel": "log",
        "message": message,
        "order_id": str(order["id"]),
    }
    assert job.steps is not None
    taken = {s.step_id for s in job.steps}
    assert (taken & {"review", "priority", "standard"}) == {path}
    assert logged(caplog) == [f"notification: {message}"]


async def test_order_intake_refuses_an_order_without_items(fluxo: Platform) -> None:
    await fluxo.jobs.apply(load("order-intake"), ME)
    order = {"id": "SO-1", "customer": {"email": "ada@example.com"}, "items": []}
    with pytest.raises(PayloadSchemaError) as caught:
        await fluxo.jobs.create(ME, "order-intake", order)
    assert [loc for loc, _ in caught.value.problems] == ["input.items"]
    assert (await fluxo.jobs.list(ME)).items == []


# --- lead-enrichment ----------------------------------------------------------------------------


async def test_lead_enrichment_scores_every_lead_in_input_order(
    fluxo: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=NOTIFY_LOGGER)
    job = await run(fluxo, "lead-enrichment", sample("lead-enrichment"))
    assert job.status == "succeeded", job.error

    def lead(customer: dict[str, Any], score: int, segment: str, **extra: Any) -> dict[str, Any]:
        message = (
            f"spring-webinar: {customer['email']} ({customer['tier']}, score {score}) -> {segment}"
        )
        return {
            "customer": customer,
            **extra,
            "campaign": "spring-webinar",
            "score": score,
            "segment": segment,
            "message": message,
        }

    expected = [
        lead(
            {"email": "grace@example.com", "tier": "silver", "known": True, "name": "Grace Hopper"},
            70,
            "sales",
            company="US Navy",
        ),
        lead(
            {
                "email": "new.lead@startup.io",
                "name": "Nia Lead",
                "tier": "standard",
                "known": False,
            },
            10,
            "nurture",
            company="Startup",
        ),
        lead(
            {"email": "ada@example.com", "tier": "gold", "known": True, "name": "Ada Lovelace"},
            90,
            "sales",
        ),
        lead(
            {
                "email": "alan@example.com",
                "name": "A. M. Turing",
                "tier": "standard",
                "known": True,
            },
            40,
            "nurture",
            company="NPL",
        ),
    ]
    assert job.result == expected
    assert job.steps is not None
    assert sorted(s.key for s in job.steps if s.step_id == "enrich") == [
        f"enrich[{i}]" for i in range(4)
    ]
    # announce calls the transform service configured by its `with`: the step's input is the
    # joined leads; the call got each lead with the ops beside it, and returned them transformed.
    (announce,) = (s for s in job.steps if s.step_id == "announce")
    assert announce.call_id is not None
    assert announce.input == [
        {k: v for k, v in item.items() if k != "message"} for item in expected
    ]
    assert announce.output == [expected]
    (notify,) = (s for s in job.steps if s.step_id == "notify")
    assert [n["message"] for n in notify.output[0]] == [item["message"] for item in expected]
    assert logged(caplog) == [f"notification: {item['message']}" for item in expected]


async def test_lead_enrichment_of_one_lead_still_gives_a_list(fluxo: Platform) -> None:
    # JSONata turns a one-item sequence into the item; the example's [ ] keep it a list.
    payload = {"campaign": "solo", "leads": [{"email": "grace@example.com"}]}
    job = await run(fluxo, "lead-enrichment", payload)
    assert job.status == "succeeded", job.error
    assert [(lead["customer"]["email"], lead["score"]) for lead in job.result] == [
        ("grace@example.com", 70)
    ]


# --- invoice-reminder ---------------------------------------------------------------------------


async def test_invoice_reminder_picks_a_level_per_invoice(
    fluxo: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=NOTIFY_LOGGER)
    job = await run(fluxo, "invoice-reminder", sample("invoice-reminder"))
    assert job.status == "succeeded", job.error
    assert [
        (i["number"], i["customer"]["tier"], i["customer"]["known"], i["reminder_level"])
        for i in job.result
    ] == [
        ("INV-2024-101", "gold", True, "firm"),  # 45 days, but gold: never a final notice
        ("INV-2024-102", "silver", True, "final"),  # 35 days
        ("INV-2024-103", "standard", True, "friendly"),  # 5 days
        ("INV-2024-104", "standard", False, "firm"),  # 20 days, unknown customer
    ]
    messages = [
        "Reminder to ada@example.com: invoice INV-2024-101 over 980.00 EUR is 45 days overdue; "
        "please pay within 7 days",
        "FINAL NOTICE to grace@example.com: invoice INV-2024-102 over 120.00 EUR is 35 days "
        "overdue; it goes to collection in 7 days",
        "Friendly reminder to alan@example.com: invoice INV-2024-103 over 49.90 GBP was due "
        "5 days ago",
        "Reminder to billing@harbour-freight.example: invoice INV-2024-104 over 310.00 EUR is "
        "20 days overdue; please pay within 7 days",
    ]
    assert [i["message"] for i in job.result] == messages
    assert logged(caplog) == [f"notification: {m}" for m in messages]
    assert job.steps is not None
    branches = {s.key: s.step_id for s in job.steps}
    assert (branches["firm-reminder[0]"], branches["final-notice[1]"]) == (
        "firm-reminder",
        "final-notice",
    )
    assert (branches["friendly-reminder[2]"], branches["firm-reminder[3]"]) == (
        "friendly-reminder",
        "firm-reminder",
    )


async def test_invoice_without_a_contact_still_gets_its_reminder(fluxo: Platform) -> None:
    invoice = {"number": "INV-9", "amount": "75.00", "currency": "EUR", "days_overdue": 31}
    job = await run(fluxo, "invoice-reminder", {"invoices": [invoice]}, timeout=5)
    assert job.status == "succeeded", job.error
    assert job.result == [
        {
            **invoice,
            "reminder_level": "final",
            "message": "FINAL NOTICE to accounts-receivable: invoice INV-9 over 75.00 EUR is 31 "
            "days overdue; it goes to collection in 7 days",
        }
    ]


# --- the Node-RED sample flow (the README's import tour) ----------------------------------------

NODERED_SAMPLE = EXAMPLES / "order-alerts.nodered.json"
REPO = EXAMPLES.parent


def test_the_nodered_sample_imports_cleanly_with_the_cli(tmp_path: Path) -> None:
    """As the README tour runs it: a report with only sinks dropped, one workflow written."""
    env = {**os.environ, "FLUXO_HOME": str(tmp_path)}
    env.pop("FLUXO_DATABASE_URL", None)
    out = tmp_path / "imported"
    command = ["import", "nodered", str(NODERED_SAMPLE), "-o", str(out), "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "fluxo.cli", *command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"] == {"mapped": 6, "native": 1, "dropped": 3}
    dropped = {n["type"] for n in report["nodes"] if n["status"] == "dropped"}
    assert dropped == {"comment", "debug", "http response"}  # sinks only: nothing is lost
    assert report["notes"] == []
    (written,) = out.glob("*.yaml")
    assert written.name == "order-alerts.yaml"
    assert [p.name for p in out.glob("*.flow.json")] == ["order-alerts-nodered.flow.json"]
    (workflow,) = load_workflows_yaml(written.read_text(), known_services=KNOWN_SERVICES)
    assert workflow.metadata.name == "order-alerts"
    assert workflow.spec.engine == "step"  # the step engine runs it as Node-RED does
    assert [s.kind for s in workflow.spec.steps] == [
        "native",
        "switch",
        "transform",
        "transform",
        "transform",
    ]
    readme = (REPO / "README.md").read_text()
    assert "fluxo import nodered examples/order-alerts.nodered.json" in readme
    assert "order-alerts.nodered.json" in (EXAMPLES / "README.md").read_text()


def imported_sample() -> dict[str, Any]:
    """The sample's workflow, on the installation's default engine (step)."""
    (workflow,) = from_nodered(NODERED_SAMPLE.read_text()).workflows
    document = workflow.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"].pop("engine")
    return document


async def test_the_nodered_sample_runs_on_the_step_engine(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported_sample(), ME)
    large = await fluxo.jobs.create(ME, "order-alerts", sample("order-alerts"))
    small_order = {
        "id": "SO-2002",
        "customer": "alan@example.com",
        "items": [{"sku": "USB-C", "qty": 2, "price": "9.95"}],
    }
    small = await fluxo.jobs.create(ME, "order-alerts", small_order)
    done = await fluxo.jobs.wait(ME, large.id, 20)
    assert done.status == "succeeded", done.error
    assert done.result == {
        **sample("order-alerts"),
        "total": 547.5,  # 2 x 249.00 + 49.50, summed in cents by the function node
        "lines": 2,
        "priority": "high",
        "message": "LARGE order SO-2001 from grace@example.com: 547.5 EUR in 2 line(s)",
    }
    assert [s.step_id for s in done.steps or []] == [
        "order-total",
        "by-size",
        "high-priority",
        "large-order-alert",
    ]
    done = await fluxo.jobs.wait(ME, small.id, 20)
    assert done.status == "succeeded", done.error
    assert done.result == {
        **small_order,
        "total": 19.9,
        "lines": 1,
        "priority": "normal",
        "message": "Order SO-2002: 19.90 EUR",
    }
