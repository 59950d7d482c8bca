"""The emitted Argo specs really work: run them end to end and compare with the step engine.

Argo needs Kubernetes, so the Argo Server is :class:`tests.support.argo_interpreter.FakeArgoServer`:
it answers ArgoEngine's REST calls (checked against Argo's swagger) and RUNS the WorkflowTemplate
and Workflow Fluxo emits (checked against Argo's JSON Schema): its HTTP templates call the real
Fluxo gateway, served by aiohttp on a loopback port, with the engine token of the workflow's
account from that account's Secret (``fluxo-gateway-acme``, ``fluxo-gateway-globex``), and its
exit handler reports the end through ``/v1/jobs/{id}/engine-events``.

Each workflow runs twice on one platform: as applied (``engine: step``) and as a copy with
``engine: argo``. The Argo job must end ``succeeded`` with the step engine's result, and its usage
records (service, version, units, price, amount, account, user; counted per service) must be the
step engine's. A blocked account and a cancel must stop an Argo run through the gateway.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from aiohttp import web

from engines.argo import ArgoConfig, ArgoEngine
from fluxo.api import create_app
from fluxo.control.jobs import JobRecord
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import usage_records
from services import builtin_services, demo_services
from tests.integration.test_argo_engine import conform
from tests.support import services as test_services
from tests.support.argo_interpreter import FakeArgoServer
from tests.unit.test_argo_translator import errors, schema_validator

pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
ME = Principal(account_id="acme", user_id="ada")
ARGO_URL = "http://argo.test:2746/"
ARGO_TOKEN = "argo-server-token-for-tests"
NAMESPACE = "fluxo"
SERVICES = [*builtin_services(), *demo_services(), *test_services.SERVICES]
JOB_TIMEOUT_S = 15.0


def validate_document(document: dict[str, Any]) -> None:
    """Every WorkflowTemplate and Workflow the engine sends must fit Argo's (patched) schema."""
    problems = errors(schema_validator(document["kind"]), document)
    assert problems == [], f"{document['kind']} {document['metadata']['name']}: {problems[:5]}"


@dataclass
class Stack:
    """One platform with the step engine and an ArgoEngine over the interpreter."""

    platform: Platform
    argo: FakeArgoServer
    gateway_url: str
    engine_token: str

    async def run(self, document: dict[str, Any], payload: Any) -> JobRecord:
        await self.platform.jobs.apply(document, ME)
        job = await self.platform.jobs.create(ME, document["metadata"]["name"], payload)
        return await self.platform.jobs.wait(ME, job.id, JOB_TIMEOUT_S)

    async def usage(self, job_id: str) -> collections.Counter[tuple[Any, ...]]:
        """The job's usage records, without call ids and times (they differ by nature)."""
        query = sa.select(
            usage_records.c.service,
            usage_records.c.version,
            usage_records.c.units,
            usage_records.c.unit_price_micros,
            usage_records.c.amount_micros,
            usage_records.c.currency,
            usage_records.c.account_id,
            usage_records.c.user_id,
        ).where(usage_records.c.job_id == job_id)
        rows = await self.platform.db.read(lambda conn: conn.execute(query).all())
        return collections.Counter(tuple(row) for row in rows)


