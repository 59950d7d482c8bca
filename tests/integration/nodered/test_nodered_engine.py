"""NodeRedEngine against the real Node-RED the session started (see conftest.py).

Every test uses its own workflow names, so the tests share one Node-RED without stepping on each
other; "untouched" is checked node by node, and "refused before Node-RED saw it" by Node-RED's own
``rev`` (a hash of its flows) and by the requests the engine sent.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from engines.nodered import ManagedNodeRed, NodeRedEngine, NodeRedOptions, create_engine
from fluxo_core.config import FluxoConfig
from fluxo_core.engine import Engine, RunHandle, RunStatus, StartRequest
from fluxo_core.errors import ConfigError, ConflictError, NotFoundError, ValidationError
from fluxo_core.ir import Packet, Workflow, validate_workflow
from tests.support.nodered import RunningNodeRed
from translators.nodered import to_nodered

pytestmark = pytest.mark.timeout(90)

V2 = {"Node-RED-API-Version": "v2"}
# Nothing listens there: a job that reaches its service step fails fast (and is reported nowhere).
OPTIONS = NodeRedOptions(fluxo_url="http://127.0.0.1:9")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_workflow(
    name: str, version: str = "1", *, steps: list[dict[str, Any]] | None = None
) -> Workflow:
    return validate_workflow(
        {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Workflow",
            "metadata": {"name": name, "version": version},
            "spec": {
                "engine": "nodered",
                "steps": steps
                or [
                    {"id": "wait", "kind": "delay", "seconds": 5, "next": ["price"]},
                    {
                        "id": "price",
                        "kind": "transform",
                        "ops": [{"op": "set", "path": "priced", "value": True}],
                        "next": ["notify"],
                    },
                    {"id": "notify", "kind": "service", "service": "notify@1"},
                ],
            },
        }
    )


class Recorder:
    """The requests an engine sent and the statuses it got (an httpx event hook)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.statuses: list[tuple[str, str, int]] = []

    async def on_request(self, request: httpx.Request) -> None:
        self.sent.append((request.method, request.url.path))

    async def on_response(self, response: httpx.Response) -> None:
        request = response.request
        self.statuses.append((request.method, request.url.path, response.status_code))

    def posts(self, path: str = "/flows") -> int:
        return sum(1 for method, p in self.sent if method == "POST" and p == path)


class Interfering(httpx.AsyncBaseTransport):
    """Runs ``before`` ahead of the next ``times`` POST /flows: someone deploys in between."""

    def __init__(self, before: Callable[[], Awaitable[None]], times: int) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._before = before
        self.times = times

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/flows" and self.times > 0:
            self.times -= 1
            await self._before()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
async def admin(nodered: RunningNodeRed) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client on Node-RED's Admin API (what "someone else" or the editor does)."""
    async with httpx.AsyncClient(
        base_url=nodered.url, headers=nodered.admin_headers, timeout=10
    ) as client:
        yield client


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def engine(nodered: RunningNodeRed, recorder: Recorder) -> AsyncIterator[NodeRedEngine]:
    hooks: dict[str, list[Any]] = {
        "request": [recorder.on_request],
        "response": [recorder.on_response],
    }
    async with httpx.AsyncClient(timeout=10, event_hooks=hooks) as client:
        yield NodeRedEngine(
            nodered.url.rstrip("/"),
            token=nodered.admin_token,
            options=OPTIONS,
            client=client,
            retries=0,
        )


async def read_flows(admin: httpx.AsyncClient) -> tuple[str, list[dict[str, Any]]]:
    response = await admin.get("flows", headers=V2)
    response.raise_for_status()
    data = response.json()
    return data["rev"], data["flows"]


