"""NodeRedEngine's error mapping, retries and auth against respx (one test per mapping).

The behaviour against a real Node-RED is in tests/integration/nodered; these pin what a real
server cannot easily be made to do (answer 401/403/400/503, drop connections, race a 409 twice).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from engines.nodered import NodeRedEngine, NodeRedOptions, NodeRedServerError, create_engine
from engines.nodered._flows import installed_types, replace_owned
from engines.nodered.managed import ManagedNodeRed, ManagedStatus, read_env_file
from fluxo.cli import _nodered as cli
from fluxo_core.config import FluxoConfig
from fluxo_core.engine import RunHandle, StartRequest
from fluxo_core.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UnsupportedFeatureError,
    ValidationError,
)
from fluxo_core.ir import Packet, Workflow, validate_workflow
from translators.nodered import deploy_mark, to_nodered

pytestmark = pytest.mark.timeout(30)

URL = "http://nodered.test:1880"
TOKEN = "s3cr3t-admin-token-value"
PASSWORD = "pa55-w0rd-value"
OPTIONS = NodeRedOptions(fluxo_url="http://fluxo.test:8240")
REF = "orders@1"
ENTRY = f"{URL}/fluxo/jobs/orders/1"
PROBE = {"job_id": "fluxo-readiness-probe", "status": "unknown"}


def probe(router: respx.MockRouter) -> Any:
    """A fake cancel entry answering as the flow deployed last (its mark), like Node-RED."""

    def answer(request: httpx.Request) -> httpx.Response:
        deployed = [
            json.loads(c.request.content)["flows"]
            for c in router.calls
            if c.request.method == "POST" and c.request.url.path.endswith("/flows")
        ]
        flows = deployed[-1] if deployed else []
        entry = next((n for n in flows if n.get("url") == request.url.path), None)
        tab = [n for n in flows if entry is not None and n.get("z") == entry.get("z")]
        return httpx.Response(404, json={**PROBE, "flow": deploy_mark(tab)})

    return answer


def make_workflow(steps: list[dict[str, Any]] | None = None) -> Workflow:
    return validate_workflow(
        {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Workflow",
            "metadata": {"name": "orders", "version": "1"},
            "spec": {
                "steps": steps
                or [
                    {"id": "wait", "kind": "delay", "seconds": 1, "next": ["notify"]},
                    {"id": "notify", "kind": "service", "service": "notify@1"},
                ]
            },
        }
    )


def node_sets(workflow: Workflow) -> list[dict[str, Any]]:
    """A ``GET /nodes`` answer listing every type the workflow's flow uses."""
    types = sorted({n["type"] for n in to_nodered(workflow, options=OPTIONS)} - {"tab"})
    return [
        {"id": "node-red/core", "types": types, "enabled": True, "module": "node-red"},
        {"id": "x/disabled", "types": ["never"], "enabled": False},
    ]


@pytest.fixture
def nodered() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=True, assert_all_mocked=True) as router:
        yield router


def make_engine(**kwargs: Any) -> NodeRedEngine:
    settings: dict[str, Any] = {"token": TOKEN, "options": OPTIONS, "backoff_s": 0}
    settings.update(kwargs)
    return NodeRedEngine(URL, **settings)


def packet() -> Packet:
    return Packet.model_validate(
        {"actor": {"user": {"id": "ada"}, "account": {"id": "acme"}}, "payload": {"n": 1}}
    )


def mock_deploy(router: respx.MockRouter, workflow: Workflow) -> None:
    router.get("/nodes").respond(200, json=node_sets(workflow))
    router.get("/flows").respond(200, json={"flows": [], "rev": "r0"})
    router.post("/flows").respond(200, json={"rev": "r1"})
    router.post("/fluxo/jobs/orders/1/cancel").mock(side_effect=probe(router))


# --- the happy path, as the wire sees it ----------------------------------------------------------


async def test_a_redeploy_waits_until_the_new_flow_answers_not_the_one_it_replaces(
    nodered: respx.MockRouter,
) -> None:
    """Node-RED answers the deploy before it swaps the routes: the old flow answers a moment."""
    wf = make_workflow()
    nodered.get("/nodes").respond(200, json=node_sets(wf))
    nodered.get("/flows").respond(200, json={"flows": [], "rev": "r0"})
    nodered.post("/flows").respond(200, json={"rev": "r1"})
    new = probe(nodered)
    old = httpx.Response(404, json={**PROBE, "flow": "0123456789abcdef"})
    answers = iter([old, old])
    route = nodered.post("/fluxo/jobs/orders/1/cancel").mock(
        side_effect=lambda request: next(answers, None) or new(request)
    )
    await make_engine().deploy(wf)
    assert route.call_count == 3  # twice the old flow, then the new one


