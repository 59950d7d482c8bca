"""ArgoEngine against a respx-faked Argo Server whose shapes come from Argo's swagger.

Every request body the engine sends is validated against the swagger request definition of its
endpoint (``WorkflowTemplateCreateRequest``, ``WorkflowCreateRequest``, ...), and every fake answer
against the response definition (``Workflow``, ``WorkflowTemplate``, ``grpc.gateway.runtime.Error``),
so the fake cannot drift from the real API. The swagger is Argo's own, at a pinned commit,
shipped in ``tests/data/argo``. Only the Argo Server is faked (it needs Kubernetes); see STYLE.md.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import jsonschema
import pytest
import respx

from engines.argo import ArgoConfig, ArgoEngine, ArgoServerError, create_engine
from fluxo_core.config import FluxoConfig
from fluxo_core.engine import Engine, RunHandle, StartRequest
from fluxo_core.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from fluxo_core.ir import Packet, validate_workflow
from tests.support import argo_reference
from translators import to_argo

pytestmark = pytest.mark.timeout(30)

SERVER = "https://argo.test:2746/argo"  # a base path, given without its trailing slash
API = f"{SERVER}/api/v1"
NS = "fluxo"
TOKEN = "s3cr3t-token-value"
GATEWAY = "http://fluxo.fluxo-system.svc:8080"
JOB_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TEMPLATE = "order-v1"
RUN = f"{TEMPLATE}-{JOB_ID}"
D = "io.argoproj.workflow.v1alpha1."


# --- swagger as the oracle -------------------------------------------------------------------------


def conform(definition: str, document: Any) -> None:
    """Fail the test when ``document`` breaks the swagger ``definition``."""
    schema = {
        "definitions": argo_reference.swagger(),
        "allOf": [{"$ref": f"#/definitions/{definition}"}],
    }
    validator = jsonschema.Draft4Validator(schema)
    problems = sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}"
        for e in validator.iter_errors(document)
    )
    assert problems == [], f"not a {definition}:\n" + "\n".join(problems[:10])


def answer(definition: str, body: dict[str, Any], status: int = 200) -> httpx.Response:
    conform(definition, body)
    return httpx.Response(status, json=body)


def error(status: int, message: str) -> httpx.Response:
    grpc = {404: 5, 401: 16, 403: 7, 409: 6, 500: 13, 503: 14, 400: 3}.get(status, 2)
    return answer("grpc.gateway.runtime.Error", {"code": grpc, "message": message}, status)


def body_of(request: httpx.Request, definition: str) -> dict[str, Any]:
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    data: dict[str, Any] = json.loads(request.content)
    conform(definition, data)
    return data


# --- the Fluxo side --------------------------------------------------------------------------------


def order_workflow(mail_service: str = "mailer") -> Any:
    return validate_workflow(
        {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Workflow",
            "metadata": {"name": "order", "version": "1"},
            "spec": {
                "steps": [
                    {"id": "enrich", "kind": "service", "service": "crm", "next": ["mail"]},
                    {"id": "mail", "kind": "service", "service": mail_service},
                ]
            },
        }
    )


def start_request() -> StartRequest:
    packet = Packet.model_validate(
        {
            "trace_id": TRACE_ID,
            "actor": {"user": {"id": "ann"}, "account": {"id": "acme"}},
            "payload": {"order": 42},
        }
    )
    return StartRequest(job_id=JOB_ID, workflow="order@1", input=packet)


@pytest.fixture
async def engine() -> AsyncIterator[ArgoEngine]:
    async with httpx.AsyncClient() as client:
        config = ArgoConfig(
            base_url=SERVER,
            namespace=NS,
            token=TOKEN,
            gateway_url=GATEWAY,
            retries=2,
            backoff_s=0,
        )
        yield ArgoEngine(config, client=client)


@pytest.fixture
def argo() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as router:
        yield router


def stored(template: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """The template as the server keeps it (with a resourceVersion)."""
    metadata = {**template["metadata"], "namespace": NS, "resourceVersion": version}
    return {**template, "metadata": metadata}


def workflow_doc(phase: str, nodes: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": RUN,
            "namespace": NS,
            "labels": {"fluxo.dev/job-id": JOB_ID},
            "resourceVersion": "5",
        },
        "spec": {"workflowTemplateRef": {"name": TEMPLATE}},
        "status": {"phase": phase, "nodes": nodes or {}, **status},
    }
    return doc


def node(
    name: str,
    kind: str,
    phase: str,
    *,
    key: str | None = None,
    started: str = "2026-01-01T10:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": f"{RUN}-{abs(hash(name)) % 10**8}",
        "name": f"{RUN}.{name}",
        "displayName": name,
        "type": kind,
        "phase": phase,
        "templateName": "call",
        "startedAt": started,
        **extra,
    }
    if key is not None:
        data["inputs"] = {
            "parameters": [
                {"name": "step-id", "value": key.split("[")[0]},
                {"name": "key", "value": key},
                {"name": "payload", "value": '{"order": 42}'},
            ]
        }
    return data


def nodes(*items: dict[str, Any]) -> dict[str, Any]:
    dag = node("main", "DAG", "Running", started="2026-01-01T09:59:59Z")
    dag["name"] = RUN
    return {dag["id"]: dag, **{n["id"]: n for n in items}}


# --- deploy ----------------------------------------------------------------------------------------


async def test_engine_satisfies_the_protocol(engine: ArgoEngine, tmp_path: Path) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "argo"
    settings = {"home": tmp_path, "database_url": "sqlite://", "public_url": GATEWAY}
    config = FluxoConfig(**settings, argo_url=SERVER, argo_namespace=NS, argo_token=TOKEN)
    # The registry's factory: the runtime and workflow store are not used by this engine.
    made = create_engine(cast(Any, None), cast(Any, None), config=config)
    assert made.config.root == f"{SERVER}/"
    assert made.config.gateway_url == GATEWAY
    assert made.config.namespace == NS
    await made.aclose()
    with pytest.raises(ConfigError, match="FLUXO_ARGO_URL"):
        create_engine(cast(Any, None), cast(Any, None), config=FluxoConfig(**settings))


def test_config_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        ArgoConfig(base_url="argo.test:2746", gateway_url=GATEWAY)
    with pytest.raises(ConfigError, match="namespace"):
        ArgoConfig(base_url=SERVER, namespace="Not_A_Namespace", gateway_url=GATEWAY)
    assert TOKEN not in repr(ArgoConfig(base_url=SERVER, token=TOKEN, gateway_url=GATEWAY))


async def test_deploy_creates_the_template_then_is_idempotent(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    server: dict[str, Any] = {}

    def read(request: httpx.Request) -> httpx.Response:
        if TEMPLATE not in server:
            return error(404, f'workflowtemplates.argoproj.io "{TEMPLATE}" not found')
        return answer(D + "WorkflowTemplate", server[TEMPLATE])

    def create(request: httpx.Request) -> httpx.Response:
        data = body_of(request, D + "WorkflowTemplateCreateRequest")
        assert data["namespace"] == NS
        server[TEMPLATE] = stored(data["template"])
        return answer(D + "WorkflowTemplate", server[TEMPLATE])

    get = argo.get(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(side_effect=read)
    post = argo.post(f"{API}/workflow-templates/{NS}").mock(side_effect=create)

    first = await engine.deploy(order_workflow())
    again = await engine.deploy(order_workflow())

    assert first.workflow == "order@1"
    assert first.details["action"] == "created"
    assert again.details["action"] == "unchanged"
    assert (get.call_count, post.call_count) == (2, 1)
    template = server[TEMPLATE]
    assert template["kind"] == "WorkflowTemplate"
    assert template["metadata"]["annotations"]["fluxo.dev/workflow"] == "order@1"


async def test_deploy_updates_a_changed_template_with_its_resource_version(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    old = to_argo(order_workflow("old-mailer"), gateway_url=GATEWAY, version="1")
    argo.get(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(
        return_value=answer(D + "WorkflowTemplate", stored(old.workflow_template, "7"))
    )

    def update(request: httpx.Request) -> httpx.Response:
        data = body_of(request, D + "WorkflowTemplateUpdateRequest")
        assert data["template"]["metadata"]["resourceVersion"] == "7"
        assert "mailer" in json.dumps(data["template"]["spec"])
        return answer(D + "WorkflowTemplate", stored(data["template"], "8"))

    put = argo.put(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(side_effect=update)

    deployment = await engine.deploy(order_workflow())

    assert deployment.details == {
        "namespace": NS,
        "template": TEMPLATE,
        "resourceVersion": "8",
        "action": "updated",
    }
    assert put.call_count == 1


async def test_a_409_on_create_rereads_and_updates_once(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    theirs = stored(
        to_argo(order_workflow("x"), gateway_url=GATEWAY, version="1").workflow_template, "3"
    )
    argo.get(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(
        side_effect=[
            error(404, "not found"),
            answer(D + "WorkflowTemplate", theirs),
        ]
    )
    argo.post(f"{API}/workflow-templates/{NS}").mock(
        return_value=error(409, f'workflowtemplates.argoproj.io "{TEMPLATE}" already exists')
    )

    def update(request: httpx.Request) -> httpx.Response:
        data = body_of(request, D + "WorkflowTemplateUpdateRequest")
        assert data["template"]["metadata"]["resourceVersion"] == "3"
        return answer(D + "WorkflowTemplate", stored(data["template"], "4"))

    argo.put(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(side_effect=update)

    deployment = await engine.deploy(order_workflow())

    assert deployment.details["action"] == "updated"
    assert deployment.details["resourceVersion"] == "4"


async def test_409_on_update_twice_is_a_conflict_error(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    theirs = stored(
        to_argo(order_workflow("x"), gateway_url=GATEWAY, version="1").workflow_template, "3"
    )
    get = argo.get(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(
        return_value=answer(D + "WorkflowTemplate", theirs)
    )
    put = argo.put(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(
        return_value=error(409, "the object has been modified; please apply your changes")
    )

    with pytest.raises(ConflictError) as info:
        await engine.deploy(order_workflow())

    assert (get.call_count, put.call_count) == (2, 2)  # one re-read, one more try, no more
    assert info.value.context["status"] == 409
    assert info.value.retryable is False


async def test_argo_refusing_a_template_is_a_validation_error(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    argo.get(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(return_value=error(404, "nf"))
    argo.post(f"{API}/workflow-templates/{NS}").mock(
        return_value=error(400, "spec.templates[0].name: " + "x" * 5000)
    )
    with pytest.raises(ValidationError) as info:
        await engine.deploy(order_workflow())
    assert len(info.value.message) < 600  # the body is truncated


async def test_undeploy_deletes_the_template_and_absent_is_fine(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    template = stored(to_argo(order_workflow(), gateway_url=GATEWAY, version="1").workflow_template)
    listing = argo.get(
        f"{API}/workflow-templates/{NS}",
        params={"listOptions.labelSelector": "fluxo.dev/workflow=order"},
    ).mock(return_value=answer(D + "WorkflowTemplateList", {"metadata": {}, "items": [template]}))
    delete = argo.delete(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(
        side_effect=[
            answer(D + "WorkflowTemplateDeleteResponse", {}),
            error(404, "not found"),
        ]
    )

    await engine.undeploy("order@1")
    await engine.undeploy("order@1")

    assert (listing.call_count, delete.call_count) == (2, 2)


# --- start, status, cancel -------------------------------------------------------------------------


def deployed(argo: respx.MockRouter) -> None:
    """Routes for a deploy of order@1 onto an empty server."""
    argo.get(f"{API}/workflow-templates/{NS}/{TEMPLATE}").mock(return_value=error(404, "nf"))

    def create(request: httpx.Request) -> httpx.Response:
        data = body_of(request, D + "WorkflowTemplateCreateRequest")
        return answer(D + "WorkflowTemplate", stored(data["template"]))

    argo.post(f"{API}/workflow-templates/{NS}").mock(side_effect=create)


async def test_submit_creates_the_job_workflow_and_is_idempotent(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    deployed(argo)
    sent: list[dict[str, Any]] = []

    def create(request: httpx.Request) -> httpx.Response:
        data = body_of(request, D + "WorkflowCreateRequest")
        sent.append(data)
        if len(sent) > 1:
            return error(409, f'workflows.argoproj.io "{RUN}" already exists')
        document = copy.deepcopy(data["workflow"])
        document["metadata"].update(namespace=NS, resourceVersion="1")
        return answer(D + "Workflow", document)

    argo.post(f"{API}/workflows/{NS}").mock(side_effect=create)
    argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        return_value=answer(D + "Workflow", workflow_doc("Running"))
    )

    await engine.deploy(order_workflow())
    handle = await engine.start(start_request())
    again = await engine.start(start_request())

    assert handle == again == RunHandle(engine="argo", job_id=JOB_ID, run_id=RUN)
    workflow = sent[0]["workflow"]
    assert sent[0]["namespace"] == NS
    assert workflow["spec"]["workflowTemplateRef"] == {"name": TEMPLATE}
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert params["job-id"] == JOB_ID
    assert json.loads(params["input"]) == {"order": 42}
    assert workflow["metadata"]["labels"]["fluxo.dev/job-id"] == JOB_ID


async def test_a_large_input_stays_in_fluxo_and_travels_by_reference(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    deployed(argo)
    post = argo.post(f"{API}/workflows/{NS}").mock(
        side_effect=lambda request: answer(
            D + "Workflow", body_of(request, D + "WorkflowCreateRequest")["workflow"]
        )
    )
    big = start_request().input.model_copy(update={"payload": {"blob": "x" * 200_000}})
    await engine.deploy(order_workflow())
    await engine.start(StartRequest(job_id=JOB_ID, workflow="order@1", input=big))

    sent = json.loads(post.calls.last.request.content)["workflow"]
    params = {p["name"]: p["value"] for p in sent["spec"]["arguments"]["parameters"]}
    assert len(post.calls.last.request.content) < 20_000, "the payload must not be in the spec"
    assert json.loads(params["input"]) == {}
    assert json.loads(params["input-headers"])["fluxo-payload-ref"] == JOB_ID


async def test_start_of_a_workflow_deployed_elsewhere_reads_the_template(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    template = stored(to_argo(order_workflow(), gateway_url=GATEWAY, version="1").workflow_template)
    argo.get(f"{API}/workflow-templates/{NS}").mock(
        return_value=answer(D + "WorkflowTemplateList", {"metadata": {}, "items": [template]})
    )
    post = argo.post(f"{API}/workflows/{NS}").mock(
        return_value=answer(D + "Workflow", workflow_doc(""))
    )

    handle = await engine.start(start_request())

    assert handle.run_id == RUN
    sent = json.loads(post.calls.last.request.content)
    assert sent["workflow"]["spec"]["workflowTemplateRef"]["name"] == TEMPLATE


def owned(workflow: Any, account: str) -> Any:
    metadata = workflow.metadata.model_copy(update={"account": account})
    return workflow.model_copy(update={"metadata": metadata})


async def test_start_of_an_accounts_job_uses_that_accounts_template(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    """Two accounts' ``order@1`` in one namespace: each job runs its own account's template."""
    bundles = {
        account: to_argo(owned(order_workflow(), account), gateway_url=GATEWAY, version="1")
        for account in ("globex", "acme")
    }
    items = [stored(b.workflow_template) for b in bundles.values()]
    argo.get(f"{API}/workflow-templates/{NS}").mock(
        return_value=answer(D + "WorkflowTemplateList", {"metadata": {}, "items": items})
    )
    post = argo.post(f"{API}/workflows/{NS}").mock(
        return_value=answer(D + "Workflow", workflow_doc(""))
    )
    request = start_request().model_copy(update={"account": "acme"})

    await engine.start(request)

    sent = json.loads(post.calls.last.request.content)["workflow"]
    assert sent["spec"]["workflowTemplateRef"]["name"] == bundles["acme"].template_name
    assert bundles["acme"].template_name != bundles["globex"].template_name
    assert sent["metadata"]["labels"]["fluxo.dev/account"] == "acme"


async def test_deploy_never_overwrites_a_template_holding_another_accounts_workflow(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    """A template of the same name (a hash collision, or made by hand) is left alone."""
    mine = to_argo(owned(order_workflow(), "acme"), gateway_url=GATEWAY, version="1")
    theirs = to_argo(owned(order_workflow("fax"), "globex"), gateway_url=GATEWAY, version="1")
    squatter = stored(theirs.workflow_template)
    squatter["metadata"]["name"] = mine.template_name
    argo.get(f"{API}/workflow-templates/{NS}/{mine.template_name}").mock(
        return_value=answer(D + "WorkflowTemplate", squatter)
    )
    with pytest.raises(ConflictError) as caught:
        await engine.deploy(owned(order_workflow(), "acme"))
    assert "holds another workflow" in caught.value.message
    assert "globex" not in str(caught.value)  # nothing about the other account
    # (no PUT is mocked: respx would fail the test if the engine tried to update it)


async def test_start_of_an_undeployed_workflow_is_not_found(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    argo.get(f"{API}/workflow-templates/{NS}").mock(
        return_value=answer(D + "WorkflowTemplateList", {"metadata": {}, "items": []})
    )
    with pytest.raises(NotFoundError, match="deploy it first"):
        await engine.start(start_request())


async def test_status_progresses_to_succeeded(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    done: dict[str, Any] = {
        "finishedAt": "2026-01-01T10:00:02Z",
        "outputs": {"result": '{"status":"succeeded"}'},
    }
    argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        side_effect=[
            answer(D + "Workflow", workflow_doc("")),
            answer(D + "Workflow", workflow_doc("Pending")),
            answer(
                D + "Workflow",
                workflow_doc("Running", nodes(node("enrich", "HTTP", "Running", key="enrich"))),
            ),
            answer(
                D + "Workflow",
                workflow_doc(
                    "Succeeded",
                    nodes(
                        node("enrich", "HTTP", "Succeeded", key="enrich", **done),
                        node(
                            "mail",
                            "HTTP",
                            "Succeeded",
                            key="mail",
                            started="2026-01-01T10:00:03Z",
                            **done,
                        ),
                        node("order-v1.onExit", "HTTP", "Succeeded"),
                    ),
                    outputs={"parameters": [{"name": "fluxo-result", "value": '[{"sent": true}]'}]},
                ),
            ),
        ]
    )
    handle = RunHandle(engine="argo", job_id=JOB_ID, run_id=RUN)

    seen = [await engine.status(handle) for _ in range(4)]

    assert [s.phase for s in seen] == ["queued", "running", "running", "succeeded"]
    assert [(s.key, s.phase) for s in seen[2].steps] == [("enrich", "running")]
    final = seen[3]
    assert [(s.key, s.step_id, s.phase) for s in final.steps] == [
        ("enrich", "enrich", "succeeded"),
        ("mail", "mail", "succeeded"),
    ]
    assert final.result == [{"sent": True}]
    assert final.steps[0].input == {"order": 42}
    assert final.steps[0].output == {"status": "succeeded"}
    assert final.steps[0].finished_at is not None
    assert final.error is None


async def test_a_failed_node_fails_the_job(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    attempts = [
        node("enrich(0)", "HTTP", "Failed", message="response.statusCode == 503"),
        node("enrich(1)", "HTTP", "Failed", message="response.statusCode == 503"),
    ]
    retry = node(
        "enrich",
        "Retry",
        "Failed",
        key="enrich",
        message="No more retries left",
        children=[n["id"] for n in attempts],
    )
    omitted = node("mail", "Skipped", "Omitted", key="mail", started="2026-01-01T10:00:09Z")
    argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        return_value=answer(
            D + "Workflow",
            workflow_doc(
                "Failed", nodes(retry, *attempts, omitted), message="child 'enrich' failed"
            ),
        )
    )

    status = await engine.status(RunHandle(engine="argo", job_id=JOB_ID, run_id=RUN))

    assert status.phase == "failed"
    # The step that failed the job and the cause, as the step engine says them (no answer
    # from Fluxo in the node's result here: the node's message is the cause).
    assert status.error == {
        "step": "enrich",
        "key": "enrich",
        "code": "call_failed",
        "message": "No more retries left",
    }
    assert [(s.key, s.phase, s.attempt) for s in status.steps] == [
        ("enrich", "failed", 2),
        ("mail", "skipped", 1),
    ]
    assert status.steps[0].error == {"message": "No more retries left"}


async def test_cancel_stops_the_workflow(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    def stop(request: httpx.Request) -> httpx.Response:
        data = body_of(request, D + "WorkflowStopRequest")
        assert data == {"namespace": NS, "name": RUN}
        return answer(D + "Workflow", workflow_doc("Running"))

    argo.put(f"{API}/workflows/{NS}/{RUN}/stop").mock(side_effect=stop)
    stopped = workflow_doc(
        "Failed",
        nodes(
            node("enrich", "HTTP", "Failed", key="enrich", message="Stopped with strategy 'Stop'")
        ),
        message="Stopped with strategy 'Stop'",
    )
    stopped["spec"]["shutdown"] = "Stop"
    argo.get(f"{API}/workflows/{NS}/{RUN}").mock(return_value=answer(D + "Workflow", stopped))
    handle = RunHandle(engine="argo", job_id=JOB_ID, run_id=RUN)

    await engine.cancel(handle)
    status = await engine.status(handle)

    assert status.phase == "cancelled"
    assert [(s.key, s.phase) for s in status.steps] == [("enrich", "cancelled")]


async def test_cancel_falls_back_to_terminate(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    stop = argo.put(f"{API}/workflows/{NS}/{RUN}/stop").mock(
        return_value=error(500, "cannot stop: pod cleanup failed")
    )

    def terminate(request: httpx.Request) -> httpx.Response:
        body_of(request, D + "WorkflowTerminateRequest")
        return answer(D + "Workflow", workflow_doc("Running"))

    term = argo.put(f"{API}/workflows/{NS}/{RUN}/terminate").mock(side_effect=terminate)

    await engine.cancel(RunHandle(engine="argo", job_id=JOB_ID, run_id=RUN))

    assert (stop.call_count, term.call_count) == (3, 1)


# --- error mapping: one test each ------------------------------------------------------------------

HANDLE = RunHandle(engine="argo", job_id=JOB_ID, run_id=RUN)


def assert_clean(exc: BaseException) -> None:
    """No token in the message, and the httpx error kept as the cause."""
    assert TOKEN not in str(exc)
    assert isinstance(exc.__cause__, httpx.HTTPError)


async def test_401_is_an_auth_error(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    route = argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        return_value=error(401, f"token {TOKEN} rejected")
    )
    with pytest.raises(AuthError, match=r"ArgoConfig\.token") as info:
        await engine.status(HANDLE)
    assert route.call_count == 1  # not retried
    assert info.value.retryable is False
    assert_clean(info.value)


async def test_403_is_permission_denied(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        return_value=error(403, 'workflows.argoproj.io is forbidden: User "fluxo" cannot get')
    )
    with pytest.raises(PermissionDeniedError, match="forbidden") as info:
        await engine.status(HANDLE)
    assert_clean(info.value)


async def test_404_is_not_found(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        return_value=error(404, f'workflows.argoproj.io "{RUN}" not found')
    )
    with pytest.raises(NotFoundError, match=RUN) as info:
        await engine.status(HANDLE)
    assert_clean(info.value)


async def test_409_for_another_jobs_workflow_is_a_conflict(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    deployed(argo)
    argo.post(f"{API}/workflows/{NS}").mock(return_value=error(409, "already exists"))
    other = workflow_doc("Running")
    other["metadata"]["labels"]["fluxo.dev/job-id"] = "another-job"
    argo.get(f"{API}/workflows/{NS}/{RUN}").mock(return_value=answer(D + "Workflow", other))
    await engine.deploy(order_workflow())

    with pytest.raises(ConflictError, match="another job") as info:
        await engine.start(start_request())
    assert isinstance(info.value.__cause__, ConflictError)


async def test_500_is_retried_then_a_retryable_error(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    route = argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        return_value=error(500, "etcdserver: request timed out " + "y" * 3000)
    )
    with pytest.raises(ArgoServerError, match="answered 500") as info:
        await engine.status(HANDLE)
    assert route.call_count == 3  # 1 + retries
    assert info.value.retryable is True
    assert "after 3 tries" in info.value.message
    assert len(info.value.message) < 500
    assert_clean(info.value)


async def test_a_5xx_then_success_is_invisible(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        side_effect=[error(503, "unavailable"), answer(D + "Workflow", workflow_doc("Running"))]
    )
    assert (await engine.status(HANDLE)).phase == "running"


async def test_server_down_is_retried_then_a_clear_error(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    route = argo.get(f"{API}/workflows/{NS}/{RUN}").mock(
        side_effect=httpx.ConnectError("[Errno 111] Connection refused")
    )
    with pytest.raises(ArgoServerError) as info:
        await engine.status(HANDLE)
    assert route.call_count == 3
    assert info.value.retryable is True
    message = info.value.message
    assert f"cannot reach the Argo Server at {SERVER}/" in message
    assert "ArgoConfig.base_url" in message
    assert_clean(info.value)


async def test_server_credentials_in_the_url_stay_out_of_messages(
    argo: respx.MockRouter,
) -> None:
    argo.get(url__regex=r".*/workflows/").mock(side_effect=httpx.ConnectError("refused"))
    config = ArgoConfig(
        base_url="https://admin:hunter2@argo.test/", gateway_url=GATEWAY, retries=0, token=TOKEN
    )
    async with httpx.AsyncClient() as client:
        engine = ArgoEngine(config, client=client)
        with pytest.raises(ArgoServerError) as info:
            await engine.status(HANDLE)
    assert "hunter2" not in info.value.message
    assert "https://argo.test/" in info.value.message


# --- watch ------------------------------------------------------------------------------------------


class _DroppedStream(httpx.AsyncByteStream):
    """Sends some lines, then the connection breaks."""

    def __init__(self, *lines: dict[str, Any]) -> None:
        self.lines = lines

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self.lines:
            yield json.dumps(line).encode() + b"\n"
        raise httpx.ReadError("connection reset by peer")


def event(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    item = {"type": kind, "object": document}
    conform(D + "WorkflowWatchEvent", item)
    return {"result": item}


def events_route(argo: respx.MockRouter, side_effect: Any) -> respx.Route:
    return argo.get(
        f"{API}/workflow-events/{NS}",
        params={"listOptions.labelSelector": f"fluxo.dev/job-id={JOB_ID}"},
    ).mock(side_effect=side_effect)


async def test_watch_follows_the_stream_across_a_dropped_connection(
    engine: ArgoEngine, argo: respx.MockRouter
) -> None:
    running = workflow_doc("Running", nodes(node("enrich", "HTTP", "Running", key="enrich")))
    done = workflow_doc("Succeeded", nodes(node("enrich", "HTTP", "Succeeded", key="enrich")))
    route = events_route(
        argo,
        [
            httpx.Response(200, stream=_DroppedStream(event("ADDED", running))),
            httpx.ConnectError("refused"),
            httpx.Response(
                200,
                content=(
                    json.dumps(event("ADDED", running))  # the state again on reconnect
                    + "\n\n"
                    + json.dumps(event("MODIFIED", done))
                    + "\n"
                ).encode(),
            ),
        ],
    )

    seen = [status async for status in engine.watch(JOB_ID)]

    assert [s.phase for s in seen] == ["running", "succeeded"]  # repeats are not yielded
    assert [s.phase for s in seen[1].steps] == ["succeeded"]
    assert route.call_count == 3
    assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_watch_gives_up_after_the_retries(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    route = events_route(argo, httpx.ConnectError("refused"))
    with pytest.raises(ArgoServerError, match="cannot reach") as info:
        async for _ in engine.watch(JOB_ID):
            pass
    assert route.call_count == 3
    assert_clean(info.value)


async def test_watch_maps_401_without_retrying(engine: ArgoEngine, argo: respx.MockRouter) -> None:
    route = events_route(argo, [error(401, "bad token")])
    with pytest.raises(AuthError):
        async for _ in engine.watch(JOB_ID):
            pass
    assert route.call_count == 1
