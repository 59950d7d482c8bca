"""A service's page (schemas, terms, recent calls, dead letters replayed from the page), the
child-job link of a step that called a workflow service, and the Run form's schema errors in
Portuguese; none of them shows another account's calls, dead letters or child jobs.

Screenshots of the service page, in English and Portuguese, go to docs/screenshots/.
"""

from __future__ import annotations

import json
import time
import urllib.error
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console, Server


def _switch_language(console: Console, locale: str) -> None:
    """Choose the page's language (the switch submits its form: wait for that navigation)."""
    with console.page.expect_navigation():
        console.page.locator("#locale-switch").select_option(locale)


def _direct_call(server: Server, account: str, payload: dict[str, Any]) -> str:
    """Call console-refuse directly (it fails for good: a dead letter); its call id."""
    try:
        answer = server.api(
            "POST", "/v1/services/console-refuse/calls", {"payload": payload},
            token=server.token(account),
        )  # fmt: skip
    except urllib.error.HTTPError as failed:
        answer = json.loads(failed.read())
    call_id = answer.get("id") or answer.get("call_id") or answer["context"]["call_id"]
    return str(call_id)


def _wait_for(check: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def letters(server: Server, jobs: dict[str, Any]) -> dict[str, str]:
    """One dead letter of a direct call by acme, one by globex (and acme's refund job's)."""
    made = {
        "acme": _direct_call(server, "acme", {"order": "acme-direct"}),
        "globex": _direct_call(server, "globex", {"order": "gx-direct-secret"}),
    }
    for account, call_id in made.items():
        _wait_for(
            lambda a=account, c=call_id: (
                server.api("GET", f"/v1/calls/{c}", token=server.token(a))["status"] == "failed"
            ),
            f"{account}'s call to fail",
        )
    return made


def test_the_service_page_shows_schemas_terms_calls_and_replays_a_dead_letter(
    console: Console, server: Server, jobs: dict[str, Any], letters: dict[str, str]
) -> None:
    console.sign_in()
    console.goto("/services")
    console.page.get_by_role("link", name="console-refuse").click()
    expect(console.page.get_by_role("heading", name="Service console-refuse")).to_be_visible()
    expect(console.page.locator("#service-terms")).to_contain_text("free")
    calls = console.page.locator("#service-calls")
    expect(calls).to_contain_text(letters["acme"])
    expect(calls).to_contain_text(jobs["refund"]["id"])  # the refund job's step call, linked
    table = console.page.locator("#dead-letters-table")
    expect(table.locator(f"#letter-{letters['acme']}")).to_contain_text("acme-direct")
    # A job step's dead letter is shown with its job, without a replay button.
    step_letter = table.locator("tr", has_text=jobs["refund"]["id"])
    expect(step_letter.get_by_role("button")).to_have_count(0)
    console.screenshot("service.en")
    console.page.get_by_role("button", name=f"Replay {letters['acme']}").click()
    expect(console.page.locator("#replayed")).to_have_text("1 dead letter(s) sent through again.")
    # The call ran again (and failed again: the service is not fixed): its attempts grew.
    call = server.api("GET", f"/v1/calls/{letters['acme']}", token=server.token("acme"))
    _wait_for(
        lambda: (
            server.api("GET", f"/v1/calls/{letters['acme']}", token=server.token("acme"))["status"]
            == "failed"
        ),
        "the replayed call to fail again",
    )
    assert call["id"] == letters["acme"]
    _switch_language(console, "pt_BR")
    expect(console.page.get_by_role("heading", name="Mensagens mortas")).to_be_visible()
    console.screenshot("service.pt_BR")


def test_another_accounts_calls_and_dead_letters_never_appear_nor_replay(
    console: Console, server: Server, jobs: dict[str, Any], letters: dict[str, str]
) -> None:
    console.sign_in("acme")
    console.goto("/services/console-refuse")
    body = console.page.content()
    assert letters["globex"] not in body
    assert "gx-direct-secret" not in body
    assert jobs["globex"]["id"] not in body
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    console.expect_status(404)
    status, _ = server.post_form(
        "/services/console-refuse/dead-letters/replay",
        f"csrf={csrf}&version=1&message_id={letters['globex']}",
        cookie=console.session_cookie(),
    )
    assert status == 404
    assert console.goto("/services/no-such-service").status == 404
    # globex's letter is still dead, never replayed by acme.
    console.sign_in("globex")
    console.goto("/services/console-refuse")
    expect(console.page.locator(f"#letter-{letters['globex']}")).to_be_visible()
    assert letters["acme"] not in console.page.content()


def test_a_viewer_may_not_replay(console: Console, server: Server, letters: dict[str, str]) -> None:
    server.api(
        "POST",
        "/v1/users",
        {"user_id": "val", "role": "viewer", "password": "correct horse battery"},
        token=server.token("acme"),
    )
    console.sign_in("acme", "val")
    console.goto("/services/console-refuse")
    expect(console.page.locator("#dead-letters-table button")).to_have_count(0)
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    status, text = server.post_form(
        "/services/console-refuse/dead-letters/replay",
        f"csrf={csrf}&version=1&message_id={letters['acme']}",
        cookie=console.session_cookie(),
    )
    assert status == 403
    assert "viewer" in text


# --- child jobs ---------------------------------------------------------------------------------


def _workflow(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"engine": "step", "steps": steps},
    }


