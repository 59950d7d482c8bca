"""The quotas, blocks and triggers pages in a real browser: what they show, the actions they
offer by role (CSRF-protected), and that another account's quotas, blocks and triggers never
appear, nor answer a guessed URL.

Screenshots of each page, in English and Portuguese, go to docs/screenshots/.
"""

from __future__ import annotations

import json
import time
import urllib.error
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import PASSWORD, Console, Server


def _switch_language(console: Console, locale: str) -> None:
    """Choose the page's language (the switch submits its form: wait for that navigation)."""
    with console.page.expect_navigation():
        console.page.locator("#locale-switch").select_option(locale)


def _put_quota(server: Server, account: str, name: str, spec: dict[str, Any]) -> None:
    server.api("PUT", f"/v1/quotas/{name}", spec, token=server.token(account))


@pytest.fixture(scope="module")
def limits(server: Server, jobs: dict[str, Any]) -> dict[str, Any]:
    """acme: a daily calls quota of the whole account, and one call of console-wait a day
    (used up by an order: its 80% and 100% events; the next order's wait call is refused);
    globex: a quota and a block of its own."""
    _put_quota(server, "acme", "daily-calls", {"kind": "calls", "limit": 1000, "period": "day"})
    _put_quota(
        server,
        "acme",
        "wait-calls",
        {
            "kind": "calls",
            "limit": 1,
            "period": "day",
            "scope": "service",
            "target": "console-wait",
        },
    )
    # The quotas are cached by the enforcer for a moment: orders until one was counted.
    deadline = time.monotonic() + 20
    while server.api("GET", "/v1/quotas/wait-calls", token=server.token("acme"))["used"] < 1:
        assert time.monotonic() < deadline, "the wait-calls quota never counted a call"
        server.run("acme", "orders", {"order": "ord-quota"})
    # One more: its wait call is past the quota, refused by the worker (the job fails).
    refused = server.run("acme", "orders", {"order": "ord-over-quota"})
    assert refused["status"] == "failed", refused
    _put_quota(server, "globex", "gx-secret-quota", {"kind": "calls", "limit": 7, "period": "day"})
    globex_block = server.api(
        "POST",
        "/v1/blocks",
        {"kind": "workflow", "target": "gx-hidden-workflow", "reason": "gx private reason"},
        token=server.token("globex"),
    )
    return {"globex_block": globex_block}


def _trigger(name: str, workflow: str) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {
            "workflow": workflow,
            "type": "webhook",
            "webhook": {"secret": f"{name}-secret"},
            "input": {"order": f"from-{name}"},
        },
    }


@pytest.fixture(scope="module")
def triggers(server: Server, jobs: dict[str, Any]) -> None:
    """acme's webhook trigger ``orders-hook``; globex's ``gx-hook``."""
    server.api("POST", "/v1/apply", {"documents": [_trigger("orders-hook", "orders")]},
               token=server.token("acme"))  # fmt: skip
    server.api("POST", "/v1/apply", {"documents": [_trigger("gx-hook", "orders")]},
               token=server.token("globex"))  # fmt: skip


def _viewer(server: Server, account: str, user: str) -> None:
    server.api(
        "POST",
        "/v1/users",
        {"user_id": user, "role": "viewer", "password": PASSWORD},
        token=server.token(account),
    )


# --- quotas -------------------------------------------------------------------------------------


def test_the_quotas_page_shows_use_limits_and_the_events(
    console: Console, limits: dict[str, Any]
) -> None:
    console.sign_in()
    console.page.get_by_role("link", name="Quotas").click()
    daily = console.page.locator("#quota-daily-calls")
    expect(daily).to_contain_text("the whole account")
    expect(daily).to_contain_text("1,000")
    wait = console.page.locator("#quota-wait-calls")
    expect(wait).to_contain_text("console-wait")
    expect(wait.locator("td").nth(4)).to_have_text("1")  # used: the order's one wait call
    expect(wait).to_contain_text("100.0%")
    # The orders after the first were refused their wait call: its quota was used up.
    refusals = console.page.locator("#quota-refusals")
    expect(refusals.locator("tbody tr").first).to_contain_text("console-wait")
    expect(refusals).to_contain_text("used up its calls quota 'wait-calls'")
    events = console.page.locator("#quota-events")
    expect(events).to_contain_text("limit reached: refusing")
    expect(events).to_contain_text("80% used")
    console.screenshot("quotas.en")
    _switch_language(console, "pt_BR")
    expect(console.page.get_by_role("heading", name="Cotas")).to_be_visible()
    expect(console.page.locator("#quota-events")).to_contain_text("limite atingido: recusando")
    console.screenshot("quotas.pt_BR")


