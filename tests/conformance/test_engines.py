"""The engine contract, run on every engine: the same cases on the step engine, a real Node-RED
and Argo.

Each case is a workflow and an input (or a scenario: cancel, block). It runs on the step engine,
whose outcome is checked against what the case expects, and then, under another name, on the
engine under test: the managed Node-RED of the test session (``tests/support/nodered.py``) or
the real :class:`~engines.argo.ArgoEngine` in front of the test interpreter of Argo
(``tests/support/argo_interpreter.py``, whose every document is checked against Argo's schema).
One Fluxo serves both runs (API on a loopback port, gateway, workers), on SQLite and on
PostgreSQL.

Equal means the same canonical JSON text (RFC 8785) of the job's:

- **status and result**;
- **error**: the step that failed the job, its key and the cause (``code`` and ``message``);
- **steps**: every execution of a service step (key, step, phase, attempt, input, output and the
  call's error), in key order. The external engines' steps are the gateway calls they made; the
  step engine's other step kinds run in process, so only service steps are compared. A step with
  ``with`` shows the step's input on the step engine and the call's on the others (with the
  parameters set): its input is left out;
- **usage ledger**: service, version, step, units, price, amount, currency, account and user of
  every usage record of a service step. On Argo a transform step calls the built-in ``transform``
  service, which records a usage at no cost: such records are checked to cost nothing and then
  left out.

The cases wait on states (the job ended, a call was recorded, a step reached its delay), never on
the wall clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
import sqlalchemy as sa
import yaml
from aiohttp import web

from engines.argo import ArgoConfig, ArgoEngine
from fluxo.api import create_app
from fluxo.control.jobs import JobRecord
from fluxo.control.platform import Platform
from fluxo_core.config import FluxoConfig
from fluxo_core.ir import ENTRIES_LABEL, ENTRY_HEADER
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import calls, usage_records
from services import builtin_services, demo_services
from tests.integration.test_argo_engine import conform
from tests.support import services as test_services
from tests.support.argo_interpreter import FakeArgoServer
from tests.unit.test_argo_translator import errors, schema_validator

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ME = Principal(account_id="acme", user_id="ada")
SERVICES = [*builtin_services(), *demo_services(), *test_services.SERVICES]
ARGO_URL = "http://argo.test:2746/"
ARGO_TOKEN = "argo-server-token-for-tests"
NAMESPACE = "fluxo"
# Not a bound on how long a case may take: how long a wait for a state may last before the
# test reports which state never came (instead of hanging until the test timeout).
PATIENCE_S = 60.0


# --- the stack: one Fluxo, the step engine and the engine under test ------------------------------


def _loopback_socket() -> socket.socket:
    """A listening socket on a free port, made first: its URL goes into the engines' flows."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _validate_argo_document(document: dict[str, Any]) -> None:
    problems = errors(schema_validator(document["kind"]), document)
    assert problems == [], f"{document['kind']} {document['metadata']['name']}: {problems[:5]}"


