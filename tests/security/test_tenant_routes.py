"""Every route of the API, called by another account, returns and changes nothing of account B.

The route list is read from the served OpenAPI document (``/v1/openapi.json``): each operation
needs a case below, and each route the application serves needs to be in the document, so a new
route without a case fails :func:`test_every_route_has_a_case`. Public routes are the explicit
exception list :data:`PUBLIC`.

Account B (``globex``) owns a workflow on an external engine, a running job on it with one step
its engine made, and a direct service call; all carry the marker :data:`SECRET`. Account A
(``acme``) attacks with its user token and with its engine token. An answer may be a refusal
(the statuses each case allows) or A's own data (lists), never anything carrying B's marker or
ids; afterwards B's workflow, job, steps, calls and usage are as they were.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.auth import Auth
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, Principal, Role
from fluxo_core.storage.attachments import attachment_ref
from fluxo_core.storage.invoices import InvoiceStore
from fluxo_core.storage.quotas import QuotaSpec
from fluxo_core.storage.secrets import SecretStore
from fluxo_core.storage.tables import calls, usage_records
from tests.integration.test_remote_engines import RecordingEngine, until
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)

PUBLIC = frozenset(
    {
        ("get", "/"),
        ("get", "/v1/health"),
        ("get", "/v1/openapi.json"),
        ("get", "/livez"),
        ("get", "/readyz"),
    }
)
SECRET = "globex-secret-7f3a"
B_ATTACHMENT = f"attachment {SECRET}".encode()
B = Principal(account_id="globex", user_id="gus")
B_WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "globex-private"},
    "spec": {
        "engine": "nodered",
        "steps": [
            {"id": "first", "kind": "service", "service": "inc", "next": ["second"]},
            {"id": "second", "kind": "service", "service": "inc"},
        ],
    },
}

# B's own resource: a Quota whose spec carries the marker.
B_QUOTA = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Quota",
    "metadata": {"name": "globex-quota"},
    "spec": {"kind": "calls", "limit": 5, "period": "day", "scope": "workflow", "target": SECRET},
}


@dataclass
class World:
    platform: Platform
    http: TestClient[Any, Any]
    tokens: dict[str, str]  # "user", "engine": account A's; "b-engine": B's own engine
    job_id: str  # B's running job (one step made by its engine)
    call_id: str  # B's direct call
    workflow: str  # B's workflow name
    secret: str = "globex-stripe-key"  # B's stored secret (its value carries the marker)
    b_token_id: str = ""  # B's API token's id
    b_session_id: str = ""  # B's user's console session's id
    invoice: str = ""  # the number of B's issued invoice of this month
    period: str = ""  # this month, YYYY-MM
    quota: str = "globex-daily-calls"  # B's quota
    block_id: str = ""  # B's block (on a service its job does not use)
    hook: str = "globex-hook"  # B's webhook trigger (its secret's value carries the marker)

    async def send(self, method: str, path: str, who: str, body: Any = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        data = None if body is None else json.dumps(body)
        response = await self.http.request(method, path, data=data, headers=headers)
        return response.status, await response.text()

    async def state_of_b(self) -> Any:
        """Everything of B an attack could change, as plain data."""
        job = await self.platform.jobs.get(B, self.job_id)
        call = await self.platform.runtime.gateway.get(self.call_id, account_id="globex")
        workflows = await self.platform.workflows.list("globex")
        page = await self.platform.jobs.list(B)
        query = sa.select(calls.c.id, calls.c.status, calls.c.account_id).order_by(calls.c.id)
        usage = sa.select(usage_records.c.account_id, usage_records.c.job_id).order_by(
            usage_records.c.job_id
        )
        assert self.platform.secrets is not None
        stored = await self.platform.secrets.list("globex")
        values = await self.platform.secrets.reveal("globex", [i.name for i in stored])
        issued = await InvoiceStore(self.platform.db).issued("globex", self.period)
        rows = await self.platform.db.read(lambda c: c.execute(query).all())
        accounts = self.platform.accounts
        used = await self.platform.db.read(lambda c: c.execute(usage).all())
        resources = [
            await self.platform.resources.list(B, kind) for kind in ("Quota", "Workflow", "Account")
        ]
        quotas = await self.platform.quotas.list("globex")
        return (
            resources,
            quotas,
            job.model_dump(mode="json"),
            call.model_dump(mode="json"),
            [(a.ref, a.workflow.model_dump(mode="json")) for a in workflows],
            [j.id for j in page.items],
            [tuple(r) for r in rows if r.account_id == "globex"],
            [tuple(r) for r in used if r.account_id == "globex"],
            [(i.name, i.updated_at) for i in stored],
            values,
            [u.to_json() for u in await Auth(self.platform.db, accounts).users.list("globex")],
            [t.to_json() for t in await accounts.list_tokens("globex")],
            [t.to_json() for t in await accounts.list_tokens("globex", kind="session")],
            issued,
            [b.model_dump(mode="json") for b in await self.platform.blocks.find(B)],
            [t.to_json() for t in await self.platform.triggers.store.list("globex")],
        )


@pytest.fixture
async def world(db: Database, tmp_path: Path) -> AsyncIterator[World]:
    engine = RecordingEngine()
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        admission_cache_s=0,
        engines=("step", engine),
        secrets=SecretStore(db, tmp_path / "secret.key"),
    )
    for account in ("acme", "globex"):
        await platform.accounts.ensure_account(account)
    tokens = {
        "user": await platform.accounts.issue_token("acme", "ada"),
        "engine": await platform.accounts.issue_token("acme", "node-red", engine="nodered"),
        "b-engine": await platform.accounts.issue_token("globex", "node-red", engine="nodered"),
        "b-user": await platform.accounts.issue_token("globex", "gus"),
    }
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
    ):
        await platform.jobs.apply(B_WORKFLOW, B)
        job = await platform.jobs.create(B, "globex-private", {"n": 1, "secret": SECRET})

        async def status() -> str:
            return (await platform.jobs.get(B, job.id, steps=False)).status

        await until(status, "running")
        world = World(platform, http, tokens, job.id, "", "globex-private")
        assert platform.secrets is not None
        await platform.secrets.put("globex", world.secret, f"sk_live_{SECRET}")
        await platform.resources.apply(B, B_QUOTA)
        admin = Principal(account_id="default", user_id="admin")
        await platform.accounts.ensure_account("default")
        await platform.resources.apply(
            admin,
            {"apiVersion": "fluxo.dev/v1", "kind": "Account", "metadata": {"name": "globex"}},
        )
        await platform.quotas.set(
            "globex", world.quota, QuotaSpec(kind="calls", limit=1000, period="day")
        )
        first = {
            "id": "nr-globex-first",
            "job_id": job.id,
            "step_id": "first",
            "payload": {"n": 1, "secret": SECRET},
            "headers": {"fluxo-step-key": "first"},
        }
        code, text = await world.send("POST", "/v1/services/inc/calls?wait=10", "b-engine", first)
        assert code == 200, text
        direct = {"payload": {"n": 5, "secret": SECRET}}
        code, text = await world.send("POST", "/v1/services/inc/calls?wait=10", "b-user", direct)
        assert code == 200, text
        world.call_id = json.loads(text)["id"]
        # B's user with a password, an API token of its own and a console session.
        auth = Auth(db, platform.accounts)
        await auth.users.add("globex", "gus", Role.ACCOUNT_ADMIN, await auth.hash_password(SECRET))
        _, info = await platform.accounts.create_token("globex", "gus", f"ci {SECRET}")
        world.b_token_id = info.id
        world.b_session_id = (await auth.sign_in("globex", "gus", SECRET)).session.id
        # B's invoice of this month, issued (the store issues any period; the API only ended ones).
        world.period = time.strftime("%Y-%m", time.gmtime())
        issued = await InvoiceStore(db).issue("globex", world.period, issued_by="gus", now=0.0)
        assert issued.header is not None
        world.invoice = issued.header.number
        block = await platform.blocks.place(B, kind="service", target="echo", reason=SECRET)
        world.block_id = block.id
        # B's webhook trigger, and its secret.
        await platform.secrets.put("globex", "globex-hook-key", f"whsec_{SECRET}")
        await platform.resources.apply(
            B,
            {
                "apiVersion": "fluxo.dev/v1",
                "kind": "Trigger",
                "metadata": {"name": world.hook},
                "spec": {
                    "workflow": "globex-private",
                    "type": "webhook",
                    "webhook": {"secret": "globex-hook-key"},
                },
            },
        )
        # An attachment of B's trigger (as an email trigger stores one; its bytes the marker).
        await platform.attachments.put("globex", world.hook, "b.txt", "text/plain", B_ATTACHMENT)
        yield world


# --- the cases: (method, path template) -> requests, each with the statuses it may answer ----

Request = tuple[str, Any, set[int]]  # path, body (None: no body), allowed statuses
Case = Callable[[World, str], list[Request]]


def _job_packet(w: World, **extra: Any) -> dict[str, Any]:
    return {
        "id": "nr-attack",
        "job_id": w.job_id,
        "step_id": "second",
        "payload": {"n": 100},
        "headers": {"fluxo-step-key": "second"},
        **extra,
    }


def _engine_events(w: World, who: str, path: str) -> list[Request]:
    allowed = {404} if who == "engine" else {403}
    forged = {"job_id": w.job_id, "status": "succeeded", "result": [{"n": 999}]}
    failed = {"job_id": w.job_id, "status": "failed", "error": {"code": "x", "message": "y"}}
    argo = {"job_id": w.job_id, "engine": "argo", "event": "finished", "run": "x"}
    return [(path, body, allowed) for body in (forged, failed, argo)]


def _forbidden_to_engines(who: str, for_users: set[int]) -> set[int]:
    """An engine token may not use a read route at all (403); a user gets ``for_users``."""
    return {403} if who == "engine" else for_users


CASES: dict[tuple[str, str], Case] = {
    ("get", "/v1/services"): lambda w, who: [
        ("/v1/services", None, _forbidden_to_engines(who, {200}))
    ],
    ("post", "/v1/services/{name}/calls"): lambda w, who: [
        (
            "/v1/services/inc/calls?wait=5",
            body,
            {404} if who == "engine" else {422},
        )
        for body in (
            _job_packet(w),
            _job_packet(w, id="nr-attack-ref", headers={"fluxo-payload-ref": w.job_id}),
            {"job_id": w.job_id, "payload": {"n": 1}},
        )
    ],
    # B's call is not A's dead letter: A lists its own (none), and replaying B's is a 404.
    ("get", "/v1/services/{name}/dead-letters"): lambda w, who: [
        ("/v1/services/inc/dead-letters", None, _forbidden_to_engines(who, {200}))
    ],
    ("post", "/v1/services/{name}/dead-letters/replay"): lambda w, who: [
        (
            "/v1/services/inc/dead-letters/replay",
            {"message_ids": [w.call_id]},
            _forbidden_to_engines(who, {404}),
        )
    ],
    ("get", "/v1/calls/{call_id}"): lambda w, who: [
        (f"/v1/calls/{w.call_id}", None, _forbidden_to_engines(who, {404})),
        (f"/v1/calls/{w.call_id}?wait=1", None, _forbidden_to_engines(who, {404})),
    ],
    ("post", "/v1/workflows"): lambda w, who: [
        (
            "/v1/workflows",
            {**B_WORKFLOW, "metadata": {"name": w.workflow, "account": "globex"}},
            _forbidden_to_engines(who, {422}),
        )
    ],
    ("get", "/v1/workflows"): lambda w, who: [
        ("/v1/workflows", None, _forbidden_to_engines(who, {200}))
    ],
    ("get", "/v1/workflows/{name}"): lambda w, who: [
        (f"/v1/workflows/{w.workflow}", None, _forbidden_to_engines(who, {404})),
        (f"/v1/workflows/{w.workflow}?version=1", None, _forbidden_to_engines(who, {404})),
    ],
    ("post", "/v1/workflows/{name}/jobs"): lambda w, who: [
        (f"/v1/workflows/{w.workflow}/jobs", {"input": {"n": 1}}, {404}),
        (f"/v1/workflows/{w.workflow}@1/jobs", {"input": {"n": 1}}, {404}),
    ],
    ("get", "/v1/jobs"): lambda w, who: [
        ("/v1/jobs", None, _forbidden_to_engines(who, {200})),
        (f"/v1/jobs?workflow={w.workflow}", None, _forbidden_to_engines(who, {200})),
    ],
    ("get", "/v1/jobs/{job_id}"): lambda w, who: [
        (f"/v1/jobs/{w.job_id}", None, _forbidden_to_engines(who, {404})),
        (f"/v1/jobs/{w.job_id}?wait=1", None, _forbidden_to_engines(who, {404})),
    ],
    ("post", "/v1/jobs/{job_id}/cancel"): lambda w, who: [
        (f"/v1/jobs/{w.job_id}/cancel", None, _forbidden_to_engines(who, {404}))
    ],
    ("post", "/v1/jobs/{job_id}/engine-events"): lambda w, who: _engine_events(
        w, who, f"/v1/jobs/{w.job_id}/engine-events"
    ),
    ("post", "/v1/engine-events"): lambda w, who: _engine_events(w, who, "/v1/engine-events"),
    ("get", "/v1/secrets"): lambda w, who: [
        ("/v1/secrets", None, _forbidden_to_engines(who, {200}))
    ],
    # A's own secret of the same name: a new one of A's (201), B's stays as it was.
    ("put", "/v1/secrets/{name}"): lambda w, who: [
        (f"/v1/secrets/{w.secret}", {"value": "acme-value"}, _forbidden_to_engines(who, {201}))
    ],
    ("delete", "/v1/secrets/{name}"): lambda w, who: [
        (f"/v1/secrets/{w.secret}", None, _forbidden_to_engines(who, {404}))
    ],
    # Every account's numbers: for the admin account only, so A's user gets 404 and its engine
    # token is refused before the route (403).
    ("get", "/metrics"): lambda w, who: [("/metrics", None, _forbidden_to_engines(who, {404}))],
    # B's usage rows exist (its job's step call and its direct call): A's filters naming B's
    # job or workflow, and A's groups, hold none of them.
    ("get", "/v1/usage"): lambda w, who: [
        (path, None, _forbidden_to_engines(who, {200}))
        for path in (
            "/v1/usage",
            f"/v1/usage?job={w.job_id}",
            f"/v1/usage?workflow={w.workflow}&service=inc",
            "/v1/usage?group_by=workflow,job,service,day,month",
        )
    ],
    # Users, tokens, sessions, accounts (fluxo/api/auth.py). A's token is an account admin's
    # (the default role of a token outside the platform's account): B's user, token and session
    # are 404 to it, whatever it may do in its own account.
    ("get", "/v1/me"): lambda w, who: [("/v1/me", None, _forbidden_to_engines(who, {200}))],
    ("get", "/v1/users"): lambda w, who: [("/v1/users", None, _forbidden_to_engines(who, {200}))],
    # A user of A's own (201; not "gus", which the later cases probe as B's). No role above
    # one's own.
    ("post", "/v1/users"): lambda w, who: [
        ("/v1/users", {"user_id": "alan", "role": "member"}, _forbidden_to_engines(who, {201})),
        ("/v1/users", {"user_id": "eve", "role": "platform-admin"}, {403}),
    ],
    ("get", "/v1/users/{user_id}"): lambda w, who: [
        ("/v1/users/gus", None, _forbidden_to_engines(who, {404}))
    ],
    ("delete", "/v1/users/{user_id}"): lambda w, who: [
        ("/v1/users/gus", None, _forbidden_to_engines(who, {404}))
    ],
    ("put", "/v1/users/{user_id}/password"): lambda w, who: [
        (
            "/v1/users/gus/password",
            {"password": "stolen-password"},
            _forbidden_to_engines(who, {404}),
        )
    ],
    ("get", "/v1/tokens"): lambda w, who: [("/v1/tokens", None, _forbidden_to_engines(who, {200}))],
    ("post", "/v1/tokens"): lambda w, who: [
        ("/v1/tokens", {"name": "for-gus", "user_id": "gus"}, _forbidden_to_engines(who, {404})),
        ("/v1/tokens", {"name": "up", "role": "platform-admin"}, {403}),
    ],
    ("delete", "/v1/tokens/{token_id}"): lambda w, who: [
        (f"/v1/tokens/{w.b_token_id}", None, _forbidden_to_engines(who, {404})),
        (f"/v1/tokens/{w.b_session_id}", None, _forbidden_to_engines(who, {404})),
    ],
    # Sign-in takes no token: B's user with a wrong password is 401, as any wrong password.
    ("post", "/v1/sessions"): lambda w, who: [
        ("/v1/sessions", {"account": "globex", "user": "gus", "password": "guess"}, {401}),
        ("/v1/sessions", {"account": "acme", "user": "gus", "password": SECRET}, {401}),
    ],
    ("get", "/v1/sessions"): lambda w, who: [
        ("/v1/sessions", None, _forbidden_to_engines(who, {200}))
    ],
    # A's API token is no session: nothing to sign out of (422).
    ("delete", "/v1/sessions/current"): lambda w, who: [
        ("/v1/sessions/current", None, _forbidden_to_engines(who, {422}))
    ],
    ("delete", "/v1/sessions/{session_id}"): lambda w, who: [
        (f"/v1/sessions/{w.b_session_id}", None, _forbidden_to_engines(who, {404})),
        (f"/v1/sessions/{w.b_token_id}", None, _forbidden_to_engines(who, {404})),
    ],
    # Platform admins only: an account admin of A gets 404, as for a route that is not there.
    ("get", "/v1/accounts"): lambda w, who: [
        ("/v1/accounts", None, _forbidden_to_engines(who, {404}))
    ],
    ("post", "/v1/accounts"): lambda w, who: [
        ("/v1/accounts", {"id": "globex"}, _forbidden_to_engines(who, {404})),
        ("/v1/accounts", {"id": "acme-2"}, _forbidden_to_engines(who, {404})),
    ],
    # Credits are the platform's (the seller's) corrections: to A's account admin the route is
    # not there, whether the body names B or A itself.
    ("post", "/v1/usage/credits"): lambda w, who: [
        (
            "/v1/usage/credits",
            {"amount": "1.00", "reason": "x", "account": "globex"},
            _forbidden_to_engines(who, {404}),
        ),
        (
            "/v1/usage/credits",
            {"amount": "1.00", "reason": "ok"},
            _forbidden_to_engines(who, {404}),
        ),
    ],
    ("get", "/v1/billing/margin"): lambda w, who: [
        # Only the services A publishes (none): B's figures never show.
        ("/v1/billing/margin", None, _forbidden_to_engines(who, {200})),
        (f"/v1/billing/margin?period={w.period}", None, _forbidden_to_engines(who, {200})),
    ],
    ("get", "/v1/invoices"): lambda w, who: [
        ("/v1/invoices", None, _forbidden_to_engines(who, {200}))
    ],
    # B's invoice by its number is 404; the month's invoice is A's own draft.
    ("get", "/v1/invoices/{period}"): lambda w, who: [
        *[
            (f"/v1/invoices/{w.invoice}{fmt}", None, _forbidden_to_engines(who, {404}))
            for fmt in ("", "?format=csv", "?format=html")
        ],
        (f"/v1/invoices/{w.period}", None, _forbidden_to_engines(who, {200})),
        (f"/v1/invoices/{w.period}?format=html", None, _forbidden_to_engines(who, {200})),
    ],
    # B's number is no period (422); this month has not ended (409); B's stays as issued.
    ("post", "/v1/invoices/{period}/issue"): lambda w, who: [
        (f"/v1/invoices/{w.invoice}/issue", None, _forbidden_to_engines(who, {422})),
        (f"/v1/invoices/{w.period}/issue", None, _forbidden_to_engines(who, {409})),
    ],
    # Resources: B's quota and Account are 404 to A; A's own documents of the same name are A's
    # (created in its account, B's stays as it was); naming B's account is refused.
    ("delete", "/v1/resources/{kind}/{name}"): lambda w, who: [
        (path, None, _forbidden_to_engines(who, {404}))
        for path in ("/v1/resources/quota/globex-quota", "/v1/resources/account/globex")
    ],
    ("get", "/v1/resources/{kind}/{name}"): lambda w, who: [
        (path, None, _forbidden_to_engines(who, {404}))
        for path in (
            "/v1/resources/quota/globex-quota",
            "/v1/resources/Quotas/globex-quota",
            "/v1/resources/account/globex",
        )
    ],
    ("get", "/v1/resources/{kind}"): lambda w, who: [
        (f"/v1/resources/{kind}", None, _forbidden_to_engines(who, {200}))
        for kind in ("quotas", "accounts", "workflows")
    ],
    ("post", "/v1/apply"): lambda w, who: [
        ("/v1/apply", {"documents": [_a_quota()]}, _forbidden_to_engines(who, {200})),
        (
            "/v1/apply",
            {"documents": [{**_a_quota(), "metadata": {"name": "q", "account": "globex"}}]},
            _forbidden_to_engines(who, {422}),
        ),
        (
            "/v1/apply",
            {"documents": [{**_a_quota(), "kind": "Account", "spec": {}}]},
            {403},
        ),
    ],
    ("put", "/v1/resources/{kind}/{name}"): lambda w, who: [
        ("/v1/resources/quota/globex-quota", _a_quota(), _forbidden_to_engines(who, {200, 201})),
        (
            "/v1/resources/quota/globex-quota",
            {**_a_quota(), "metadata": {"name": "globex-quota", "resourceVersion": "1"}},
            _forbidden_to_engines(who, {200, 409}),
        ),
    ],
    # B's quota: A sees only its own; a PUT of the same name makes A's own (201), B's stays.
    ("get", "/v1/quotas"): lambda w, who: [("/v1/quotas", None, _forbidden_to_engines(who, {200}))],
    ("get", "/v1/quotas/{name}"): lambda w, who: [
        (f"/v1/quotas/{w.quota}", None, _forbidden_to_engines(who, {404}))
    ],
    ("put", "/v1/quotas/{name}"): lambda w, who: [
        (
            f"/v1/quotas/{w.quota}",
            {"kind": "calls", "limit": 1, "period": "day"},
            _forbidden_to_engines(who, {201}),
        )
    ],
    ("delete", "/v1/quotas/{name}"): lambda w, who: [
        (f"/v1/quotas/{w.quota}", None, _forbidden_to_engines(who, {404}))
    ],
    ("get", "/v1/quota-events"): lambda w, who: [
        ("/v1/quota-events", None, _forbidden_to_engines(who, {200}))
    ],
    # Blocks and job control (fluxo/api/blocks.py): B's block, job and workflow are not found;
    # blocking anything of another account needs the admin account's token.
    ("post", "/v1/blocks"): lambda w, who: [
        (
            "/v1/blocks",
            {"kind": "workflow", "target": "x", "reason": "r", "account": "globex"},
            {403},
        ),
        ("/v1/blocks", {"kind": "account", "account": "globex", "reason": "r"}, {403}),
    ],
    ("get", "/v1/blocks"): lambda w, who: [
        ("/v1/blocks", None, _forbidden_to_engines(who, {200})),
        ("/v1/blocks?active=true", None, _forbidden_to_engines(who, {200})),
    ],
    ("get", "/v1/blocks/audit"): lambda w, who: [
        ("/v1/blocks/audit", None, _forbidden_to_engines(who, {200}))
    ],
    ("get", "/v1/blocks/{block_id}"): lambda w, who: [
        (f"/v1/blocks/{w.block_id}", None, _forbidden_to_engines(who, {404}))
    ],
    ("delete", "/v1/blocks/{block_id}"): lambda w, who: [
        (f"/v1/blocks/{w.block_id}", None, _forbidden_to_engines(who, {404}))
    ],
    ("post", "/v1/jobs/{job_id}/resume"): lambda w, who: [
        (f"/v1/jobs/{w.job_id}/resume", None, _forbidden_to_engines(who, {404}))
    ],
    ("post", "/v1/jobs/{job_id}/retry"): lambda w, who: [
        (f"/v1/jobs/{w.job_id}/retry", None, _forbidden_to_engines(who, {404}))
    ],
    ("post", "/v1/workflows/{name}/pause"): lambda w, who: [
        (f"/v1/workflows/{w.workflow}/pause", None, _forbidden_to_engines(who, {404}))
    ],
    ("get", "/v1/workflows/{name}/pause"): lambda w, who: [
        (f"/v1/workflows/{w.workflow}/pause", None, _forbidden_to_engines(who, {404}))
    ],
    ("post", "/v1/workflows/{name}/resume"): lambda w, who: [
        (f"/v1/workflows/{w.workflow}/resume", None, _forbidden_to_engines(who, {404}))
    ],
    # A webhook takes no token: it is authenticated by its trigger's secret. A's tokens (as
    # bearer) and no signature get B's hook, a missing one and a wrong account the same 401;
    # test_triggers.py signs with a wrong secret and checks nothing is created.
    ("post", "/hooks/{account}/{trigger}"): lambda w, who: [
        (path, {"order": 1}, {401})
        for path in (
            f"/hooks/globex/{w.hook}",
            f"/hooks/globex/{w.hook}?wait=1",
            "/hooks/globex/no-such-hook",
            f"/hooks/acme/{w.hook}",
        )
    ],
    # An SMS delivery takes no token either: it is signed by the provider. A's tokens and no
    # signature get B's trigger, a missing one and a wrong account the same 403.
    ("post", "/hooks/{account}/{trigger}/sms"): lambda w, who: [
        (path, {"id": "m-1", "text": "x"}, {403})
        for path in (
            f"/hooks/globex/{w.hook}/sms",
            "/hooks/globex/no-such-sms/sms",
            f"/hooks/acme/{w.hook}/sms",
        )
    ],
    # Triggers (fluxo/api/triggers.py): B's is not found; A lists only its own (none).
    ("get", "/v1/triggers"): lambda w, who: [
        ("/v1/triggers", None, _forbidden_to_engines(who, {200}))
    ],
    ("get", "/v1/triggers/{name}"): lambda w, who: [
        (f"/v1/triggers/{w.hook}", None, _forbidden_to_engines(who, {404}))
    ],
    ("post", "/v1/triggers/{name}/pause"): lambda w, who: [
        (f"/v1/triggers/{w.hook}/pause", None, _forbidden_to_engines(who, {404}))
    ],
    ("post", "/v1/triggers/{name}/resume"): lambda w, who: [
        (f"/v1/triggers/{w.hook}/resume", None, _forbidden_to_engines(who, {404}))
    ],
    # An email trigger's attachment (fluxo/api/inbound.py): B's, by its real reference, is
    # not found, under B's trigger name and under a name of A's.
    ("get", "/v1/triggers/{name}/attachments/{ref}"): lambda w, who: [
        (
            f"/v1/triggers/{name}/attachments/{attachment_ref('globex', w.hook, B_ATTACHMENT)}",
            None,
            _forbidden_to_engines(who, {404}),
        )
        for name in (w.hook, "acme-hook")
    ],
    ("post", "/v1/triggers/{name}/fire"): lambda w, who: [
        (f"/v1/triggers/{w.hook}/fire", None, _forbidden_to_engines(who, {404})),
        (
            f"/v1/triggers/{w.hook}/fire",
            {"input": {"n": 1}, "event_id": "x"},
            _forbidden_to_engines(who, {404}),
        ),
    ],
}


def _a_quota() -> dict[str, Any]:
    """A's own quota, named as B's."""
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Quota",
        "metadata": {"name": "globex-quota"},
        "spec": {"kind": "calls", "limit": 1, "period": "day"},
    }


def _document_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete"}
    return {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in methods
    }


async def test_every_route_has_a_case(world: World) -> None:
    response = await world.http.get("/v1/openapi.json")
    documented = _document_routes(await response.json())
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in world.http.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served - documented == set(), "routes served but missing from the OpenAPI document"
    missing = sorted(documented - PUBLIC - set(CASES))
    assert missing == [], f"routes without a case in tests/security (add one): {missing}"
    assert set(CASES) <= documented, "cases for routes the document no longer has"


@pytest.mark.parametrize("who", ["user", "engine"])
async def test_another_account_gets_nothing_of_b_from_any_route(world: World, who: str) -> None:
    response = await world.http.get("/v1/openapi.json")
    routes = sorted(_document_routes(await response.json()) - PUBLIC)
    before = await world.state_of_b()
    for method, template in routes:
        for path, body, allowed in CASES[(method, template)](world, who):
            status, text = await world.send(method.upper(), path, who, body)
            where = f"{who} token: {method.upper()} {path} -> {status} {text[:300]}"
            assert status in allowed, where
            assert SECRET not in text, where
            if status < 300:  # the attacker's own data only
                # B's secret name: what A names in its own PUT comes back to it, nothing else.
                names = (world.secret, world.quota, "gus", world.hook) if method == "get" else ()
                ids = (world.b_token_id, world.b_session_id)
                for of_b in (
                    world.job_id,
                    world.call_id,
                    world.workflow,
                    world.invoice,
                    world.block_id,
                    *ids,
                    *names,
                ):
                    assert of_b not in text, where
    assert await world.state_of_b() == before