async def test_deploy_sends_v2_with_rev_and_only_changes_its_tab(
    nodered: respx.MockRouter,
) -> None:
    wf = make_workflow()
    other = [
        {"id": "t2", "type": "tab", "label": "theirs"},
        {"id": "n2", "type": "debug", "z": "t2"},
    ]
    nodered.get("/nodes").respond(200, json=node_sets(wf))
    read = nodered.get("/flows").respond(200, json={"flows": other, "rev": "r0"})
    write = nodered.post("/flows").respond(200, json={"rev": "r1"})
    nodered.post("/fluxo/jobs/orders/1/cancel").mock(side_effect=probe(nodered))

    deployment = await make_engine().deploy(wf)

    assert deployment.details["rev"] == "r1"
    assert deployment.details["action"] == "deployed"
    assert read.calls.last.request.headers["Node-RED-API-Version"] == "v2"
    sent = write.calls.last.request
    assert sent.headers["Node-RED-API-Version"] == "v2"
    assert sent.headers["Node-RED-Deployment-Type"] == "flows"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(sent.content)
    assert body["rev"] == "r0"
    assert body["flows"][:2] == other
    assert body["flows"][2:] == to_nodered(wf, options=OPTIONS)


async def test_start_posts_the_packet_without_the_admin_token(nodered: respx.MockRouter) -> None:
    route = nodered.post("/fluxo/jobs/orders/1").respond(202, json={"status": "running"})
    handle = await make_engine().start(StartRequest(job_id="j1", workflow=REF, input=packet()))
    assert handle == RunHandle(engine="nodered", job_id="j1", run_id="j1")
    request = route.calls.last.request
    assert "Authorization" not in request.headers  # a flow could read it from msg.req
    body = json.loads(request.content)
    assert (body["job_id"], body["workflow"], body["payload"]) == ("j1", REF, {"n": 1})
    assert body["actor"]["account"]["id"] == "acme"


def owned(workflow: Workflow, account: str) -> Workflow:
    metadata = workflow.metadata.model_copy(update={"account": account})
    return workflow.model_copy(update={"metadata": metadata})


async def test_another_accounts_workflow_of_the_same_name_gets_its_own_tab_and_route(
    nodered: respx.MockRouter,
) -> None:
    acme, globex = (owned(make_workflow(), account) for account in ("acme", "globex"))
    acme_nodes = to_nodered(acme, options=OPTIONS)
    nodered.get("/nodes").respond(200, json=node_sets(globex))
    nodered.get("/flows").respond(200, json={"flows": acme_nodes, "rev": "r0"})
    write = nodered.post("/flows").respond(200, json={"rev": "r1"})
    entry = nodered.post("/fluxo/jobs/globex/orders/1").respond(202, json={"status": "running"})
    cancel = nodered.post("/fluxo/jobs/globex/orders/1/cancel").mock(side_effect=probe(nodered))
    engine = make_engine()

    deployment = await engine.deploy(globex)

    assert deployment.details["entry"] == f"{URL}/fluxo/jobs/globex/orders/1"
    flows = json.loads(write.calls.last.request.content)["flows"]
    assert flows[: len(acme_nodes)] == acme_nodes  # acme's tab stays as it was
    assert flows[len(acme_nodes) :] == to_nodered(globex, options=OPTIONS)
    request = StartRequest(job_id="j1", workflow=REF, input=packet(), account="globex")
    await engine.start(request)
    assert json.loads(entry.calls.last.request.content)["job_id"] == "j1"
    await engine.cancel(RunHandle(engine="nodered", job_id="j1", run_id="j1"))
    assert json.loads(cancel.calls.last.request.content) == {"job_id": "j1"}