@dataclass
class Stack:
    """One platform running the step engine and ``engine`` (``nodered`` or ``argo``)."""

    platform: Platform
    engine: str
    effects: Path  # where test services record their calls (once-broken fails each n once)
    # Each test's own workflow names: the session's Node-RED keeps every test's tabs, and a
    # start right after re-deploying a changed tab of the same name may find no route yet.
    tag: str
    argo: FakeArgoServer | None = None
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def apply(self, document: dict[str, Any], engine: str) -> str:
        """Apply a copy of ``document`` for ``engine``, named after it; returns the name."""
        copy: dict[str, Any] = json.loads(json.dumps(document))
        name = f"{document['metadata']['name']}-{engine}-{self.tag}"
        copy["metadata"]["name"] = name
        copy["spec"]["engine"] = engine
        await self.platform.jobs.apply(copy, ME)
        self.applied[name] = copy
        return name

    async def start(self, document: dict[str, Any], payload: Any, engine: str) -> str:
        # A fresh record of calls per run: each engine sees the services as the first did.
        os.environ["FLUXO_TEST_EFFECTS"] = str(self.effects / f"{engine}.log")
        name = await self.apply(document, engine)
        return (await self.platform.jobs.create(ME, name, payload)).id

    async def finished(self, job_id: str) -> JobRecord:
        job = await self.platform.jobs.wait(ME, job_id, PATIENCE_S)
        assert job.done, f"job {job_id} on {job.engine} did not end: {job.status} {job.steps}"
        return job

    async def run(self, document: dict[str, Any], payload: Any, engine: str) -> JobRecord:
        return await self.finished(await self.start(document, payload, engine))

    async def outcome(self, job: JobRecord, *, unordered: bool = False) -> dict[str, Any]:
        """What the engines must agree on, as plain JSON values.

        ``unordered``: the result gathers parallel branches that no join orders (their order is
        that of their ends on every engine), so it is compared as a sorted list.
        """
        record = await self.platform.jobs.get(ME, job.id)
        spec = self.applied[record.workflow]["spec"]
        kinds = {step["id"]: step for step in spec["steps"]}
        service_steps = {i for i, s in kinds.items() if s["kind"] == "service"}
        steps = [
            {
                "key": s.key,
                "step": s.step_id,
                "phase": s.phase,
                "attempt": s.attempt,
                **({} if "with" in kinds[s.step_id] else {"input": s.input}),
                "output": s.output,
                "error": s.error,
            }
            for s in record.steps or []
            if s.step_id in service_steps
        ]
        result = record.result
        if unordered and isinstance(result, list):
            result = sorted(result, key=canonical)
        return {
            "status": record.status,
            "result": result,
            "error": _job_error(record.error),
            "steps": sorted(steps, key=lambda s: str(s["key"])),
            "usage": await self.usage(record.id, service_steps),
        }

    async def usage(self, job_id: str, service_steps: set[str]) -> list[dict[str, Any]]:
        query = sa.select(
            usage_records.c.service,
            usage_records.c.version,
            usage_records.c.step_id,
            usage_records.c.units,
            usage_records.c.unit_price_micros,
            usage_records.c.amount_micros,
            usage_records.c.currency,
            usage_records.c.account_id,
            usage_records.c.user_id,
        ).where(usage_records.c.job_id == job_id)
        rows = [
            dict(row._mapping)
            for row in await self.platform.db.read(lambda conn: conn.execute(query).all())
        ]
        # Argo runs transform steps as calls of the built-in transform service, at no cost.
        in_engine = [r for r in rows if r["step_id"] not in service_steps]
        assert all(r["service"] == "transform" and r["amount_micros"] == 0 for r in in_engine)
        kept = [r for r in rows if r["step_id"] in service_steps]
        return sorted(kept, key=lambda r: json.dumps(r, sort_keys=True))

    async def calls_of(self, job_id: str) -> list[Any]:
        query = sa.select(calls.c.step_id, calls.c.status).where(calls.c.job_id == job_id)
        return list(await self.platform.db.read(lambda conn: conn.execute(query).all()))


def _job_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """The step that failed the job and the cause (an engine may add details of its own)."""
    if error is None:
        return None
    return {name: error.get(name) for name in ("step", "key", "code", "message")}


def canonical(value: Any) -> str:
    return rfc8785.dumps(value).decode()


def assert_same(on_engine: dict[str, Any], on_step: dict[str, Any]) -> None:
    """Equal canonical JSON texts; when they differ, pytest shows the fields that do."""
    if canonical(on_engine) != canonical(on_step):
        engine_view = json.loads(canonical(on_engine))
        step_view = json.loads(canonical(on_step))
        for name in step_view:
            assert engine_view[name] == step_view[name], name
        raise AssertionError(f"{canonical(on_engine)} != {canonical(on_step)}")