def _published(name: str, workflow: str, account: str) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "workflow": {"name": workflow, "account": account},
            "price": {"perCall": "0.10", "currency": "EUR"},
            "visibility": {"scope": "public"},
        },
    }


@pytest.fixture(scope="module")
def parents(server: Server) -> dict[str, Any]:
    """Two acme jobs that call a workflow service: one published by globex (its child runs in
    globex), one published by acme itself (its child is acme's)."""
    price = [{"id": "price", "kind": "service", "service": "console-price"}]
    server.api("POST", "/v1/workflows", _workflow("gx-pricing", price),
               token=server.token("globex"))  # fmt: skip
    server.api("POST", "/v1/workflows", _workflow("acme-pricing", price),
               token=server.token("acme"))  # fmt: skip
    server.api("POST", "/v1/apply", {"documents": [
        _published("gx-pricer", "gx-pricing", "globex"),
        _published("acme-pricer", "acme-pricing", "acme"),
    ]})  # fmt: skip
    made = {}
    for caller, service in (("uses-gx", "gx-pricer"), ("uses-own", "acme-pricer")):
        steps = [{"id": "quote", "kind": "service", "service": service}]
        server.api("POST", "/v1/workflows", _workflow(caller, steps), token=server.token("acme"))
        made[caller] = server.run("acme", caller, {"order": f"{caller}-1"})
        assert made[caller]["status"] == "succeeded", made[caller]
    return made


def test_a_step_links_its_child_job_when_the_account_may_see_it(
    console: Console, server: Server, parents: dict[str, Any]
) -> None:
    console.sign_in("acme")
    console.goto(f"/jobs/{parents['uses-own']['id']}")
    link = console.page.locator("#step-quote .child-job a")
    expect(link).to_contain_text("Child job")
    with console.page.expect_navigation():
        link.click()
    child_id = console.page.url.rsplit("/", 1)[-1]
    child = server.api("GET", f"/v1/jobs/{child_id}", token=server.token("acme"))
    assert child["workflow"].startswith("acme-pricing")


def test_a_child_job_in_the_publishers_account_is_named_without_id_or_link(
    console: Console, server: Server, parents: dict[str, Any]
) -> None:
    console.sign_in("acme")
    console.goto(f"/jobs/{parents['uses-gx']['id']}")
    child = console.page.locator("#step-quote .child-job")
    expect(child).to_have_text("Its child job runs in the publisher's account.")
    expect(child.locator("a")).to_have_count(0)
    gx_jobs = server.api("GET", "/v1/jobs?workflow=gx-pricing", token=server.token("globex"))
    assert gx_jobs["items"], "globex's child job exists"
    body = console.page.content()
    for job in gx_jobs["items"]:
        assert job["id"] not in body
    _switch_language(console, "pt_BR")
    expect(console.page.locator("#step-quote .child-job")).to_have_text(
        "O job filho roda na conta de quem publicou o serviço."
    )


# --- the Run form in Portuguese -----------------------------------------------------------------


def test_the_run_forms_schema_errors_are_in_portuguese(console: Console, server: Server) -> None:
    schema = {
        "type": "object",
        "required": ["email", "qty", "size"],
        "properties": {
            "email": {"type": "string", "pattern": "^[^@]+@[^@]+$"},
            "qty": {"type": "integer", "minimum": 1},
            "size": {"type": "string", "enum": ["S", "M", "L"]},
        },
    }
    workflow = _workflow("sized", [{"id": "price", "kind": "service", "service": "console-price"}])
    workflow["spec"]["input_schema"] = schema
    server.api("POST", "/v1/workflows", workflow, token=server.token("acme"))
    console.sign_in()
    console.goto("/workflows/sized/run")
    _switch_language(console, "pt_BR")
    expect(console.page.get_by_role("button", name="Iniciar o job")).to_be_visible()
    page = console.page
    page.get_by_label("email").fill("sem arroba")
    page.get_by_label("qty").fill("0")
    console.expect_status(422)
    page.get_by_role("button", name="Iniciar o job").click()
    expect(page.locator(".field.has-error", has=page.get_by_label("email"))).to_contain_text(
        "O valor não corresponde ao padrão esperado."
    )
    expect(page.locator(".field.has-error", has=page.get_by_label("qty"))).to_contain_text(
        "Informe 1 ou mais."
    )
    assert "does not match" not in page.content()