async def test_undeploy_removes_the_accounts_tab_and_no_other(nodered: respx.MockRouter) -> None:
    acme, globex = (owned(make_workflow(), account) for account in ("acme", "globex"))
    acme_nodes = to_nodered(acme, options=OPTIONS)
    both = acme_nodes + to_nodered(globex, options=OPTIONS)
    nodered.get("/flows").respond(200, json={"flows": both, "rev": "r0"})
    write = nodered.post("/flows").respond(200, json={"rev": "r1"})
    # A fresh engine (another process deployed it): the tab is found from account and ref.
    await make_engine().undeploy(REF, account="globex")
    assert json.loads(write.calls.last.request.content)["flows"] == acme_nodes


# --- error mapping: one test per mapping ---------------------------------------------------------


async def test_401_is_an_auth_error_that_names_the_workflow_not_the_token(
    nodered: respx.MockRouter,
) -> None:
    nodered.get("/nodes").respond(401, text=f"Unauthorized: bad token {TOKEN}")
    with pytest.raises(AuthError) as caught:
        await make_engine().deploy(make_workflow())
    assert REF in caught.value.message
    assert "admin token" in caught.value.message
    assert TOKEN not in str(caught.value)
    assert caught.value.context["status"] == 401


async def test_403_is_permission_denied(nodered: respx.MockRouter) -> None:
    nodered.get("/nodes").respond(403, json={"code": "forbidden", "message": "permission denied"})
    with pytest.raises(PermissionDeniedError, match="permission"):
        await make_engine().deploy(make_workflow())


async def test_400_from_deploy_is_a_validation_error_quoting_nodered(
    nodered: respx.MockRouter,
) -> None:
    wf = make_workflow()
    nodered.get("/nodes").respond(200, json=node_sets(wf))
    nodered.get("/flows").respond(200, json={"flows": [], "rev": "r0"})
    nodered.post("/flows").respond(
        400, json={"code": "unexpected_error", "message": "Error: Cannot read the flow"}
    )
    with pytest.raises(ValidationError) as caught:
        await make_engine().deploy(wf)
    assert f"deploy workflow {REF}" in caught.value.message
    assert caught.value.problems == [("nodered", "unexpected_error: Error: Cannot read the flow")]
    assert caught.value.context["workflow"] == REF


async def test_a_connect_error_is_retryable_and_retried(nodered: respx.MockRouter) -> None:
    route = nodered.get("/nodes").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(NodeRedServerError) as caught:
        await make_engine(retries=2).deploy(make_workflow())
    assert caught.value.retryable
    assert route.call_count == 3
    assert "cannot reach Node-RED" in caught.value.message
    assert "(after 3 tries)" in caught.value.message


async def test_a_5xx_is_retried_until_it_answers(nodered: respx.MockRouter) -> None:
    wf = make_workflow()
    nodered.get("/nodes").respond(200, json=node_sets(wf))
    flows = nodered.get("/flows")
    flows.side_effect = [
        httpx.Response(503, text="busy"),
        httpx.Response(200, json={"flows": [], "rev": "r0"}),
    ]
    nodered.post("/flows").respond(200, json={"rev": "r1"})
    nodered.post("/fluxo/jobs/orders/1/cancel").mock(side_effect=probe(nodered))
    assert (await make_engine().deploy(wf)).details["rev"] == "r1"
    assert flows.call_count == 2


async def test_a_409_rereads_once_and_a_second_one_is_a_conflict(
    nodered: respx.MockRouter,
) -> None:
    wf = make_workflow()
    nodered.get("/nodes").respond(200, json=node_sets(wf))
    reads = nodered.get("/flows").respond(200, json={"flows": [], "rev": "r0"})
    conflict = httpx.Response(409, json={"code": "version_mismatch", "message": "mismatch"})
    writes = nodered.post("/flows")
    writes.side_effect = [conflict, httpx.Response(200, json={"rev": "r2"})]
    nodered.post("/fluxo/jobs/orders/1/cancel").mock(side_effect=probe(nodered))
    engine = make_engine()
    assert (await engine.deploy(wf)).details["rev"] == "r2"
    assert (reads.call_count, writes.call_count) == (2, 2)

    reads.respond(200, json={"flows": to_nodered(wf, options=OPTIONS), "rev": "r2"})
    writes.side_effect = [conflict, conflict]
    with pytest.raises(ConflictError, match="changed twice") as caught:
        await engine.undeploy(REF)
    assert caught.value.context["workflow"] == REF