async def add_foreign_tab(admin: httpx.AsyncClient, label: str) -> str:
    """A tab made in the editor, with an inject wired to a debug node."""
    rev, flows = await read_flows(admin)
    tab = uuid.uuid4().hex[:16]
    inject, debug = uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]
    flows += [
        {"id": tab, "type": "tab", "label": label, "disabled": False, "info": ""},
        {
            "id": inject,
            "type": "inject",
            "z": tab,
            "name": "tick",
            "props": [{"p": "payload"}],
            "repeat": "",
            "once": False,
            "payload": "",
            "payloadType": "date",
            "x": 100,
            "y": 80,
            "wires": [[debug]],
        },
        {
            "id": debug,
            "type": "debug",
            "z": tab,
            "name": "show",
            "active": False,
            "complete": "false",
            "x": 300,
            "y": 80,
            "wires": [],
        },
    ]
    response = await admin.post(
        "flows",
        json={"rev": rev, "flows": flows},
        headers={**V2, "Node-RED-Deployment-Type": "flows"},
    )
    response.raise_for_status()
    return tab


def of_tab(flows: list[dict[str, Any]], tab: str) -> list[dict[str, Any]]:
    return [n for n in flows if n.get("id") == tab or n.get("z") == tab]


async def test_is_an_engine(engine: NodeRedEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "nodered"
    assert "native" in engine.capabilities.step_kinds
    assert engine.capabilities.native_engines == frozenset({"nodered"})


async def test_deploy_creates_the_tab_and_an_unchanged_redeploy_posts_nothing(
    nodered: RunningNodeRed, engine: NodeRedEngine, recorder: Recorder, admin: httpx.AsyncClient
) -> None:
    wf = make_workflow(unique("deploy"))
    deployment = await engine.deploy(wf)
    rev, flows = await read_flows(admin)
    tab = deployment.details["tab"]
    assert deployment.workflow == wf.ref
    assert deployment.engine == "nodered"
    assert deployment.details["action"] == "deployed"
    assert deployment.details["rev"] == rev
    wanted = to_nodered(wf, options=OPTIONS)
    assert of_tab(flows, tab) == wanted  # exactly the translated nodes, nothing lost or added
    assert recorder.posts() == 1

    again = await engine.deploy(wf)  # cached translation, compared with the server
    assert again.details["action"] == "unchanged"
    assert again.details["rev"] == rev
    assert recorder.posts() == 1

    async with httpx.AsyncClient(timeout=10) as client:  # a fresh engine: no cache at all
        fresh = NodeRedEngine(
            nodered.url, token=nodered.admin_token, options=OPTIONS, client=client
        )
        third = await fresh.deploy(wf)
    assert third.details["action"] == "unchanged"
    assert (await read_flows(admin))[0] == rev
    await engine.undeploy(wf.ref or "")


async def test_deploy_and_undeploy_leave_other_tabs_untouched(
    engine: NodeRedEngine, admin: httpx.AsyncClient
) -> None:
    foreign = await add_foreign_tab(admin, unique("made in the editor"))
    first, second = make_workflow(unique("first")), make_workflow(unique("second"))
    tab_b = (await engine.deploy(second)).details["tab"]
    _, before = await read_flows(admin)
    others_before = [
        n for n in before if n.get("z") in (foreign, tab_b) or n["id"] in (foreign, tab_b)
    ]

    tab_a = (await engine.deploy(first)).details["tab"]
    await engine.deploy(make_workflow(first.metadata.name, version="2"))  # a new version: new tab
    _, during = await read_flows(admin)
    assert of_tab(during, tab_a)
    assert [n for n in during if n in others_before] == others_before

    await engine.undeploy(first.ref or "")
    await engine.undeploy(f"{first.metadata.name}@2")
    _, after = await read_flows(admin)
    assert not of_tab(after, tab_a)
    assert [n for n in after if n.get("z") in (foreign, tab_b) or n["id"] in (foreign, tab_b)] == (
        others_before
    )
    await engine.undeploy(second.ref or "")


async def test_an_unknown_node_type_is_refused_before_nodered_sees_it(
    engine: NodeRedEngine, recorder: Recorder, admin: httpx.AsyncClient
) -> None:
    name = unique("mystery")
    wf = make_workflow(
        name,
        steps=[
            {
                "id": "odd",
                "kind": "native",
                "engine": "nodered",
                "config": {"type": "fluxo-no-such-node", "name": "odd one", "wires": [[]]},
            }
        ],
    )
    rev, _ = await read_flows(admin)
    with pytest.raises(ValidationError) as caught:
        await engine.deploy(wf)
    error = caught.value
    assert f"workflow {name}@1" in error.message
    assert any(
        loc.endswith(".type") and "fluxo-no-such-node" in msg and "not installed" in msg
        for loc, msg in error.problems
    ), error.problems
    assert any("odd one" in loc for loc, _ in error.problems)  # located on the node, by name
    assert (await read_flows(admin))[0] == rev
    assert recorder.posts() == 0


def _dangling(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entry = next(n for n in nodes if n["type"] == "http in")
    entry["wires"] = [[*entry["wires"][0], "0123456789abcdef"]]
    return nodes


def _without_tab(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for n in nodes if n["type"] != "tab"]


def _duplicate_id(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    copy = dict(nodes[2])
    copy["name"] = "twin"
    return [*nodes, copy]


@pytest.mark.parametrize(
    ("spoil", "where", "says"),
    [
        (_dangling, ".wires[0][1]", "not in the flow"),
        (_without_tab, ".z", "names no tab"),
        (_duplicate_id, ".id", "duplicate id"),
    ],
    ids=["dangling-wire", "no-tab", "duplicate-id"],
)
async def test_a_bad_flow_is_refused_before_nodered_sees_it(
    engine: NodeRedEngine,
    recorder: Recorder,
    admin: httpx.AsyncClient,
    spoil: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    where: str,
    says: str,
) -> None:
    wf = make_workflow(unique("bad"))
    nodes = spoil(to_nodered(wf, options=OPTIONS))
    rev, _ = await read_flows(admin)
    with pytest.raises(ValidationError) as caught:
        await engine.deploy_flow(wf.ref or "", nodes)
    assert f"workflow {wf.ref}" in caught.value.message
    assert any(where in loc and says in msg for loc, msg in caught.value.problems), (
        caught.value.problems
    )
    assert (await read_flows(admin))[0] == rev
    assert recorder.posts() == 0


async def test_a_concurrent_deploy_is_retried_once_after_rereading(
    nodered: RunningNodeRed, admin: httpx.AsyncClient
) -> None:
    foreign_labels: list[str] = []

    async def someone_else_deploys() -> None:
        foreign_labels.append(unique("meanwhile"))
        await add_foreign_tab(admin, foreign_labels[-1])

    transport = Interfering(someone_else_deploys, times=1)
    recorder = Recorder()
    hooks: dict[str, list[Any]] = {"request": [recorder.on_request]}
    async with httpx.AsyncClient(transport=transport, event_hooks=hooks, timeout=10) as client:
        engine = NodeRedEngine(
            nodered.url, token=nodered.admin_token, options=OPTIONS, client=client
        )
        wf = make_workflow(unique("race"))
        deployment = await engine.deploy(wf)
        assert recorder.posts() == 2  # the 409, then the retry on the re-read flows
        rev, flows = await read_flows(admin)
        assert deployment.details["rev"] == rev
        assert of_tab(flows, deployment.details["tab"])
        labels = {n.get("label") for n in flows if n["type"] == "tab"}
        assert foreign_labels[0] in labels  # the other deploy was kept, not overwritten

        transport.times = 2  # someone deploys before each of our tries: give up, clearly
        with pytest.raises(ConflictError, match="changed twice") as caught:
            await engine.undeploy(wf.ref or "")
        assert caught.value.context["workflow"] == wf.ref
        await engine.undeploy(wf.ref or "")
        assert not of_tab((await read_flows(admin))[1], deployment.details["tab"])


async def test_undeploy_removes_the_tab_and_is_idempotent(
    nodered: RunningNodeRed, engine: NodeRedEngine, recorder: Recorder, admin: httpx.AsyncClient
) -> None:
    wf = make_workflow(unique("gone"))
    tab = (await engine.deploy(wf)).details["tab"]
    await engine.undeploy(wf.ref or "")
    rev, flows = await read_flows(admin)
    assert not of_tab(flows, tab)
    posts = recorder.posts()
    await engine.undeploy(wf.ref or "")  # absent: nothing to post
    assert recorder.posts() == posts
    assert (await read_flows(admin))[0] == rev

    await engine.deploy(wf)
    async with httpx.AsyncClient(timeout=10) as client:  # an engine that did not deploy it
        await NodeRedEngine(
            nodered.url, token=nodered.admin_token, options=OPTIONS, client=client
        ).undeploy(wf.ref or "")
    assert not of_tab((await read_flows(admin))[1], tab)


async def test_start_posts_to_the_entry_202_then_200_for_the_same_job(
    engine: NodeRedEngine, recorder: Recorder
) -> None:
    wf = make_workflow(unique("start"))
    await engine.deploy(wf)  # returns once the flow answers (Node-RED starts flows after POST)
    recorder.statuses.clear()
    packet = Packet.model_validate(
        {"actor": {"user": {"id": "ada"}, "account": {"id": "acme"}}, "payload": {"id": "A-1"}}
    )
    job_id = uuid.uuid4().hex
    request = StartRequest(job_id=job_id, workflow=wf.ref or "", input=packet)
    handle = await engine.start(request)
    again = await engine.start(request)  # the first step waits 5 s: the job still runs
    assert handle == again == RunHandle(engine="nodered", job_id=job_id, run_id=job_id)
    entry = f"/fluxo/jobs/{wf.metadata.name}/1"
    assert [s for m, p, s in recorder.statuses if m == "POST" and p == entry] == [202, 200]

    await engine.cancel(handle)
    await engine.cancel(handle)  # unknown by now: fine
    assert [s for m, p, s in recorder.statuses if p == entry + "/cancel"] == [200, 404]
    await engine.undeploy(wf.ref or "")

    with pytest.raises(NotFoundError, match="not deployed") as caught:
        await engine.start(request)
    assert caught.value.context["workflow"] == wf.ref


async def test_cancel_finds_the_flow_of_a_job_another_engine_started(
    nodered: RunningNodeRed, engine: NodeRedEngine, recorder: Recorder
) -> None:
    wf = make_workflow(unique("cancel"))
    await engine.deploy(wf)
    packet = Packet.model_validate(
        {"actor": {"user": {"id": "ada"}, "account": {"id": "acme"}}, "payload": {"id": "A-2"}}
    )
    job_id = uuid.uuid4().hex
    handle = await engine.start(StartRequest(job_id=job_id, workflow=wf.ref or "", input=packet))
    async with httpx.AsyncClient(timeout=10) as client:  # e.g. after a restart of Fluxo
        other = NodeRedEngine(
            nodered.url, token=nodered.admin_token, options=OPTIONS, client=client
        )
        await other.cancel(handle)
    again = await engine.start(StartRequest(job_id=job_id, workflow=wf.ref or "", input=packet))
    assert again.job_id == job_id
    entry = f"/fluxo/jobs/{wf.metadata.name}/1"
    # cancelled, so the flow no longer knows the job: it starts anew (202), not "running" (200)
    assert [s for m, p, s in recorder.statuses if m == "POST" and p == entry] == [202, 202]
    await engine.cancel(again)
    await engine.undeploy(wf.ref or "")


async def test_status_comes_from_the_steps_source(engine: NodeRedEngine) -> None:
    handle = RunHandle(engine="nodered", job_id="j-1", run_id="j-1")
    with pytest.raises(ConfigError, match="steps_source"):
        await engine.status(handle)

    async def source(job_id: str) -> RunStatus:
        return RunStatus(job_id=job_id, phase="running")

    engine.steps_source = source
    assert await engine.status(handle) == RunStatus(job_id="j-1", phase="running")


async def test_the_managed_nodered_refuses_its_admin_api_without_a_login(
    nodered: RunningNodeRed, admin: httpx.AsyncClient
) -> None:
    """Admin auth is on by default: no local process deploys a flow (which runs code) unasked."""
    rev, _ = await read_flows(admin)
    async with httpx.AsyncClient(base_url=nodered.url, timeout=10) as anyone:
        assert (await anyone.get("flows", headers=V2)).status_code == 401
        refused = await anyone.post(
            "flows",
            json={"flows": [{"id": "evil", "type": "tab", "label": "evil"}]},
            headers={**V2, "Node-RED-Deployment-Type": "full"},
        )
        assert refused.status_code == 401
        guessed = await anyone.post(
            "auth/token",
            data={
                "client_id": "node-red-admin",
                "grant_type": "password",
                "scope": "*",
                "username": "admin",
                "password": "admin",
            },
        )
        assert guessed.status_code in (401, 403)
    assert (await read_flows(admin))[0] == rev  # nothing was deployed
    managed = nodered.managed
    assert managed.status().admin_auth
    assert managed.password_file.stat().st_mode & 0o777 == 0o600
    password = managed.password_file.read_text().strip()
    settings = managed.settings_file.read_text()
    assert password not in settings
    assert re.search(r'password: "\$2[aby]\$10\$', settings)  # only its bcrypt hash


async def test_the_engine_logs_in_with_the_managed_password_and_ends_its_session(
    nodered: RunningNodeRed, admin: httpx.AsyncClient
) -> None:
    """What the server does: ``create_engine`` finds the login under the Fluxo home."""
    sent: list[str] = []

    async def remember(request: httpx.Request) -> None:
        sent.append(request.headers.get("authorization", ""))

    config = FluxoConfig(
        home=nodered.managed.home.parent, database_url="sqlite://", nodered_url=nodered.url
    )
    wf = make_workflow(unique("guarded"))
    async with httpx.AsyncClient(timeout=10, event_hooks={"request": [remember]}) as client:
        engine = create_engine(None, None, config=config, client=client)
        engine.options = OPTIONS
        assert (await engine.deploy(wf)).details["action"] == "deployed"
        await engine.undeploy(wf.ref or "")
        await engine.aclose()
    bearers = {header for header in sent if header.startswith("Bearer ")}
    assert len(bearers) == 1  # one login for every call
    # the session it opened is revoked: it would otherwise stay valid for a week
    revoked = await admin.get("flows", headers={"Authorization": bearers.pop()})
    assert revoked.status_code == 401


async def test_an_install_without_admin_auth_answers_anyone(
    nodered: RunningNodeRed, tmp_path: Path
) -> None:
    """``install --no-admin-auth`` is the explicit opt-out: no login, no password kept."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    managed = ManagedNodeRed(tmp_path / "nodered", app_dir=nodered.managed.app_dir)
    managed.install(port=port, admin_auth=False)  # node-red is installed already: settings only
    status = managed.start(env={"FLUXO_TOKEN": nodered.token})
    try:
        assert not status.admin_auth
        assert status.version == managed.installed_version()
        assert managed.admin_login() is None
        assert "adminAuth" not in managed.settings_file.read_text()
        wf = make_workflow(unique("open"))
        async with NodeRedEngine(status.url, options=OPTIONS, retries=0) as engine:
            assert (await engine.deploy(wf)).details["action"] == "deployed"
            await engine.undeploy(wf.ref or "")
    finally:
        assert managed.stop()
    assert not managed.status().running
