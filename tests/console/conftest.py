"""The console's browser harness: a real `fluxo up` and Debian's chromium driven by Playwright.

One server per test module (a fresh Fluxo home, so a fresh SQLite database) with two accounts,
``acme`` and ``globex``, each with an admin user. Each test gets a new browser context (no
cookies) and fails if the page logged any console error or raised any page error, unless the
test said it expects that HTTP status (``console.expect_status(404)``).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.support.fluxo_process import REPO, fluxo_up

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "docs" / "screenshots"
PASSWORD = "correct horse battery"
ACCOUNTS = {"acme": "ana", "globex": "gus"}

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]


WORKFLOWS: dict[str, list[dict[str, Any]]] = {
    # price -> wait: a job that runs as long as its input says, and costs 1.50 + 0.25.
    "orders": [
        {"id": "price", "kind": "service", "service": "console-price", "next": ["wait"]},
        {"id": "wait", "kind": "service", "service": "console-wait"},
    ],
    # price -> refuse: fails at its second step with the service's cause.
    "refunds": [
        {"id": "price", "kind": "service", "service": "console-price", "next": ["refuse"]},
        {"id": "refuse", "kind": "service", "service": "console-refuse"},
    ],
}


@dataclass
class Server:
    url: str
    home: Path
    admin_token: str
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, account: str) -> str:
        """An API token of the account's admin user (made once)."""
        if account not in self.tokens:
            self.tokens[account] = self.token_for(account, ACCOUNTS[account])
        return self.tokens[account]

    def apply_workflows(self, account: str) -> None:
        for name, steps in WORKFLOWS.items():
            self.api(
                "POST",
                "/v1/workflows",
                {
                    "apiVersion": "fluxo.dev/v1",
                    "kind": "Workflow",
                    "metadata": {"name": name},
                    "spec": {"engine": "step", "steps": steps},
                },
                token=self.token(account),
            )

    def run(self, account: str, workflow: str, payload: Any, wait_s: float = 20) -> dict[str, Any]:
        """Create a job and wait up to ``wait_s`` for it to end (0: return at once)."""
        job: dict[str, Any] = self.api(
            "POST",
            f"/v1/workflows/{workflow}/jobs?wait={wait_s:g}",
            {"input": payload},
            token=self.token(account),
        )
        return job

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """Call the JSON API (as the platform admin unless ``token``)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def post_form(
        self, path: str, body: str, *, cookie: str, origin: str | None = None
    ) -> tuple[int, str]:
        """POST a form to the console as a forger would: the session cookie, no browser."""
        headers = {
            "Cookie": f"fluxo_session={cookie}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if origin is not None:
            headers["Origin"] = origin
        request = urllib.request.Request(
            self.url + "/console" + path, data=body.encode(), method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as answer:
            return answer.code, answer.read().decode()

    def token_for(self, account: str, user: str) -> str:
        """An API token of ``user`` (signed in with its password through POST /v1/sessions)."""
        request = urllib.request.Request(
            self.url + "/v1/sessions",
            data=json.dumps({"account": account, "user": user, "password": PASSWORD}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            session = json.loads(response.read())["token"]
        made = self.api("POST", "/v1/tokens", {"name": "console test"}, token=session)
        return str(made["token"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("console-home")
    with fluxo_up("--port", "0", "--module", "tests.console.services", home=home) as up:
        if up.proc.poll() is not None:
            raise AssertionError(f"fluxo up ended:\n{up.output}")
        match = re.search(r"console: (\S+)", up.output)
        assert match, f"fluxo up did not print the console URL:\n{up.output}"
        token = (home / "admin.token").read_text().strip()
        running = Server(up.url, home, token)
        for account, user in ACCOUNTS.items():
            running.api(
                "POST",
                "/v1/accounts",
                {"id": account, "admin_user": user, "admin_password": PASSWORD},
            )
        yield running


# Per module, not per session: Playwright's sync API keeps an event loop marked as running in
# this thread while it is started, which would stop pytest-asyncio from running the async tests
# of the modules that come after.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None or not CHROMIUM.exists():
        reason = "the console's browser tests need playwright and /usr/bin/chromium (scripts/setup)"
        if IN_CI:
            pytest.fail(reason + "; CI must provide them")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        yield launched
        launched.close()


@dataclass
class Console:
    """One browser tab on the console, with what went wrong in it recorded."""

    page: Page
    server: Server
    errors: list[str] = field(default_factory=list)
    expected_statuses: set[int] = field(default_factory=set)

    def url(self, path: str) -> str:
        return self.server.url + "/console" + path

    def goto(self, path: str) -> Any:
        return self.page.goto(self.url(path))

    def expect_status(self, status: int) -> None:
        """The test means to load a page answering ``status``: its console line is no error."""
        self.expected_statuses.add(status)

    def sign_in(
        self, account: str = "acme", user: str | None = None, password: str = PASSWORD
    ) -> None:
        self.goto("/sign-in")
        self.page.get_by_label("Account").fill(account)
        self.page.get_by_label("User", exact=True).fill(user or ACCOUNTS[account])
        self.page.get_by_label("Password").fill(password)
        with self.page.expect_navigation():
            self.page.get_by_role("button", name="Sign in", exact=True).click()

    def session_cookie(self) -> str:
        return next(c["value"] for c in self.page.context.cookies() if c["name"] == "fluxo_session")

    def screenshot(self, name: str) -> None:
        """Save the page for the README (docs/screenshots/NAME.png), at a desktop width."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        status = re.search(r"status of (\d{3})", message.text)
        if status and int(status.group(1)) in self.expected_statuses:
            return
        self.errors.append(f"console error: {message.text} at {message.location}")


@pytest.fixture
def console(browser: Browser, server: Server) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    tab = Console(page, server)
    page.on("console", tab._on_console)
    page.on("pageerror", lambda error: tab.errors.append(f"page error: {error}"))
    page.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        context.close()
    assert tab.errors == [], "the browser reported errors:\n" + "\n".join(tab.errors)


@pytest.fixture(scope="module")
def jobs(server: Server) -> dict[str, Any]:
    """acme's jobs: two orders that succeeded, one refund that failed; globex has one of its own."""
    for account in ("acme", "globex"):
        server.apply_workflows(account)
    made = {
        "order": server.run("acme", "orders", {"order": "ord-4711", "email": "ana@example.com"}),
        "other": server.run("acme", "orders", {"order": "ord-1234", "blob": "x" * 20_000}),
        "refund": server.run("acme", "refunds", {"order": "ord-9"}),
        "globex": server.run("globex", "orders", {"order": "gx-1"}),
    }
    assert made["order"]["status"] == "succeeded", made["order"]
    assert made["refund"]["status"] == "failed", made["refund"]
    return made
