"""The workflow pages in a real browser: list, workflow page (graph, engines, versions, exports),
the Run form (a field error first, then a job), the Node-RED import, and account isolation.

Screenshots of each page, in English and Portuguese, go to docs/screenshots/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from playwright.sync_api import expect

from fluxo.console import pages
from fluxo.console.session import CSRF_FIELD
from tests.console.conftest import Console, Server
from tests.support.fluxo_process import REPO

EXAMPLES = REPO / "examples"
# The job page belongs to the jobs pages; until they are installed, the Run form still sends
# the browser to the job's stable URL, which then answers the console's 404 page.
JOB_PAGE = any(route.name == "job" for route in pages.discover())


def _apply(server: Server, token: str, path: Path, **spec: Any) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    document["spec"].update(spec)
    return dict(server.api("POST", "/v1/workflows", document, token=token))


@pytest.fixture(scope="module")
def acme_token(server: Server) -> str:
    return server.token_for("acme", "ana")


@pytest.fixture(scope="module")
def order_intake(server: Server, acme_token: str) -> str:
    """order-intake applied twice (version 2 changes a description) in account acme."""
    _apply(server, acme_token, EXAMPLES / "order-intake.yaml")
    _apply(server, acme_token, EXAMPLES / "order-intake.yaml", description="Version two.")
    return "order-intake"


def _run_form_fill(console: Console, email: str) -> None:
    page = console.page
    page.get_by_label("id").fill("A-100")
    page.get_by_label("email").fill(email)
    page.get_by_label("sku").fill("kb-1")
    page.get_by_label("qty").fill("2")
    page.get_by_label("price").fill("12.5")


def test_the_workflow_page_shows_graph_engines_versions_diff_and_exports(
    console: Console, server: Server, order_intake: str
) -> None:
    console.sign_in()
    console.goto("/workflows")
    row = console.page.get_by_role("row").filter(has_text=order_intake)
    expect(row).to_contain_text("step")
    expect(row).to_contain_text("2")
    console.screenshot("workflows.en")
    row.get_by_role("link", name=order_intake, exact=True).click()
    expect(console.page).to_have_url(console.url(f"/workflows/{order_intake}"))

    graph = console.page.get_by_role("img", name=re.compile(f"Workflow {order_intake}: 8 steps"))
    expect(graph).to_be_visible()
    for step in ("parse", "enrich", "route", "review", "priority", "standard", "notify"):
        expect(console.page.locator(f'svg [data-step="{step}"]')).to_have_count(1)
    expect(console.page.locator('svg .edge[data-source="route"]')).to_have_count(3)
    expect(console.page.locator('tr[data-engine="step"]')).to_contain_text("yes")
    console.screenshot("workflow.en")

    console.page.get_by_label("Compare version").select_option("1")
    console.page.get_by_label("with version").select_option("2")
    console.page.get_by_role("button", name="Show the differences").click()
    expect(
        console.page.locator(".diff-add").filter(has_text="description: Version two.")
    ).to_have_count(1)
    expect(console.page.locator(".diff-del").first).to_be_visible()

    with console.page.expect_download() as download:
        console.page.get_by_role("link", name="Node-RED flow (JSON)").click()
    flow = json.loads(Path(download.value.path()).read_text())
    assert any(node.get("type") == "tab" for node in flow)
    assert download.value.suggested_filename == f"{order_intake}-2.nodered.json"
    with console.page.expect_download() as download:
        console.page.get_by_role("link", name="Argo documents (YAML)").click()
    kinds = [d["kind"] for d in yaml.safe_load_all(Path(download.value.path()).read_text()) if d]
    assert "WorkflowTemplate" in kinds


def test_run_from_the_form_a_field_error_first_then_a_job(
    console: Console, server: Server, acme_token: str, order_intake: str
) -> None:
    console.sign_in()
    console.goto(f"/workflows/{order_intake}/run")
    console.screenshot("workflow-run.en")
    _run_form_fill(console, "not an email")
    console.expect_status(422)
    console.page.get_by_role("button", name="Start the job").click()
    email = console.page.get_by_label("email")
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_have_value("not an email")  # what was typed is kept
    field = console.page.locator(".field.has-error")
    expect(field).to_have_count(1)
    expect(field).to_contain_text("does not match")
    console.screenshot("workflow-run-error.en")

    # Add a second line, then remove it again: the form changes, no job is made.
    console.page.get_by_role("button", name="Add an item to items").click()
    expect(console.page.get_by_label("sku")).to_have_count(2)
    console.page.get_by_role("button", name="Remove Item 2").click()
    expect(console.page.get_by_label("sku")).to_have_count(1)
    jobs = server.api("GET", f"/v1/jobs?workflow={order_intake}", token=acme_token)["items"]
    assert jobs == []

    email = console.page.get_by_label("email")
    email.fill("ada@example.com")
    if not JOB_PAGE:
        console.expect_status(404)
    console.page.get_by_role("button", name="Start the job").click()
    console.page.wait_for_url(re.compile(r"/console/jobs/[^/]+$"))
    job_id = console.page.url.rsplit("/", 1)[-1]
    job = server.api("GET", f"/v1/jobs/{job_id}", token=acme_token)
    assert job["workflow"] == order_intake
    assert job["input"]["customer"] == {"email": "ada@example.com"}
    assert job["input"]["items"] == [{"sku": "kb-1", "qty": 2, "price": 12.5}]


def test_import_a_node_red_flow_see_the_report_apply_and_run_it(
    console: Console, server: Server, acme_token: str
) -> None:
    console.sign_in()
    console.goto("/workflows")
    console.page.get_by_role("link", name="Import a Node-RED flow").click()
    # A file that is not a flow: the reason, and nothing else happens.
    console.expect_status(422)
    console.page.get_by_label("Flow file").set_input_files(
        {"name": "broken.json", "mimeType": "application/json", "buffer": b'[{"id": 1}'}
    )
    console.page.get_by_role("button", name="Read the flow").click()
    expect(console.page.get_by_role("alert")).to_contain_text("JSON")
    expect(console.page.locator("table.fidelity")).to_have_count(0)
    console.page.get_by_label("Flow file").set_input_files(
        str(EXAMPLES / "order-alerts.nodered.json")
    )
    console.page.get_by_role("button", name="Read the flow").click()
    report = console.page.locator("table.fidelity")
    expect(report.locator("tr.fidelity-native")).to_have_count(1)  # the function node
    expect(report.locator("tr.fidelity-dropped")).to_have_count(3)  # debug, comment, response
    expect(console.page.locator("tr.fidelity-native")).to_contain_text("function")
    expect(console.page.locator(".graph-box svg")).to_be_visible()
    console.screenshot("workflow-import.en")
    assert server.api("GET", "/v1/workflows", token=acme_token)["items"] is not None
    names = [w["name"] for w in server.api("GET", "/v1/workflows", token=acme_token)["items"]]
    assert "order-alerts" not in names  # nothing stored before apply

    console.page.get_by_label("Run on engine").select_option("step")
    console.page.get_by_role("button", name="Apply").click()
    applied = console.page.get_by_role("status")
    expect(applied).to_contain_text("order-alerts@1")
    applied.get_by_role("link", name="Run order-alerts").click()

    sample = json.loads((EXAMPLES / "order-alerts.input.json").read_text())
    console.page.get_by_label("Input (JSON)").fill(json.dumps(sample))
    if not JOB_PAGE:
        console.expect_status(404)
    console.page.get_by_role("button", name="Start the job").click()
    console.page.wait_for_url(re.compile(r"/console/jobs/[^/]+$"))
    job_id = console.page.url.rsplit("/", 1)[-1]
    job = server.api("GET", f"/v1/jobs/{job_id}?wait=30", token=acme_token)
    assert job["workflow"] == "order-alerts"
    assert job["engine"] == "step"


def test_another_account_gets_404_for_every_workflow_page(
    console: Console, server: Server, order_intake: str
) -> None:
    console.sign_in("globex")
    console.expect_status(404)
    for path in (
        f"/workflows/{order_intake}",
        f"/workflows/{order_intake}/run",
        f"/workflows/{order_intake}/export/nodered",
        f"/workflows/{order_intake}?from=1&to=2",
    ):
        response = console.goto(path)
        assert response is not None
        assert response.status == 404, path
        assert order_intake not in console.page.locator("main").inner_text()
    console.goto("/workflows")
    expect(console.page.get_by_role("link", name=order_intake)).to_have_count(0)
    # A POST of the Run form with globex's own session and CSRF value: a 404 too, no job.
    csrf = console.page.locator(f'input[name="{CSRF_FIELD}"]').first.get_attribute("value")
    assert csrf
    status, body = server.post_form(
        f"/workflows/{order_intake}/run",
        urlencode({CSRF_FIELD: csrf, "id": "x"}),
        cookie=console.session_cookie(),
    )
    assert status == 404
    assert order_intake + "@" not in body


def test_the_pages_in_portuguese(console: Console, order_intake: str) -> None:
    console.sign_in()
    console.goto("/workflows")
    console.page.get_by_label("Language").select_option("pt_BR")
    expect(console.page.get_by_role("columnheader", name="Taxa de sucesso")).to_be_visible()
    console.screenshot("workflows.pt_BR")
    console.goto(f"/workflows/{order_intake}")
    expect(console.page.get_by_role("heading", name="Grafo")).to_be_visible()
    console.screenshot("workflow.pt_BR")
    console.goto(f"/workflows/{order_intake}/run")
    expect(console.page.get_by_role("button", name="Iniciar o job")).to_be_visible()
    console.screenshot("workflow-run.pt_BR")
    console.goto("/import")
    console.screenshot("workflow-import.pt_BR")


def test_a_viewer_sees_the_workflow_but_may_not_run_or_import_it(
    console: Console, server: Server, acme_token: str, order_intake: str
) -> None:
    server.api(
        "POST",
        "/v1/users",
        {"user_id": "vera", "role": "viewer", "password": "correct horse battery"},
        token=acme_token,
    )
    console.sign_in("acme", "vera")
    console.goto(f"/workflows/{order_intake}")
    expect(console.page.get_by_role("img", name=re.compile(order_intake))).to_be_visible()
    expect(console.page.get_by_role("link", name="Run", exact=True)).to_have_count(0)
    console.goto(f"/workflows/{order_intake}/run")
    _run_form_fill(console, "ada@example.com")
    console.expect_status(403)
    console.page.get_by_role("button", name="Start the job").click()
    expect(console.page.locator("main")).to_contain_text("A viewer may look")
    jobs = server.api("GET", "/v1/jobs?workflow=order-intake&limit=500", token=acme_token)
    assert all(job["user_id"] != "vera" for job in jobs["items"])
