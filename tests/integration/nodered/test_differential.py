"""Differential test: the example flows the step engine claims it can run give Node-RED's outputs.

For every example flow shipped in the node-red package (113 in 4.1) that the step engine claims
it can run (:func:`engines.step.step_runnable` accepts every workflow of its import), each
``inject`` node is fired on a real Node-RED (``POST /inject/:id``, timestamps pinned) and the
same message is run as a job on the step engine (SQLite); on a tab with several triggers the job
names the inject's entry (header ``fluxo-entry``), so it runs only what that inject starts. What
reaches every ``debug`` node must be the same on both sides (``msg.payload``, as a multiset: the
step engine runs branches in another order).

The flows claimed runnable AND equal are kept in ``tests/golden/nodered/step_runnable.txt``;
the test fails when one of them is no longer runnable or no longer equal
(``FLUXO_REGENERATE=1`` rewrites the list). The counts are printed (``pytest -s``).

Where things come from: the session's managed Node-RED (the ``nodered`` fixture) and the
examples under its install; or a running Node-RED at ``FLUXO_NODERED_URL`` (optional
``FLUXO_NODERED_TOKEN``) with the examples at ``FLUXO_NODERED_EXAMPLES``. Without Node-RED the
test skips saying why, and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from engines.step import NODERED_MSG_CONTENT_TYPE, step_runnable
from fluxo.control.platform import Platform
from fluxo_core.errors import FluxoError
from fluxo_core.ir import ENTRY_HEADER
from fluxo_core.storage import Database, Principal
from services import BuiltinConfig, HttpService, nodered_node_service
from tests.support.golden import regenerate_requested
from tests.support.nodered_diff import (
    Unobservable,
    canonical,
    debug_targets,
    inject_msg,
    inject_props,
    observable_flow,
    step_captures,
    trigger_workflow,
)
from translators.nodered import NodeRedImport, from_nodered, to_nodered_flows

pytestmark = pytest.mark.timeout(900)

IN_CI = os.environ.get("CI", "").lower() == "true"
GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nodered" / "step_runnable.txt"
ME = Principal(account_id="acme", user_id="ada")
QUIET_S = 0.6  # no capture for this long after an inject: the flow is done
SLOW_QUIET_S = 4.5  # the same for flows with timers (a setTimeout of 2 s, a delay node of 3 s)
MAX_WAIT_S = 8.0
SLOW_MAX_WAIT_S = 30.0  # flows with timers: a rate limit releases one message per interval
# Assembled flows name the test's HTTP server (Capture's app) with this; both sides reach it.
TEST_SERVER = "http://fluxo-test-server"


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None
    examples: Path


def _examples_under(*roots: Any) -> Path | None:
    for root in roots:
        if root is None:
            continue
        candidate = Path(root) / "node_modules" / "@node-red" / "nodes" / "examples"
        if candidate.is_dir():
            return candidate
    return None


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message}; CI must provide a Node-RED")
    pytest.skip(f"{message}; start one (or set FLUXO_NODERED_URL and FLUXO_NODERED_EXAMPLES)")


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Target:
    """The Node-RED to compare with and the directory of its example flows."""
    url = os.environ.get("FLUXO_NODERED_URL")
    examples_env = os.environ.get("FLUXO_NODERED_EXAMPLES")
    if url:
        examples = Path(examples_env) if examples_env else None
        if examples is None or not examples.is_dir():
            _unavailable("FLUXO_NODERED_URL is set but FLUXO_NODERED_EXAMPLES names no directory")
        assert examples is not None
        return Target(url.rstrip("/") + "/", os.environ.get("FLUXO_NODERED_TOKEN"), examples)
    running = request.getfixturevalue("nodered")
    managed = running.managed
    found = (
        Path(examples_env)
        if examples_env
        else _examples_under(getattr(managed, "app_dir", None), getattr(managed, "home", None))
    )
    if found is None or not found.is_dir():
        _unavailable("the example flows of the node-red package were not found")
    assert found is not None
    return Target(running.url.rstrip("/") + "/", running.admin_token, found)


class Capture:
    """An HTTP endpoint the rewritten debug nodes post ``{debug, type, value}`` to."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.last = 0.0
        self.url = ""
        self.server = ""
        self.quiet_s = QUIET_S
        self.max_wait_s = MAX_WAIT_S

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text())
        value = None if body.get("type") == "undefined" else body.get("value")
        self.items.append((str(body["debug"]), canonical(value)))
        self.last = time.monotonic()
        return web.Response(text="ok")

    async def settle(self) -> None:
        """Wait until nothing has arrived for a while (flows with timers take longer)."""
        started = time.monotonic()
        await asyncio.sleep(0.2)
        while time.monotonic() - started < self.max_wait_s:
            if time.monotonic() - max(self.last, started) >= self.quiet_s:
                return
            await asyncio.sleep(0.1)

    async def echo(self, request: web.Request) -> web.Response:
        """What an http request node sent: method, path, query, the x- headers and
        content-type (others differ by client), and the body as text."""
        headers = {
            k.lower(): v
            for k, v in request.headers.items()
            if k.lower().startswith("x-") or k.lower() == "content-type"
        }
        query = {k: request.query.getall(k) for k in request.query}
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": query,
                "headers": dict(sorted(headers.items())),
                "body": await request.text(),
            },
            headers={"x-echo": "yes"},
        )

    async def answer(self, request: web.Request) -> web.Response:
        """``/answer/{status}``: a text body (not JSON) with that status."""
        status = int(request.match_info["status"])
        return web.Response(status=status, text=f"status {status}\nfrom the test server")

    def take(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for debug, value in self.items:
            out.setdefault(debug, []).append(value)
        self.items.clear()
        return out


@pytest.fixture
async def capture() -> AsyncIterator[Capture]:
    cap = Capture()
    app = web.Application()
    app.router.add_post("/capture", cap.handle)
    app.router.add_route("*", "/echo/{tail:.*}", cap.echo)
    app.router.add_get("/answer/{status}", cap.answer)
    # Node-RED's http request nodes keep connections open: do not wait 60 s for them at the end.
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cap.url = f"http://127.0.0.1:{port}/capture"
    cap.server = f"http://127.0.0.1:{port}"
    yield cap
    await runner.cleanup()


@pytest.fixture
async def fluxo(tmp_path: Path) -> AsyncIterator[Platform]:
    db = Database(f"sqlite:///{tmp_path}/fluxo.db")
    await db.migrate()
    # The http service may reach the loopback test server (the operator allow-list).
    http = HttpService(BuiltinConfig(http_allow=("127.0.0.1",))).service
    platform = Platform(
        db, [nodered_node_service(), http], workers=2, poll_interval_s=0.05, admission_cache_s=0
    )
    await platform.accounts.ensure_account("acme")
    async with platform:
        yield platform
    await db.close()


@dataclass
class Outcome:
    name: str
    runnable: bool
    reasons: list[str] = field(default_factory=list)
    compared: int = 0  # injects whose outputs were compared
    observed: int = 0  # debug messages seen on Node-RED
    differences: list[str] = field(default_factory=list)
    unobservable: str | None = None

    @property
    def equal(self) -> bool:
        return (
            self.runnable
            and self.unobservable is None
            and not self.differences
            and self.compared > 0
            and self.observed > 0
        )


def _at_this_nodered(value: Any, url: str) -> Any:
    """``value`` with Node-RED's own address (``http://localhost:1880/``, where a flow calls
    its own http in endpoints) replaced by the test's Node-RED, which listens elsewhere; the
    step engine answers such calls in the job, whatever the port."""
    text = json.dumps(value)
    for host in ("localhost", "127.0.0.1"):
        text = text.replace(f"http://{host}:1880/", url)
        # a websocket client of the flow's own listener (ws://localhost:1880/path) too
        text = text.replace(f"ws://{host}:1880/", "ws://" + url.split("://", 1)[-1])
    return json.loads(text)


async def _run_on_step_engine(
    fluxo: Platform, imp: NodeRedImport, node: dict[str, Any], name: str, run: int
) -> dict[str, list[str]]:
    trigger = next(t for t in imp.triggers if t.node_id == node["id"])
    msg = inject_msg(node)
    captured: dict[str, list[str]] = {}
    for debug in debug_targets(imp, [t for port in node.get("wires") or [] for t in port]):
        captured.setdefault(debug, []).append(canonical(msg.get("payload")))
    # One workflow name per imported workflow, whatever the inject: its versions share the
    # workflow's flow context across injects, as the tab's context is shared on Node-RED.
    workflow_name = f"{name}-w{[w.metadata.name for w in imp.workflows].index(trigger.workflow)}"
    # One of several triggers: its job names its own entry and runs only what it starts. A
    # trigger feeding several nodes is one job too, as on Node-RED: the tokens it starts stay
    # apart after a step they meet at (fluxo_core.ir.step_keys).
    headers = {"content-type": NODERED_MSG_CONTENT_TYPE}
    if trigger.entry is not None:
        doc = imp.workflow(trigger.workflow).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        doc["spec"].pop("engine", None)
        doc["metadata"] = {"name": workflow_name}
        headers[ENTRY_HEADER] = trigger.entry
    else:
        doc = trigger_workflow(imp, trigger, workflow_name)
    # The job runs the version this document is (an apply equal to an older version gives that
    # one back): the same document, the same version, so the state its nodes keep between
    # messages (a csv header sent once, a batch's held messages) lasts across the injects of
    # one deployment, as on Node-RED; a new version would start them afresh, as a deploy does.
    del run
    applied = await fluxo.jobs.apply(doc, ME)
    job = await fluxo.jobs.create(ME, applied.ref, msg, headers=headers)
    done = await fluxo.jobs.wait(ME, job.id, 20)
    # The jobs it started (a network out to an in node of the same flow starts one per message
    # that in node sends, engines.step._loopback), and theirs: what they ran is the flow's too.
    ran, todo = [done], [job.id]
    while todo and len(ran) < 100:
        for child in await fluxo.jobs.store.children(todo.pop()):
            ran.append(await fluxo.jobs.wait(ME, child.job_id, 20))
            todo.append(child.job_id)
    for record in ran:
        for debug, values in step_captures(
            imp, trigger.workflow, applied.workflow, record.steps or []
        ).items():
            captured.setdefault(debug, []).extend(values)
    return captured


async def _compare(
    client: httpx.AsyncClient,
    capture: Capture,
    fluxo: Platform,
    path: Path,
    name: str,
    examples: Path,
) -> Outcome:
    data = json.loads(path.read_text().replace(TEST_SERVER, capture.server))
    imp = from_nodered(data, name="example")
    verdicts = [step_runnable(w, imp.triggers) for w in imp.workflows]
    outcome = Outcome(
        str(path.relative_to(examples)),
        all(ok for ok, _ in verdicts),
        [r for _, reasons in verdicts for r in reasons],
    )
    if not outcome.runnable:
        return outcome
    text = path.read_text()
    timed = "setTimeout" in text or any(
        n.get("type") in ("delay", "trigger") for n in imp.source.nodes
    )
    # Quiet for longer than the longest timer: a trigger's second message, a delayed one.
    capture.quiet_s = (
        max(SLOW_QUIET_S, _longest_timer_s(imp.source.nodes) + 1.0) if timed else QUIET_S
    )
    capture.max_wait_s = SLOW_MAX_WAIT_S if timed else MAX_WAIT_S
    flow = observable_flow(to_nodered_flows(imp.workflows, source=imp.source), capture.url)
    flow = _at_this_nodered(flow, str(client.base_url))
    response = await client.post("flows", json=flow, headers={"Node-RED-Deployment-Type": "full"})
    response.raise_for_status()
    await capture.settle()
    capture.take()
    injects = [n for n in imp.source.nodes if n.get("type") == "inject" and n.get("d") is not True]
    for i, node in enumerate(injects):
        try:
            props = _at_this_nodered(inject_props(node), str(client.base_url))
            expected_msg = inject_msg(node)
        except Unobservable as exc:
            outcome.unobservable = str(exc)
            return outcome
        del expected_msg
        reply = await client.post(f"inject/{node['id']}", json={"__user_inject_props__": props})
        reply.raise_for_status()
        await capture.settle()
        real = capture.take()
        try:
            ours = await _run_on_step_engine(fluxo, imp, dict(node), name, i)
        except Unobservable as exc:
            outcome.unobservable = str(exc)
            return outcome
        except FluxoError as exc:  # e.g. a service this test installation does not offer
            outcome.differences.append(f"inject {node['id']}: the step engine refused: {exc}")
            return outcome
        outcome.compared += 1
        outcome.observed += sum(len(v) for v in real.values())
        for debug in sorted(set(real) | set(ours)):
            want, got = sorted(real.get(debug, [])), sorted(ours.get(debug, []))
            if want != got:
                outcome.differences.append(
                    f"inject {node['id']} -> debug {debug}: Node-RED {want} step engine {got}"
                )
    return outcome


_SECONDS = {"ms": 0.001, "milliseconds": 0.001, "s": 1, "seconds": 1, "min": 60, "minutes": 60}


def _longest_timer_s(nodes: list[dict[str, Any]]) -> float:
    """The longest time a trigger or delay of the flow waits (an inject's msg.delay too); longer
    than 15 s is not waited for (a job is waited for 20 s)."""
    found = [0.0]
    for node in nodes:
        kind = node.get("type")
        try:
            if kind == "trigger":
                unit = _SECONDS.get(str(node.get("units") or "ms"), 0.0)
                found.append(abs(float(node.get("duration") or 0)) * unit)
            elif kind == "delay" and node.get("pauseType") in ("delay", "delayv"):
                unit = _SECONDS.get(str(node.get("timeoutUnits") or "seconds"), 0.0)
                found.append(float(node.get("timeout") or 0) * unit)
            elif kind == "inject":
                for prop in node.get("props") or []:
                    if prop.get("p") == "delay" and prop.get("vt") == "num":
                        found.append(float(prop.get("v") or 0) / 1000)
        except ValueError:
            continue
    longest = max(found)
    return longest if longest <= 15 else 0.0


async def test_step_engine_matches_nodered_on_the_examples(
    target: Target, capture: Capture, fluxo: Platform
) -> None:
    files = sorted(target.examples.rglob("*.json"))
    assert len(files) >= 100, f"expected the ~113 example flows under {target.examples}"
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    outcomes: list[Outcome] = []
    async with httpx.AsyncClient(base_url=target.url, headers=headers, timeout=30) as client:
        saved = (await client.get("flows")).json()
        try:
            for n, path in enumerate(files):
                outcomes.append(
                    await _compare(client, capture, fluxo, path, f"ex{n}", target.examples)
                )
        finally:
            await client.post("flows", json=saved, headers={"Node-RED-Deployment-Type": "full"})

    runnable = [o for o in outcomes if o.runnable]
    equal = sorted(o.name for o in outcomes if o.equal)
    print(
        f"\nexample flows: {len(outcomes)}; claimed runnable on the step engine: {len(runnable)}; "
        f"runnable and equal: {len(equal)}"
    )
    for o in runnable:
        if not o.equal:
            why = (
                o.unobservable
                or "; ".join(o.differences[:3])
                or ("no inject to fire" if not o.compared else "no debug output to compare")
            )
            print(f"  runnable, not compared equal: {o.name}: {why}")
    # A flow the step engine claims, ran on both and compared, must give the same outputs;
    # only flows that could not be compared here (no inject, no debug output, a service this
    # test installation does not offer) are reported instead.
    differing = {
        o.name: o.differences
        for o in runnable
        if o.compared and o.differences and not any("refused" in d for d in o.differences)
    }
    assert not differing, f"claimed runnable but different: {differing}"
    if regenerate_requested():
        GOLDEN.write_text("".join(f"{name}\n" for name in equal))
        return
    kept = [line for line in GOLDEN.read_text().splitlines() if line.strip()]
    for name in sorted(set(equal) - set(kept)):
        print(f"  equal, not yet in {GOLDEN.name}: {name}")
    by_name = {o.name: o for o in outcomes}
    lost = []
    for name in kept:
        found = by_name.get(name)
        if found is None:
            lost.append(f"{name}: no longer shipped")
            continue
        o = found
        if not o.runnable:
            lost.append(f"{name}: no longer runnable: {'; '.join(o.reasons)}")
        elif not o.equal:
            lost.append(f"{name}: outputs differ: {'; '.join(o.differences) or o.unobservable}")
    assert not lost, "flows listed in step_runnable.txt regressed:\n" + "\n".join(lost)
    assert len(kept) > 0, "the golden list is empty: regenerate it with FLUXO_REGENERATE=1"


CONSTRUCTS = Path(__file__).resolve().parents[2] / "data" / "nodered"


@pytest.mark.parametrize("flow", sorted(p.name for p in CONSTRUCTS.glob("*.json")))
async def test_step_engine_matches_nodered_on_assembled_flows(
    target: Target, capture: Capture, fluxo: Platform, flow: str
) -> None:
    """Flows assembled for one construct each (tests/data/nodered: catch, links, ...) run on
    the step engine and give Node-RED's outputs at every debug node, for every inject."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    async with httpx.AsyncClient(base_url=target.url, headers=headers, timeout=30) as client:
        saved = (await client.get("flows")).json()
        try:
            # Each of these flows tests its construct with several injects, one per case.
            outcome = await _compare(
                client,
                capture,
                fluxo,
                CONSTRUCTS / flow,
                flow.removesuffix(".json"),
                CONSTRUCTS,
            )
        finally:
            await client.post("flows", json=saved, headers={"Node-RED-Deployment-Type": "full"})
    assert outcome.runnable, f"{flow}: the step engine refuses it: {outcome.reasons}"
    assert not outcome.differences, f"{flow}: outputs differ: {outcome.differences}"
    assert outcome.unobservable is None, f"{flow}: {outcome.unobservable}"
    assert outcome.equal, f"{flow}: nothing to compare (no inject fired, no debug output)"