@pytest.fixture(params=["nodered", "argo"])
async def stack(
    request: pytest.FixtureRequest, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    engine = request.param
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "effects.log"))
    sock = _loopback_socket()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    argo: FakeArgoServer | None = None
    client: httpx.AsyncClient | None = None
    if engine == "nodered":
        nodered = request.getfixturevalue("nodered")
        config = FluxoConfig(
            home=nodered.managed.home.parent,  # the engine finds the managed login there
            database_url=db.url,
            public_url=public_url,
            nodered_url=nodered.url,
            engines=("step", "nodered"),
        )
        platform = Platform(
            db,
            SERVICES,
            workers=2,
            poll_interval_s=0.2,
            admission_cache_s=0,
            engines=config.engines,
            config=config,
        )
        await platform.accounts.ensure_account("acme")
        await platform.accounts.issue_token(
            "acme", "node-red", engine="nodered", token=nodered.token
        )
    else:
        # time_scale 1: Argo's delays and backoffs last as long as on the other engines.
        argo = FakeArgoServer(
            token=ARGO_TOKEN,
            namespace=NAMESPACE,
            time_scale=1.0,
            conform=conform,
            validate_document=_validate_argo_document,
        )
        client = httpx.AsyncClient(transport=argo.transport())
        argo_engine = ArgoEngine(
            ArgoConfig(
                base_url=ARGO_URL,
                namespace=NAMESPACE,
                token=ARGO_TOKEN,
                gateway_url=public_url,
                retries=1,
                backoff_s=0,
            ),
            client=client,
        )
        platform = Platform(
            db,
            SERVICES,
            engines=("step", argo_engine),
            workers=2,
            poll_interval_s=0.2,
            admission_cache_s=0,
        )
        await platform.accounts.ensure_account("acme")
        token = await platform.accounts.issue_token("acme", "ada", "argo", engine="argo")
        argo.secrets["fluxo-gateway-acme"] = {"authorization": f"Bearer {token}"}
    async with platform:
        runner = web.AppRunner(create_app(platform, max_packet_bytes=1_048_576))
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            tag = hashlib.blake2b(request.node.nodeid.encode(), digest_size=4).hexdigest()
            yield Stack(platform, engine, tmp_path, tag, argo)
            if argo is not None:
                assert argo.failures() == []
        finally:
            if argo is not None and client is not None:
                await argo.aclose()
                await client.aclose()
            await runner.cleanup()


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds (the run goes on in the background)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + PATIENCE_S
    while not await condition():
        if loop.time() > give_up:
            raise AssertionError(f"never saw: {what}")
        await asyncio.sleep(0.02)


# --- the cases ------------------------------------------------------------------------------------


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

# `jitter` answers later items first: the join must still gather them in item order.
SPLIT_JOIN = workflow(
    "fan",
    {"id": "each", "kind": "split", "path": "items", "next": ["slow"]},
    service("slow", "jitter", "bump"),
    service("bump", "inc", "gather"),
    {"id": "gather", "kind": "join", "split": "each", "next": ["total"]},
    service("total", "echo"),
)

ONE_TO_MANY = workflow(
    "one-to-many",
    service("fan", "fan-out", "each"),
    service("each", "echo"),
)

# The same when the step handles its errors (Argo routes such a call's outputs on its status).
ONE_TO_MANY_ON_ERROR = workflow(
    "one-to-many-on-error",
    service("fan", "fan-out", "each", on_error="continue"),
    service("each", "echo"),
)

# A join may gather the N outputs of a service step, in output order.
JOIN_ONE_TO_MANY = workflow(
    "gather-outputs",
    service("fan", "fan-out", "slow"),
    service("slow", "jitter", "gather"),
    {"id": "gather", "kind": "join", "split": "fan", "next": ["total"]},
    service("total", "echo"),
)

# A result that is itself an array (``listed`` answers ``[payload]``) stays one result, after a
# call (whose outputs fan out on Argo) and at the end of a split's branches.
ARRAY_RESULT = workflow(
    "array-result",
    service("first", "echo", "wrap"),
    service("wrap", "listed"),
)