def test_another_accounts_quotas_never_appear(console: Console, limits: dict[str, Any]) -> None:
    console.sign_in("globex")
    console.goto("/quotas")
    body = console.page.content()
    assert "gx-secret-quota" in body
    assert "daily-calls" not in body
    assert "wait-calls" not in body
    console.sign_in("acme")
    console.goto("/quotas")
    assert "gx-secret-quota" not in console.page.content()


# --- blocks -------------------------------------------------------------------------------------


def test_place_and_lift_a_block_from_the_page(
    console: Console, server: Server, limits: dict[str, Any]
) -> None:
    console.sign_in()
    console.goto("/blocks")
    expect(console.page.locator("#no-blocks")).to_be_visible()
    # Only the platform admin blocks whole accounts: an account's own admin is not offered it.
    expect(console.page.locator("#b-kind option[value=account]")).to_have_count(0)
    console.page.get_by_label("What to block").select_option("workflow")
    console.page.get_by_label("Its name").fill("refunds")
    console.page.get_by_label("Reason").fill("refunds paused for the audit")
    console.page.get_by_label("Ends at (UTC, optional)").fill("2099-01-02T10:30")
    console.page.get_by_role("button", name="Place the block").click()
    expect(console.page.get_by_role("status")).to_have_text("The block is in force.")
    active = console.page.locator("#blocks-active")
    expect(active).to_contain_text("refunds paused for the audit")
    expect(active).to_contain_text("Jan 2, 2099, 10:30:00")
    console.screenshot("blocks.en")
    # The block holds: a new refund is refused.
    try:
        answer = json.dumps(server.run("acme", "refunds", {"order": "ord-blocked"}, wait_s=0))
    except urllib.error.HTTPError as refused:
        answer = refused.read().decode()
    assert "refunds paused for the audit" in answer
    _switch_language(console, "pt_BR")
    expect(console.page.get_by_role("heading", name="Em vigor")).to_be_visible()
    console.screenshot("blocks.pt_BR")
    _switch_language(console, "en")
    expect(console.page.get_by_role("heading", name="In force")).to_be_visible()
    block_id = active.locator("code").first.inner_text()
    console.page.get_by_role("button", name=f"Lift block {block_id}").click()
    expect(console.page.get_by_role("status")).to_have_text("The block is lifted.")
    expect(console.page.locator("#blocks-history")).to_contain_text(block_id)
    expect(console.page.locator("#blocks-audit")).to_contain_text("lift")
    listed = server.api("GET", "/v1/blocks?active=true", token=server.token("acme"))["items"]
    assert listed == []


def test_another_accounts_blocks_never_appear_nor_lift(
    console: Console, server: Server, limits: dict[str, Any]
) -> None:
    console.sign_in("acme")
    console.goto("/blocks")
    body = console.page.content()
    assert "gx-hidden-workflow" not in body
    assert "gx private reason" not in body
    assert limits["globex_block"]["id"] not in body
    console.expect_status(404)
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    status, _ = server.post_form(
        f"/blocks/{limits['globex_block']['id']}/lift", f"csrf={csrf}",
        cookie=console.session_cookie(),
    )  # fmt: skip
    assert status == 404
    still = server.api("GET", "/v1/blocks?active=true", token=server.token("globex"))["items"]
    assert [b["id"] for b in still] == [limits["globex_block"]["id"]]


