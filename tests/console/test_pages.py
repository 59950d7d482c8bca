"""The services and usage pages, and what one account's pages and streams never show another."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console, Server


def test_the_service_catalogue_shows_prices_calls_errors_and_times(
    console: Console, jobs: dict[str, Any]
) -> None:
    console.sign_in()
    console.goto("/services")
    price = console.page.locator("#service-console-price")
    expect(price).to_contain_text("€1.50 per call")
    expect(price.locator("td").nth(3)).to_have_text("3")  # acme's three jobs priced once each
    expect(console.page.locator("#service-console-refuse td").nth(4)).to_have_text("100.0%")
    console.screenshot("services.en")
    console.page.get_by_label("Language").select_option("pt_BR")
    expect(price).to_contain_text("€\xa01,50 por chamada")
    console.screenshot("services.pt_BR")


def test_the_usage_page_charts_spend_lists_the_ledger_and_opens_the_invoice(
    console: Console, jobs: dict[str, Any]
) -> None:
    console.sign_in()
    console.goto("/usage")
    expect(console.page.locator("#spend-chart svg.bars rect")).to_have_count(30)
    ledger = console.page.locator("#ledger")
    expect(ledger.locator("tbody tr")).to_have_count(5)  # three prices, two waits
    console.screenshot("usage.en")
    console.page.get_by_label("Service").fill("console-wait")
    console.page.get_by_role("button", name="Filter").click()
    expect(ledger.locator("tbody tr")).to_have_count(2)
    expect(ledger).not_to_contain_text("console-price")
    console.page.get_by_role("link", name="Draft for").click()
    expect(console.page.get_by_text("console-price").first).to_be_visible()
    console.goto("/usage")
    console.page.get_by_label("Language").select_option("pt_BR")
    expect(console.page.get_by_role("heading", name="Uso e cobrança")).to_be_visible()
    console.screenshot("usage.pt_BR")


@pytest.mark.parametrize(
    "path", ["/overview", "/jobs", "/usage", "/services", "/services/console-refuse"]
)
def test_no_page_of_another_account_shows_acmes_jobs(
    console: Console, jobs: dict[str, Any], path: str
) -> None:
    console.sign_in("globex")
    console.goto(path)
    body = console.page.content()
    for key in ("order", "other", "refund"):
        assert jobs[key]["id"] not in body, path
    assert "ord-9 has no customer email" not in body


def _first_event(server: Server, path: str, cookie: str) -> tuple[int, str]:
    request = urllib.request.Request(
        server.url + "/console" + path,
        headers={"Cookie": f"fluxo_session={cookie}", "Accept": "text/event-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            lines = []
            while not any(line.startswith("data:") for line in lines):
                lines.append(response.readline().decode())
            return response.status, "".join(lines)
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_the_live_streams_are_scoped_to_the_signed_in_account(
    console: Console, server: Server, jobs: dict[str, Any]
) -> None:
    console.sign_in("globex")
    cookie = console.session_cookie()
    status, event = _first_event(server, "/overview/live", cookie)
    assert status == 200
    update = json.loads(event.split("data: ", 1)[1])
    assert jobs["refund"]["id"] not in update["overview-failures"]
    status, _ = _first_event(server, f"/jobs/{jobs['order']['id']}/live", cookie)
    assert status == 404
    status, event = _first_event(server, f"/jobs/{jobs['globex']['id']}/live", cookie)
    assert status == 200
    assert "gx-1" in event
    # Signed out: no stream at all.
    status, _ = _first_event(server, "/overview/live", "not-a-session")
    assert status == 401


def test_another_accounts_invoice_number_is_not_found(console: Console, server: Server) -> None:
    console.expect_status(404)
    console.sign_in("globex")
    response = console.goto("/usage/invoices/ACME-2026-0001")
    assert response.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/overview",
        "/jobs",
        "/services",
        "/services/console-refuse",
        "/usage",
        "/quotas",
        "/blocks",
        "/triggers",
        "/sign-in",
    ],
)
def test_pages_fit_a_phone_width(console: Console, jobs: dict[str, Any], path: str) -> None:
    if path != "/sign-in":
        console.sign_in()
    console.page.set_viewport_size({"width": 390, "height": 844})
    console.goto(path)
    # Wide tables scroll inside their own box; the page itself never scrolls sideways.
    overflow = console.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{path} is {overflow}px wider than a phone"


def test_the_keyboard_reaches_the_content_and_the_navigation(
    console: Console, jobs: dict[str, Any]
) -> None:
    console.sign_in()
    console.page.keyboard.press("Tab")
    skip = console.page.locator(":focus")
    expect(skip).to_have_text("Skip to content")
    console.page.keyboard.press("Tab")
    console.page.keyboard.press("Tab")  # past the brand, to the first link of the navigation
    expect(console.page.locator(":focus")).to_have_text("Overview")
    console.page.keyboard.press("Tab")
    console.page.keyboard.press("Tab")
    expect(console.page.locator(":focus")).to_have_text("Jobs")
    console.page.keyboard.press("Enter")
    expect(console.page).to_have_url(console.url("/jobs"))