async def test_an_unknown_entry_is_not_found_naming_the_workflow(
    nodered: respx.MockRouter,
) -> None:
    nodered.post("/fluxo/jobs/orders/1").respond(404, text="<pre>Cannot POST</pre>")
    with pytest.raises(NotFoundError, match=r"workflow orders@1 is not deployed") as caught:
        await make_engine().start(StartRequest(job_id="j1", workflow=REF, input=packet()))
    assert caught.value.context["job_id"] == "j1"


async def test_a_flow_that_never_starts_is_reported(nodered: respx.MockRouter) -> None:
    wf = make_workflow()
    mock_deploy(nodered, wf)
    nodered.post("/fluxo/jobs/orders/1/cancel").respond(404, text="<pre>Cannot POST</pre>")
    with pytest.raises(NodeRedServerError, match="did not start") as caught:
        await make_engine(start_wait_s=0.05).deploy(wf)
    assert caught.value.retryable


async def test_a_v1_only_server_is_refused_clearly(nodered: respx.MockRouter) -> None:
    wf = make_workflow()
    nodered.get("/nodes").respond(200, json=node_sets(wf))
    nodered.get("/flows").respond(200, json=[])
    with pytest.raises(NodeRedServerError, match="v2 Admin API"):
        await make_engine().deploy(wf)


# --- the POST /auth/token flow -------------------------------------------------------------------


async def test_the_password_flow_gets_a_token_and_renews_it_after_a_401(
    nodered: respx.MockRouter,
) -> None:
    wf = make_workflow()
    login = nodered.post("/auth/token")
    login.side_effect = [
        httpx.Response(200, json={"access_token": "tok-1", "expires_in": 604800}),
        httpx.Response(200, json={"access_token": "tok-2", "expires_in": 604800}),
    ]
    nodes = nodered.get("/nodes")
    nodes.side_effect = [httpx.Response(401), httpx.Response(200, json=node_sets(wf))]
    nodered.get("/flows").respond(200, json={"flows": [], "rev": "r0"})
    nodered.post("/flows").respond(200, json={"rev": "r1"})
    nodered.post("/fluxo/jobs/orders/1/cancel").mock(side_effect=probe(nodered))

    engine = make_engine(token=None, username="admin", password=PASSWORD)
    await engine.deploy(wf)

    form = dict(httpx.QueryParams(login.calls[0].request.content.decode()))
    assert form == {
        "client_id": "node-red-admin",
        "grant_type": "password",
        "scope": "*",
        "username": "admin",
        "password": PASSWORD,
    }
    assert [c.request.headers["Authorization"] for c in nodes.calls] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert login.call_count == 2


async def test_a_refused_login_is_an_auth_error_without_the_password(
    nodered: respx.MockRouter,
) -> None:
    nodered.post("/auth/token").respond(403, json={"error": "access_denied"})
    engine = make_engine(token=None, username="admin", password=PASSWORD)
    with pytest.raises(AuthError, match="refused the admin user 'admin'") as caught:
        await engine.deploy(make_workflow())
    assert PASSWORD not in str(caught.value)


# --- refused before any request ------------------------------------------------------------------


async def test_a_step_kind_it_cannot_run_is_refused_naming_workflow_and_step() -> None:
    wf = make_workflow([{"id": "child", "kind": "workflow", "workflow": "billing@2"}])
    with pytest.raises(UnsupportedFeatureError, match=r"workflow orders@1: step 'child'"):
        await make_engine().deploy(wf)