def _loopback_socket() -> socket.socket:
    """A listening socket on a free port, made before the platform (its URL goes in the specs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def stack(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "effects.log"))
    sock = _loopback_socket()
    gateway_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    argo = FakeArgoServer(
        token=ARGO_TOKEN,
        namespace=NAMESPACE,
        time_scale=0.01,
        conform=conform,
        validate_document=validate_document,
    )
    client = httpx.AsyncClient(transport=argo.transport())
    engine = ArgoEngine(
        ArgoConfig(
            base_url=ARGO_URL,
            namespace=NAMESPACE,
            token=ARGO_TOKEN,
            gateway_url=gateway_url,
            retries=1,
            backoff_s=0,
        ),
        client=client,
    )
    platform = Platform(
        db, SERVICES, engines=("step", engine), workers=2, poll_interval_s=0.2, admission_cache_s=0
    )
    await platform.accounts.ensure_account("acme")
    await platform.accounts.ensure_account("globex")
    # One namespace, two accounts: each account's workflows read its own engine token.
    engine_token = await platform.accounts.issue_token("acme", "ada", "argo", engine="argo")
    globex_token = await platform.accounts.issue_token("globex", "gus", "argo", engine="argo")
    argo.secrets["fluxo-gateway-acme"] = {"authorization": f"Bearer {engine_token}"}
    argo.secrets["fluxo-gateway-globex"] = {"authorization": f"Bearer {globex_token}"}
    async with platform:
        runner = web.AppRunner(create_app(platform, max_packet_bytes=1_048_576))
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            yield Stack(platform, argo, gateway_url, engine_token)
            assert argo.failures() == []
        finally:
            await argo.aclose()
            await client.aclose()
            await runner.cleanup()


def on_argo(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the workflow for the Argo engine, under its own name."""
    copy: dict[str, Any] = json.loads(json.dumps(document))
    copy["metadata"]["name"] = f"{document['metadata']['name']}-argo"
    copy["spec"]["engine"] = "argo"
    return copy


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    """Poll ``condition`` until it holds (the run goes on in the background)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def assert_same_usage(stack: Stack, argo_job: str, step_job: str) -> None:
    """The usage of both jobs is the same, but for Argo's calls of the built-in transform.

    The step engine applies transform steps in process; Argo cannot, so its transform steps call
    the built-in ``transform`` service through the gateway, which records a usage of 0.00 for
    each. Those records are checked to cost nothing and left out of the comparison; the calls of
    the service that service steps make (``service: transform``) are on both sides.
    """
    on_argo_usage = await stack.usage(argo_job)
    on_step_usage = await stack.usage(step_job)
    transforms = collections.Counter(
        {k: n for k, n in on_argo_usage.items() if k[0] == "transform"}
    )
    step_transforms = collections.Counter(
        {k: n for k, n in on_step_usage.items() if k[0] == "transform"}
    )
    assert all(k[4] == 0 for k in transforms), transforms
    assert step_transforms - transforms == collections.Counter(), "a transform call is missing"
    assert on_argo_usage - transforms == on_step_usage - step_transforms


async def assert_same_on_both_engines(
    stack: Stack, document: dict[str, Any], payload: Any
) -> tuple[JobRecord, JobRecord]:
    """Run on the step engine, then on Argo; same status, result and usage."""
    on_step = await stack.run(document, payload)
    assert on_step.status == "succeeded", on_step.error
    on_argo_job = await stack.run(on_argo(document), payload)
    assert on_argo_job.status == "succeeded", (on_argo_job.error, on_argo_job.steps)
    assert on_argo_job.engine == "argo"
    assert on_argo_job.result == on_step.result
    await assert_same_usage(stack, on_argo_job.id, on_step.id)
    assert stack.argo.workflows, "the Argo job never reached the Argo Server"
    return on_step, on_argo_job


# --- the examples --------------------------------------------------------------------------------


def example(name: str) -> tuple[dict[str, Any], Any]:
    document = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    payload = json.loads((EXAMPLES / f"{name}.input.json").read_text())
    return document, payload


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
async def test_example_runs_on_argo_like_on_the_step_engine(stack: Stack, name: str) -> None:
    document, payload = example(name)
    await assert_same_on_both_engines(stack, document, payload)
    kinds = {d["kind"] for d in stack.argo.received}
    assert kinds == {"WorkflowTemplate", "Workflow"}  # both were schema-checked on arrival


async def test_invoice_without_a_contact_continues_on_argo(stack: Stack) -> None:
    """enrich fails (no email): on_error continue hands the invoice on, as on the step engine."""
    invoice = {"number": "INV-9", "amount": "75.00", "currency": "EUR", "days_overdue": 31}
    document, _ = example("invoice-reminder")
    _, job = await assert_same_on_both_engines(stack, document, {"invoices": [invoice]})
    assert job.result[0]["reminder_level"] == "final"


# --- small workflows for the other step kinds ----------------------------------------------------


def workflow(name: str, *steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"engine": "step", "steps": list(steps), **spec},
    }


def service(step_id: str, name: str, *nxt: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "service", "service": name, "next": list(nxt), **extra}


SWITCH = workflow(
    "switchy",
    service("bump", "inc", "route"),
    {
        "id": "route",
        "kind": "switch",
        "mode": "first",
        "cases": [{"when": {"path": "n", "op": "gte", "value": 5}, "next": ["big"]}],
        "default": ["small"],
    },
    service("big", "echo"),
    service("small", "inc"),
)

SPLIT_JOIN = workflow(
    "fan",
    {"id": "each", "kind": "split", "path": "items", "next": ["bump"]},
    service("bump", "inc", "gather"),
    {"id": "gather", "kind": "join", "split": "each", "next": ["total"]},
    service("total", "echo"),
)

RETRY = workflow(
    "retry-once",
    service("first", "echo", "shaky"),
    service("shaky", "once-broken", retry={"max_attempts": 3, "backoff_s": 0.1}, timeout_s=10),
)

ON_ERROR_CONTINUE = workflow(
    "carry-on",
    service("doomed", "broken", "after", on_error="continue"),
    service("after", "inc"),
)

ON_ERROR_GOTO = workflow(
    "jump",
    service("doomed", "broken", "after", on_error={"goto": "rescue"}),
    service("after", "inc"),
    service("rescue", "echo"),
)

DELAY = workflow(
    "pause",
    service("before", "inc", "wait"),
    {"id": "wait", "kind": "delay", "seconds": 1, "next": ["after"]},
    service("after", "inc"),
)


# Static `with` values (Argo cannot run JSONata ones): braces and a '?' that Argo must not read
# as a tag or a ternary, a null that must stay; on the job input and on a call's output, each an
# object or an array. A failed call hands the step's input on, without the parameters.
PARAMS = {"source": "web", "n": 100, "none": None, "deep": {"a": [1, "x ? {{y}} : z"]}}
WITH_PARAMS = workflow(
    "with-params",
    service("tag", "echo", "again", **{"with": PARAMS}),
    service("again", "echo", "doomed", **{"with": {"source": "again"}}),
    service("doomed", "broken", "after", on_error="continue", **{"with": {"lost": True}}),
    service("after", "echo"),
)


@pytest.mark.parametrize(
    ("document", "payload"),
    [
        pytest.param(WITH_PARAMS, {"n": 1, "keep": 2, "none": 3}, id="with-object"),
        pytest.param(WITH_PARAMS, [{"n": 1}, {"keep": None}], id="with-array"),
        pytest.param(SWITCH, {"n": 7}, id="switch-first-case"),
        pytest.param(SWITCH, {"n": 1}, id="switch-default"),
        pytest.param(SPLIT_JOIN, {"items": [{"n": 1}, {"n": 2}, {"n": 3}]}, id="split-join"),
        pytest.param(RETRY, {"n": 1}, id="retry-then-success"),
        pytest.param(ON_ERROR_CONTINUE, {"n": 1}, id="on-error-continue"),
        pytest.param(DELAY, {"n": 1}, id="delay"),
        pytest.param(ON_ERROR_GOTO, {"n": 1}, id="on-error-goto"),
    ],
)
async def test_step_kind_runs_on_argo_like_on_the_step_engine(
    stack: Stack,
    document: dict[str, Any],
    payload: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # once-broken fails the first call per n: give each engine a fresh record of calls.
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "step.log"))
    on_step = await stack.run(document, payload)
    assert on_step.status == "succeeded", on_step.error
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "argo.log"))
    job = await stack.run(on_argo(document), payload)
    assert job.status == "succeeded", (job.error, job.steps)
    assert job.result == on_step.result
    await assert_same_usage(stack, job.id, on_step.id)


@pytest.mark.parametrize(
    ("retry", "runs"),
    [
        pytest.param(None, 4, id="no-step-retry:the-service-policy"),
        pytest.param({"max_attempts": 1}, 1, id="step-retry-1"),
        pytest.param({"max_attempts": 2, "backoff_s": 0.1}, 2, id="step-retry-2"),
    ],
)
async def test_a_step_retry_replaces_the_services_retry_policy_on_argo(
    stack: Stack, retry: dict[str, Any] | None, runs: int
) -> None:
    # flaky's own RetryPolicy allows 4 attempts; Argo retries a step with retry itself.
    extra = {"retry": retry} if retry is not None else {}
    document = on_argo(workflow(f"flaky-{runs}", service("try", "flaky", **extra)))
    job = await stack.run(document, {"n": 1, "fail_times": 100})
    assert job.status == "failed"
    assert test_services.effects().count("try 1") == runs


# --- stopping a run from Fluxo -------------------------------------------------------------------

HOLD = workflow(
    "hold",
    service("before", "inc", "wait"),
    {"id": "wait", "kind": "delay", "seconds": 3600, "next": ["after"]},
    service("after", "inc"),
)


async def start_held_job(stack: Stack) -> JobRecord:
    """An Argo job paused in its delay, after its first call."""
    document = on_argo(HOLD)
    await stack.platform.jobs.apply(document, ME)
    job = await stack.platform.jobs.create(ME, document["metadata"]["name"], {"n": 1})

    async def delaying() -> bool:
        runs = [run for name, run in stack.argo.runs.items() if job.id in name]
        return bool(runs) and any(
            n["type"] == "Suspend" and n["phase"] == "Running" for n in runs[0].nodes.values()
        )

    await wait_for(delaying, "the Argo run reaches its delay")
    return job


def argo_calls(stack: Stack, job_id: str, service_name: str) -> list[int | None]:
    return [
        c.status
        for c in stack.argo.calls
        if job_id in c.workflow and f"/v1/services/{service_name}/calls" in c.url
    ]


async def test_a_blocked_account_fails_the_argo_job_at_its_next_call(stack: Stack) -> None:
    # The delay is long (36 s at the interpreter's time scale): shorten it for this test.
    stack.argo.time_scale = 0.0005
    job = await start_held_job(stack)
    await stack.platform.accounts.set_blocked("acme", True, "unpaid invoice")
    done = await stack.platform.jobs.wait(ME, job.id, JOB_TIMEOUT_S)
    assert done.status == "failed", done
    assert argo_calls(stack, job.id, "inc") == [200, 403]
    (name,) = (n for n in stack.argo.workflows if job.id in n)
    assert (await stack.argo.wait_idle(name))["status"]["phase"] == "Failed"
    usage = await stack.usage(job.id)
    assert sum(usage.values()) == 1  # only the call before the block was billed


async def test_cancel_stops_the_argo_run_and_refuses_its_calls(stack: Stack) -> None:
    job = await start_held_job(stack)
    cancelled = await stack.platform.jobs.cancel(ME, job.id)
    assert cancelled.status == "cancelled"
    (name,) = (n for n in stack.argo.workflows if job.id in n)
    workflow_doc = await stack.argo.wait_idle(name)
    assert workflow_doc["spec"]["shutdown"] == "Stop"
    assert workflow_doc["status"]["phase"] == "Failed"
    # The exit handler still reported; the job stays cancelled.
    assert any("/engine-events" in c.url and c.status == 200 for c in stack.argo.calls)
    assert (await stack.platform.jobs.get(ME, job.id)).status == "cancelled"
    # A call the run would make now (its next step) is refused by the gateway.
    packet = {"id": f"{job.id}:after:0", "job_id": job.id, "payload": {"n": 2}}
    async with httpx.AsyncClient() as client:
        late = await client.post(
            f"{stack.gateway_url}/v1/services/inc/calls?wait=5",
            json=packet,
            headers={"Authorization": f"Bearer {stack.engine_token}"},
        )
    assert late.status_code == 403, late.text
    assert argo_calls(stack, job.id, "inc") == [200]
    assert sum((await stack.usage(job.id)).values()) == 1


# --- tenant boundaries ---------------------------------------------------------------------------


async def test_another_accounts_tokens_cannot_touch_an_argo_job(stack: Stack) -> None:
    await stack.platform.accounts.ensure_account("globex")
    tokens = {
        "globex engine": await stack.platform.accounts.issue_token("globex", "argo", engine="argo"),
        "globex user": await stack.platform.accounts.issue_token("globex", "gus"),
        "acme user": await stack.platform.accounts.issue_token("acme", "ada"),
    }
    stack.argo.time_scale = 0.0005  # the delay holds 1.8 s: what follows needs no more
    job = await start_held_job(stack)
    # What the Argo run's next step would send, and a reference to the job's stored input.
    packet = {
        "id": f"{job.id}:after:0",
        "job_id": job.id,
        "step_id": "after",
        "payload": {"n": 100},
    }
    ref = {**packet, "id": f"{job.id}:after:1", "headers": {"fluxo-payload-ref": job.id}}
    finished = {"engine": "argo", "event": "finished", "run": "x", "status": "Succeeded"}

    async def post(path: str, who: str, body: Any) -> tuple[int, Any]:
        async with httpx.AsyncClient(base_url=stack.gateway_url) as client:
            response = await client.post(
                path, json=body, headers={"Authorization": f"Bearer {tokens[who]}"}
            )
        return response.status_code, response.json()

    for body in (packet, ref):
        status, answer = await post("/v1/services/inc/calls?wait=5", "globex engine", body)
        assert status == 404, answer
    status, answer = await post(f"/v1/jobs/{job.id}/engine-events", "globex engine", finished)
    assert status == 404, answer
    for who in ("globex user", "acme user"):
        status, answer = await post("/v1/services/inc/calls?wait=5", who, packet)
        assert status == 422, answer
        assert {p["location"] for p in answer["error"]["problems"]} == {
            "body.job_id",
            "body.step_id",
        }
    # The run goes on as if nothing happened: its own calls only, billed to acme.
    done = await stack.platform.jobs.wait(ME, job.id, JOB_TIMEOUT_S)
    assert (done.status, done.result) == ("succeeded", {"n": 3}), done.error
    assert [(s.step_id, s.input) for s in done.steps or []] == [
        ("before", {"n": 1}),
        ("after", {"n": 2}),
    ]
    assert {k[6] for k in await stack.usage(job.id)} == {"acme"}


GLOBEX = Principal(account_id="globex", user_id="gus")


async def test_two_accounts_run_their_own_workflow_of_the_same_name_in_one_namespace(
    stack: Stack,
) -> None:
    """Applying globex's ``shared`` must not touch acme's: each job runs its own account's steps,
    with its own engine token, billed to its own account."""

    def tag(owner: str) -> dict[str, Any]:
        return {
            "id": "tag",
            "kind": "transform",
            "ops": [{"op": "set", "path": "owner", "value": owner}],
        }

    mine = workflow("shared", service("bump", "inc", "tag"), tag("acme"), engine="argo")
    theirs = workflow(
        "shared",
        service("bump", "inc", "again"),
        service("again", "inc", "tag"),
        tag("globex"),
        engine="argo",
    )
    await stack.platform.jobs.apply(mine, ME)
    await stack.platform.jobs.apply(theirs, GLOBEX)
    assert len(stack.argo.templates) == 2

    acme = await stack.platform.jobs.create(ME, "shared", {"n": 1})
    globex = await stack.platform.jobs.create(GLOBEX, "shared", {"n": 10})
    acme_done = await stack.platform.jobs.wait(ME, acme.id, JOB_TIMEOUT_S)
    globex_done = await stack.platform.jobs.wait(GLOBEX, globex.id, JOB_TIMEOUT_S)

    assert (acme_done.status, acme_done.result) == ("succeeded", {"n": 2, "owner": "acme"}), (
        acme_done.error
    )
    assert (globex_done.status, globex_done.result) == (
        "succeeded",
        {"n": 12, "owner": "globex"},
    ), globex_done.error
    assert {k[6] for k in await stack.usage(acme.id)} == {"acme"}
    assert {k[6] for k in await stack.usage(globex.id)} == {"globex"}
    # Every call of a run carried its own account's token: none was refused.
    assert all(c.status == 200 for c in stack.argo.calls), stack.argo.calls
