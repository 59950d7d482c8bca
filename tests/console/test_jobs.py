"""The overview, the jobs list and a job's page, in a real browser against a real server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console, Server


def test_the_overview_shows_rates_spend_and_the_latest_failure_with_its_cause(
    console: Console, jobs: dict[str, Any]
) -> None:
    console.sign_in()
    expect(console.page.locator("#fig-rate")).not_to_have_text("0.0")
    # 2 of 3 ended jobs succeeded; spend: three price calls of 1.50 and two waits of 0.25.
    expect(console.page.locator("#fig-success")).to_have_text("66.7%")
    expect(console.page.locator("#fig-today")).to_have_text("€5.00")
    failures = console.page.locator("#overview-failures")
    expect(failures).to_contain_text(jobs["refund"]["id"])
    expect(failures).to_contain_text("order ord-9 has no customer email")
    expect(failures).not_to_contain_text(jobs["globex"]["id"])
    console.screenshot("overview.en")
    console.page.get_by_label("Language").select_option("pt_BR")
    expect(console.page.locator("#fig-today")).to_have_text("€\xa05,00")
    expect(console.page.locator("#fig-success")).to_have_text("66,7%")
    console.screenshot("overview.pt_BR")


def test_the_jobs_list_filters_and_finds_a_value_inside_a_packet(
    console: Console, jobs: dict[str, Any]
) -> None:
    console.sign_in()
    console.goto("/jobs")
    table = console.page.locator("#jobs-table")
    for key in ("order", "other", "refund"):
        expect(table).to_contain_text(jobs[key]["id"])
    expect(table).not_to_contain_text(jobs["globex"]["id"])
    console.screenshot("jobs.en")

    console.page.get_by_label("Status").select_option("failed")
    console.page.get_by_role("button", name="Filter").click()
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table).to_contain_text(jobs["refund"]["id"])

    console.page.get_by_label("Status").select_option("")
    console.page.get_by_label("Value in a packet").fill("ana@example.com")
    console.page.get_by_role("button", name="Filter").click()
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table).to_contain_text(jobs["order"]["id"])
    assert "q=ana%40example.com" in console.page.url  # a search is a link to share

    console.goto("/jobs?workflow=refunds&engine=step")
    expect(table.locator("tbody tr")).to_have_count(1)
    # Another account's value finds nothing: the search is scoped like everything else.
    console.goto("/jobs?q=gx-1")
    expect(console.page.get_by_text("No jobs match these filters.")).to_be_visible()
    # The switch submits its form; a goto racing that navigation would abort one of them.
    with console.page.expect_navigation():
        console.page.get_by_label("Language").select_option("pt_BR")
    console.goto("/jobs")
    console.screenshot("jobs.pt_BR")


def test_the_job_page_shows_steps_timeline_packets_and_costs(
    console: Console, jobs: dict[str, Any]
) -> None:
    console.sign_in()
    console.goto(f"/jobs/{jobs['order']['id']}")
    steps = console.page.locator("#job-steps")
    expect(steps.locator("#step-price")).to_contain_text("succeeded")
    expect(steps.locator("#step-wait")).to_contain_text("€0.25")
    expect(console.page.locator("#job-cost")).to_have_text("€1.75")
    expect(console.page.locator("#job-timeline svg.timeline rect")).to_have_count(2)
    packet = steps.locator("#step-wait details").nth(1)  # its output
    packet.locator("summary").click()
    expect(packet.locator("pre")).to_contain_text('"waited": true')
    console.screenshot("job.en")

    # A large packet is cut in the page and downloadable whole.
    console.goto(f"/jobs/{jobs['other']['id']}")
    big = console.page.locator("#step-price details").first
    expect(big.locator("summary")).to_contain_text("cut")
    big.locator("summary").click()
    with console.page.expect_download() as download:
        big.get_by_role("link", name="Download whole packet").click()
    text = download.value.path().read_text(encoding="utf-8")
    assert text.count("x") >= 20_000

    console.goto(f"/jobs/{jobs['refund']['id']}")
    expect(console.page.get_by_role("alert")).to_contain_text("has no customer email")
    expect(console.page.locator("#step-refuse")).to_contain_text("failed")
    console.page.get_by_label("Language").select_option("pt_BR")
    expect(console.page.locator("#step-refuse")).to_contain_text("falhou")
    console.screenshot("job.pt_BR")


def test_cancel_a_running_job_from_its_page(console: Console, server: Server) -> None:
    job = server.run("acme", "orders", {"order": "ord-long", "sleep": 12}, wait_s=0)
    console.sign_in()
    console.goto(f"/jobs/{job['id']}")
    expect(console.page.locator("#step-wait")).to_contain_text("running")  # live: SSE
    console.page.once("dialog", lambda dialog: dialog.accept())
    console.page.get_by_role("button", name="Cancel job").click()
    expect(console.page.locator("#job-head")).to_contain_text("cancelled")
    assert server.api("GET", f"/v1/jobs/{job['id']}", token=server.token("acme"))["status"] == (
        "cancelled"
    )


def test_the_job_page_turns_green_live(console: Console, server: Server) -> None:
    job = server.run("acme", "orders", {"order": "ord-live", "sleep": 8}, wait_s=0)
    console.sign_in()
    console.goto(f"/jobs/{job['id']}")
    expect(console.page.locator("#job-head .status")).to_have_text("running")
    wait_node = console.page.locator('#job-graph [data-step="wait"]')
    expect(wait_node).to_have_class(re.compile(r"\bstate-running\b"))
    # No reload: the server-sent events bring the end, and the graph's step turns green.
    expect(console.page.locator("#job-head .status")).to_have_text("succeeded", timeout=20_000)
    expect(console.page.locator("#step-wait")).to_contain_text("succeeded")
    expect(wait_node).to_have_class(re.compile(r"\bstate-succeeded\b"))


@pytest.mark.parametrize(
    "path",
    ["/jobs/{id}", "/jobs/{id}/live", "/jobs/{id}/packet?part=job-input"],
)
def test_another_accounts_job_is_not_found(
    console: Console, jobs: dict[str, Any], path: str
) -> None:
    console.expect_status(404)
    console.sign_in("globex")
    response = console.goto(path.format(id=jobs["order"]["id"]))
    assert response.status == 404
    body = console.page.content()
    assert "ord-4711" not in body
    assert re.search("Not found", body)


@pytest.mark.parametrize("act", ["cancel", "retry", "resume"])
def test_another_accounts_job_cannot_be_acted_on(
    console: Console, server: Server, jobs: dict[str, Any], act: str
) -> None:
    console.sign_in("globex")
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    status, text = server.post_form(
        f"/jobs/{jobs['refund']['id']}/{act}", f"csrf={csrf}", cookie=console.session_cookie()
    )
    assert status == 404
    assert "ord-9" not in text


def test_a_job_action_needs_the_csrf_value(
    console: Console, server: Server, jobs: dict[str, Any]
) -> None:
    console.sign_in()
    status, _ = server.post_form(
        f"/jobs/{jobs['refund']['id']}/retry", "", cookie=console.session_cookie()
    )
    assert status == 403


def test_the_overview_shows_a_new_failure_without_a_reload(
    console: Console, server: Server, jobs: dict[str, Any]
) -> None:
    console.sign_in()
    failures = console.page.locator("#overview-failures")
    expect(failures).to_contain_text(jobs["refund"]["id"])
    fresh = server.run("acme", "refunds", {"order": "ord-live-failure"})
    expect(failures).to_contain_text(fresh["id"], timeout=20_000)
    expect(failures).to_contain_text("order ord-live-failure has no customer email")


def test_a_viewer_sees_a_job_but_cannot_act_on_it(
    console: Console, server: Server, jobs: dict[str, Any]
) -> None:
    server.api(
        "POST",
        "/v1/users",
        {"user_id": "vic", "role": "viewer", "password": "correct horse battery"},
        token=server.token("acme"),
    )
    console.sign_in("acme", "vic")
    console.goto(f"/jobs/{jobs['refund']['id']}")
    expect(console.page.locator("#step-refuse")).to_contain_text("failed")
    expect(console.page.get_by_role("button", name="Retry from the failed step")).to_have_count(0)
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    status, text = server.post_form(
        f"/jobs/{jobs['refund']['id']}/retry", f"csrf={csrf}", cookie=console.session_cookie()
    )
    assert status == 403
    assert "viewer" in text