async def test_status_without_a_steps_source_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="steps_source"):
        await make_engine().status(RunHandle(engine="nodered", job_id="j", run_id="j"))


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("nodered.test:1880", {}),
        (URL, {"token": TOKEN, "username": "admin", "password": PASSWORD}),
        (URL, {"username": "admin"}),
        (URL, {"retries": -1}),
    ],
    ids=["not-a-url", "token-and-password", "user-without-password", "negative-retries"],
)
def test_bad_settings_are_config_errors(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        NodeRedEngine(url, **kwargs)


def test_create_engine_reads_the_config_with_defaults() -> None:
    engine = create_engine(None, None)
    assert engine.url == "http://127.0.0.1:1880/"
    assert engine.options.fluxo_url == "http://127.0.0.1:8240"
    config = FluxoConfig(
        home=Path("/nonexistent"),
        database_url="sqlite://",
        nodered_url="http://nr.internal:1990/admin",
        nodered_admin_token=TOKEN,
        public_url="http://fluxo.internal:8240",
    )
    engine = create_engine(None, None, config=config, poll_interval_s=0.5, lease_s=5)
    assert engine.url == "http://nr.internal:1990/admin/"
    assert engine.options.fluxo_url == "http://fluxo.internal:8240"
    assert TOKEN not in repr(vars(engine).get("options"))
    # Without a public URL the flows call the port Fluxo serves, not the default one.
    served = config.model_copy(update={"public_url": None, "port": 9031})
    assert create_engine(None, None, config=served).options.fluxo_url == "http://127.0.0.1:9031"


# --- pure helpers -----------------------------------------------------------------------------


def test_replace_owned_keeps_the_tab_in_place_and_reports_no_change() -> None:
    flows = [
        {"id": "a", "type": "tab"},
        {"id": "mine", "type": "tab"},
        {"id": "m1", "type": "debug", "z": "mine"},
        {"id": "b", "type": "tab"},
    ]
    new = [{"id": "mine", "type": "tab", "label": "v2"}, {"id": "m2", "type": "debug", "z": "mine"}]
    out = replace_owned(flows, new, ids={"mine", "m2"}, containers={"mine"})
    assert out == [flows[0], *new, flows[3]]
    assert replace_owned(out, new, ids={"mine", "m2"}, containers={"mine"}) is None


def test_installed_types_skips_disabled_sets() -> None:
    listing = [{"types": ["inject", "debug"]}, {"types": ["gpio"], "enabled": False}]
    assert installed_types(listing) == {"inject", "debug"}
    assert installed_types({"not": "a list"}) == set()


async def test_undeploy_keeps_config_nodes_other_flows_use(nodered: respx.MockRouter) -> None:
    flows = [
        {"id": "t1", "type": "tab"},
        {"id": "n1", "type": "mqtt in", "z": "t1", "broker": "cfg"},
        {"id": "cfg", "type": "mqtt-broker"},
        {"id": "own", "type": "mqtt-broker"},
        {"id": "t2", "type": "tab"},
        {"id": "n2", "type": "mqtt in", "z": "t2", "broker": "cfg"},
    ]
    nodered.get("/nodes").respond(200, json=[{"types": ["mqtt in", "mqtt-broker"]}])
    nodered.get("/flows").respond(200, json={"flows": flows, "rev": "r0"})
    write = nodered.post("/flows").respond(200, json={"rev": "r1"})
    engine = make_engine()
    mine = [{**n, "x": 1, "y": 1} if n.get("z") else n for n in flows[:4]]
    await engine.deploy_flow("imported", mine)
    await engine.undeploy("imported")
    kept = json.loads(write.calls.last.request.content)["flows"]
    assert [n["id"] for n in kept] == ["cfg", "t2", "n2"]


# --- the managed Node-RED's small parts -------------------------------------------------------


def test_read_env_file(tmp_path: Path) -> None:
    bare = tmp_path / "token"
    bare.write_text("abc123\n")
    assert read_env_file(bare) == {"FLUXO_TOKEN": "abc123"}
    lines = tmp_path / "env"
    lines.write_text("# the flows' env\nexport FLUXO_TOKEN='t0k'\nOTHER=\"x y\"\n")
    assert read_env_file(lines) == {"FLUXO_TOKEN": "t0k", "OTHER": "x y"}
    bad = tmp_path / "bad"
    bad.write_text("A=1\nnot a pair\n")
    with pytest.raises(ConfigError, match="entry 2") as caught:
        read_env_file(bad)
    assert "not a pair" not in str(caught.value)


def test_status_of_a_home_without_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = ManagedNodeRed(tmp_path / "nodered").status()
    assert (status.running, status.installed, status.port) == (False, None, 1880)
    assert cli.main(["--home", str(tmp_path / "nodered"), "status", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["running"] is False
    assert cli.main(["--home", str(tmp_path / "nodered"), "start"]) == 1
    assert "fluxo nodered install" in capsys.readouterr().err


def test_add_parser_wires_into_a_fluxo_style_parser() -> None:
    parser = argparse.ArgumentParser(prog="fluxo")
    sub = parser.add_subparsers(required=True)
    cli.add_parser(sub)
    args = parser.parse_args(["nodered", "start", "--port", "1999", "--token-env-file", "f"])
    assert (args.nodered_action, args.port, args.token_env_file) == ("start", 1999, Path("f"))
    assert callable(args.func)


def test_install_turns_admin_auth_on_unless_told_not_to() -> None:
    parser = argparse.ArgumentParser(prog="fluxo")
    cli.add_parser(parser.add_subparsers(required=True))
    assert parser.parse_args(["nodered", "install"]).admin_auth is True
    assert parser.parse_args(["nodered", "install", "--no-admin-auth"]).admin_auth is False


def managed_status(**changes: Any) -> ManagedStatus:
    status = ManagedStatus(
        running=True,
        pid=4242,
        url="http://127.0.0.1:1880/",
        port=1880,
        installed="4.1.15",
        version="4.1.15",
        home="/h/nodered",
        log_file="/h/nodered/nodered.log",
        editor=False,
        admin_auth=True,
        password_file="/h/nodered/admin.password",
    )
    return dataclasses.replace(status, **changes)


def test_start_prints_the_editor_url_only_when_there_is_an_editor() -> None:
    headless = cli._started(managed_status())
    assert "http://" not in headless
    assert "Admin API only" in headless
    assert "password in /h/nodered/admin.password" in headless
    with_editor = cli._started(managed_status(editor=True))
    assert with_editor == (
        "editor: http://127.0.0.1:1880/ (user admin, password in /h/nodered/admin.password)"
    )


def fake_install(home: Path, *, port: int = 1880, admin_auth: bool = True) -> None:
    """What `install` leaves behind, without node: its state and the admin password."""
    home.mkdir(parents=True)
    (home / "managed.json").write_text(json.dumps({"port": port, "admin_auth": admin_auth}))
    (home / "admin.password").write_text(PASSWORD + "\n")


async def test_the_engine_logs_in_to_the_managed_nodered_and_only_to_it(tmp_path: Path) -> None:
    managed_url = "http://127.0.0.1:1881"
    config = FluxoConfig(home=tmp_path, database_url="sqlite://", nodered_url=managed_url)
    # made before the install, as when `fluxo nodered install` follows `fluxo up`
    engine = create_engine(None, None, config=config)
    fake_install(tmp_path / "nodered", port=1881)
    managed = ManagedNodeRed(tmp_path / "nodered")
    assert managed.admin_login("http://localhost:1881/") == ("admin", PASSWORD)
    for elsewhere in ("http://127.0.0.1:1880/", "http://nodered.test:1881/", "http://[::1]:x/"):
        assert managed.admin_login(elsewhere) is None, elsewhere
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as router:
        login = router.post(f"{managed_url}/auth/token").respond(200, json={"access_token": "t1"})
        flows = router.get(f"{managed_url}/flows").respond(200, json={"flows": [], "rev": "r0"})
        await engine.undeploy("nothing")
        assert parse_qs(login.calls.last.request.content.decode())["password"] == [PASSWORD]
        assert flows.calls.last.request.headers["authorization"] == "Bearer t1"
        # another server never gets the managed password; a given token wins over it
        other = router.get(f"{URL}/flows").respond(200, json={"flows": [], "rev": "r0"})
        elsewhere = config.model_copy(update={"nodered_url": URL})
        await create_engine(None, None, config=elsewhere).undeploy("nothing")
        assert "authorization" not in other.calls.last.request.headers
        given = config.model_copy(update={"nodered_admin_token": TOKEN})
        await create_engine(None, None, config=given).undeploy("nothing")
        assert flows.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"
        assert login.call_count == 1


def test_no_login_when_the_managed_nodered_was_installed_without_admin_auth(
    tmp_path: Path,
) -> None:
    fake_install(tmp_path / "nodered", admin_auth=False)
    assert ManagedNodeRed(tmp_path / "nodered").admin_login() is None


async def test_aclose_revokes_the_token_the_engine_logged_in_for(
    nodered: respx.MockRouter,
) -> None:
    nodered.post("/auth/token").respond(200, json={"access_token": TOKEN})
    nodered.get("/flows").respond(200, json={"flows": [], "rev": "r0"})
    revoke = nodered.post("/auth/revoke").respond(200)
    engine = make_engine(token=None, username="admin", password=PASSWORD)
    await engine.undeploy("nothing-deployed")
    assert revoke.call_count == 0
    await engine.aclose()
    assert revoke.call_count == 1
    request = revoke.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == {"token": TOKEN}
    await engine.aclose()  # once only
    assert revoke.call_count == 1