def test_a_viewer_sees_blocks_but_may_not_place_them(
    console: Console, server: Server, limits: dict[str, Any]
) -> None:
    _viewer(server, "acme", "vera")
    console.sign_in("acme", "vera")
    console.goto("/blocks")
    expect(console.page.locator("#block-form")).to_have_count(0)
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    status, text = server.post_form(
        "/blocks", f"csrf={csrf}&kind=workflow&target=orders&reason=x",
        cookie=console.session_cookie(),
    )  # fmt: skip
    assert status == 403
    assert "viewer" in text
    # Without the form's CSRF value, not even a member's session places one.
    console.sign_in("acme")
    status, _ = server.post_form(
        "/blocks", "kind=workflow&target=orders&reason=x", cookie=console.session_cookie()
    )
    assert status == 403
    assert server.api("GET", "/v1/blocks?active=true", token=server.token("acme"))["items"] == []


# --- triggers -----------------------------------------------------------------------------------


def test_the_triggers_page_shows_health_and_fires_pauses_and_resumes(
    console: Console, server: Server, triggers: None
) -> None:
    console.sign_in()
    console.page.get_by_role("link", name="Triggers").click()
    row = console.page.locator("#trigger-orders-hook")
    expect(row).to_contain_text("webhook")
    expect(row).to_contain_text("connected")
    expect(row.locator("td").nth(5)).to_have_text("0")
    console.page.get_by_role("button", name="Fire orders-hook now").click()
    fired = console.page.locator("#fired a")
    expect(fired).to_be_visible()
    job_id = fired.inner_text()
    job = server.api("GET", f"/v1/jobs/{job_id}?wait=20", token=server.token("acme"))
    assert job["input"] == {"order": "from-orders-hook"}
    facts = console.page.locator("#trigger-facts")
    expect(facts).to_contain_text(job_id)
    console.page.get_by_role("button", name="Pause orders-hook").click()
    expect(facts).to_contain_text("paused")
    expect(facts).to_contain_text("acme/ana")
    console.screenshot("trigger.en")
    console.goto("/triggers")
    expect(row).to_contain_text("paused")
    expect(row.locator("td").nth(5)).to_have_text("1")
    console.screenshot("triggers.en")
    console.page.get_by_role("button", name="Resume orders-hook").click()
    expect(console.page.locator("#trigger-facts")).not_to_contain_text("paused")
    _switch_language(console, "pt_BR")
    expect(console.page.locator("#trigger-facts")).to_contain_text("conectado")
    console.screenshot("trigger.pt_BR")
    console.goto("/triggers")
    expect(console.page.get_by_role("heading", name="Gatilhos")).to_be_visible()
    console.screenshot("triggers.pt_BR")


def test_another_accounts_triggers_never_appear_and_404_when_guessed(
    console: Console, server: Server, triggers: None
) -> None:
    console.sign_in("acme")
    console.goto("/triggers")
    assert "gx-hook" not in console.page.content()
    console.expect_status(404)
    assert console.goto("/triggers/gx-hook").status == 404
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    for action in ("fire", "pause", "resume"):
        status, _ = server.post_form(
            f"/triggers/gx-hook/{action}", f"csrf={csrf}", cookie=console.session_cookie()
        )
        assert status == 404, action
    gx = server.api("GET", "/v1/triggers/gx-hook", token=server.token("globex"))
    assert gx["jobsCreated"] == 0
    assert gx["paused"] is False


def test_a_viewer_sees_triggers_without_their_buttons(
    console: Console, server: Server, triggers: None
) -> None:
    _viewer(server, "acme", "vito")
    console.sign_in("acme", "vito")
    console.goto("/triggers")
    expect(console.page.locator("#trigger-orders-hook")).to_contain_text("webhook")
    expect(console.page.locator("#trigger-orders-hook button")).to_have_count(0)
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    status, text = server.post_form(
        "/triggers/orders-hook/fire", f"csrf={csrf}", cookie=console.session_cookie()
    )
    assert status == 403
    assert "viewer" in text