ARRAY_RESULTS_OF_A_SPLIT = workflow(
    "array-results",
    {"id": "each", "kind": "split", "path": "items", "next": ["wrap"]},
    service("wrap", "listed"),
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

FAILING = workflow(
    "failing",
    service("first", "inc", "doomed"),
    service("doomed", "broken", "never"),
    service("never", "inc"),
)

# Long enough to cancel or block the job while it waits; the cases wait for that state.
HOLD = workflow(
    "hold",
    service("before", "inc", "wait"),
    {"id": "wait", "kind": "delay", "seconds": 2, "next": ["after"]},
    service("after", "inc"),
)


def example(name: str) -> tuple[dict[str, Any], Any]:
    document = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    payload = json.loads((EXAMPLES / f"{name}.input.json").read_text())
    return document, payload


Expect = Callable[[dict[str, Any]], None]


def succeeded_with(result: Any) -> Expect:
    def check(outcome: dict[str, Any]) -> None:
        assert (outcome["status"], outcome["result"]) == ("succeeded", result), outcome

    return check


def succeeded(outcome: dict[str, Any]) -> None:
    assert outcome["status"] == "succeeded", outcome


def failed_at(step: str, code: str) -> Expect:
    def check(outcome: dict[str, Any]) -> None:
        assert outcome["status"] == "failed", outcome
        assert (outcome["error"]["step"], outcome["error"]["code"]) == (step, code), outcome

    return check


def _keys(outcome: dict[str, Any]) -> list[str]:
    return [s["key"] for s in outcome["steps"]]


def _in_order(outcome: dict[str, Any]) -> None:
    assert outcome["status"] == "succeeded", outcome
    assert outcome["result"] == [
        {"i": i, "n": n + 1, "seen": True} for i, n in enumerate((10, 20, 30, 40))
    ]
    assert _keys(outcome) == [
        *[f"bump[{i}]" for i in range(4)],
        *[f"slow[{i}]" for i in range(4)],
        "total",
    ]


def _one_to_many(outcome: dict[str, Any]) -> None:
    succeeded(outcome)
    assert outcome["result"] == [
        {"item": "a", "index": 0},
        {"item": "b", "index": 1},
        {"item": "c", "index": 2},
    ]
    assert _keys(outcome) == ["each[0]", "each[1]", "each[2]", "fan"]


def _gathered(outcome: dict[str, Any]) -> None:
    succeeded(outcome)
    assert outcome["result"] == [{"item": {"i": i}, "index": i, "seen": True} for i in range(4)], (
        outcome["result"]
    )
    assert _keys(outcome) == ["fan", *[f"slow[{i}]" for i in range(4)], "total"]


def _retried(outcome: dict[str, Any]) -> None:
    assert outcome["result"] == {"n": 1, "ok": True}, outcome
    assert [(s["key"], s["attempt"]) for s in outcome["steps"]] == [("first", 1), ("shaky", 2)]


CASES: dict[str, tuple[dict[str, Any], Any, Expect]] = {
    **{
        f"example-{name}": (*example(name), succeeded)
        for name in sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
    },
    "switch-first-case": (SWITCH, {"n": 7}, succeeded_with({"n": 8})),
    "switch-default": (SWITCH, {"n": 1}, succeeded_with({"n": 3})),
    "split-join-in-order": (
        SPLIT_JOIN,
        {"items": [{"i": i, "n": n} for i, n in enumerate((10, 20, 30, 40))]},
        _in_order,
    ),
    "one-to-many": (ONE_TO_MANY, {"items": ["a", "b", "c"]}, _one_to_many),
    "one-to-many-on-error": (ONE_TO_MANY_ON_ERROR, {"items": ["a", "b", "c"]}, _one_to_many),
    "join-of-one-to-many": (
        JOIN_ONE_TO_MANY,
        {"items": [{"i": i} for i in range(4)]},
        _gathered,
    ),
    "array-result": (ARRAY_RESULT, {"n": 1}, succeeded_with([{"n": 1}])),
    "array-results-of-a-split": (
        ARRAY_RESULTS_OF_A_SPLIT,
        {"items": [{"i": 0}, {"i": 1}]},
        succeeded_with([[{"i": 0}], [{"i": 1}]]),
    ),
    "step-retry": (RETRY, {"n": 1}, _retried),
    "on-error-continue": (ON_ERROR_CONTINUE, {"n": 1}, succeeded_with({"n": 2})),
    "on-error-goto": (ON_ERROR_GOTO, {"n": 1}, succeeded),
    "delay": (DELAY, {"n": 1}, succeeded_with({"n": 3})),
    "failing-service": (FAILING, {"n": 1}, failed_at("doomed", "service_failed")),
}


UNORDERED = {
    "one-to-many",
    "one-to-many-on-error",
    "array-results-of-a-split",
}  # results of parallel branches that no join orders


@pytest.mark.parametrize("case", list(CASES))
async def test_the_engine_runs_the_case_like_the_step_engine(stack: Stack, case: str) -> None:
    document, payload, expect = CASES[case]
    unordered = case in UNORDERED
    on_step = await stack.outcome(await stack.run(document, payload, "step"), unordered=unordered)
    expect(on_step)
    on_engine = await stack.outcome(
        await stack.run(document, payload, stack.engine), unordered=unordered
    )
    assert_same(on_engine, on_step)


# --- cancel and block: the run is stopped from Fluxo while it waits -------------------------------


async def held(stack: Stack, engine: str) -> str:
    """A job of ``HOLD`` on ``engine``, waiting in its delay after its first call."""
    job_id = await stack.start(HOLD, {"n": 1}, engine)

    async def first_call_done() -> bool:
        return [(c.step_id, c.status) for c in await stack.calls_of(job_id)] == [
            ("before", "succeeded")
        ]

    await wait_for(first_call_done, f"job {job_id} on {engine} made its first call")
    if engine == "step":
        # The call's end reaches the engine as a message of its own: wait until the job moved
        # on to its delay (else a cancel may find `before` still running).
        async def waiting() -> bool:
            record = await stack.platform.jobs.get(ME, job_id)
            return any(s.step_id == "wait" for s in record.steps or [])

        await wait_for(waiting, f"job {job_id} on the step engine reaches its delay")
    if engine == "argo":
        assert stack.argo is not None
        argo = stack.argo

        async def delaying() -> bool:
            runs = [
                run
                for run in argo.runs.values()
                if run.globals.get("workflow.parameters.job-id") == job_id
            ]
            return bool(runs) and any(
                n["type"] == "Suspend" and n["phase"] == "Running" for n in runs[0].nodes.values()
            )

        await wait_for(delaying, "the Argo run reaches its delay")
    return job_id


async def test_a_cancelled_job_ends_like_on_the_step_engine(stack: Stack) -> None:
    outcomes = []
    for engine in ("step", stack.engine):
        job_id = await held(stack, engine)
        cancelled = await stack.platform.jobs.cancel(ME, job_id)
        assert cancelled.status == "cancelled"
        outcomes.append(await stack.outcome(cancelled))
    on_step, on_engine = outcomes
    assert on_step["status"] == "cancelled"
    assert _keys(on_step) == ["before"]
    assert_same(on_engine, on_step)


async def test_a_blocked_account_fails_the_job_like_on_the_step_engine(stack: Stack) -> None:
    outcomes = []
    for engine in ("step", stack.engine):
        job_id = await held(stack, engine)
        await stack.platform.accounts.set_blocked("acme", True, "unpaid invoice")
        try:
            outcomes.append(await stack.outcome(await stack.finished(job_id)))
        finally:
            await stack.platform.accounts.set_blocked("acme", False)
    on_step, on_engine = outcomes
    failed_at("after", "admission_denied")(on_step)
    assert len(on_step["usage"]) == 1  # only the call before the block was billed
    # The gateway records no call it refuses, and an external engine's steps are its recorded
    # calls: the refused step shows on the step engine only (the job's error names it on all).
    refused = [s for s in on_step["steps"] if s["key"] == "after"]
    assert [(s["phase"], s["error"]["code"]) for s in refused] == [("failed", "admission_denied")]
    seen_outside = {**on_step, "steps": [s for s in on_step["steps"] if s not in refused]}
    assert_same(on_engine, seen_outside)


# --- entries: a job names the step it begins at ----------------------------------------------------

# As the import writes a Node-RED tab with several triggers: a start step that fails a job naming
# no entry, and one entry per trigger (a switch entry fans out to the trigger's two nodes; the
# import's always-true condition is JSONata, which Argo refuses: here it is a structured one).
ENTRIES = workflow(
    "entries",
    {
        "id": "start",
        "kind": "transform",
        "ops": [{"op": "jsonata", "expr": '$error("name an entry in the fluxo-entry header")'}],
        "next": ["first", "both"],
    },
    service("first", "inc"),
    {
        "id": "both",
        "kind": "switch",
        "cases": [{"when": {"path": "n", "op": "exists"}, "next": ["a", "b"]}],
    },
    service("a", "inc"),
    service("b", "echo"),
)
ENTRIES["metadata"]["labels"] = {ENTRIES_LABEL: "2"}


@pytest.mark.parametrize(
    ("entry", "keys"), [("first", ["first"]), ("both", ["a", "b"]), (None, [])]
)
async def test_a_job_begins_at_the_entry_its_header_names_like_on_the_step_engine(
    stack: Stack, entry: str | None, keys: list[str]
) -> None:
    outcomes = []
    for engine in ("step", stack.engine):
        os.environ["FLUXO_TEST_EFFECTS"] = str(stack.effects / f"{engine}.log")
        name = await stack.apply(ENTRIES, engine)
        headers = {ENTRY_HEADER: entry} if entry is not None else {}
        job = await stack.platform.jobs.create(ME, name, {"n": 1}, headers=headers)
        outcomes.append(await stack.outcome(await stack.finished(job.id), unordered=True))
    on_step, on_engine = outcomes
    assert _keys(on_step) == keys
    if entry is None:  # the start step fails it (each engine words a JSONata error its own way)
        for outcome in (on_step, on_engine):
            assert (outcome["status"], outcome["error"]["step"]) == ("failed", "start"), outcome
            assert "name an entry" in outcome["error"]["message"]
        on_engine, on_step = on_engine | {"error": None}, on_step | {"error": None}
    else:
        assert on_step["status"] == "succeeded", on_step
    assert_same(on_engine, on_step)
