"""A Kubernetes-scheduled cron trigger of a workflow on Argo becomes an Argo CronWorkflow, kept
through the Argo Server's REST API (faked with respx, as in ``test_argo_engine.py``): every
request body is checked against the swagger's ``CreateCronWorkflowRequest`` /
``UpdateCronWorkflowRequest``, every CronWorkflow against the CronWorkflow CRD's schema, both
shipped in ``tests/data/argo``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
import pytest
import respx

from engines.argo import ArgoConfig, ArgoEngine
from fluxo.control.kubernetes import cronjob_name
from fluxo.control.platform import Platform
from fluxo.control.triggers.argo_cron import ArgoCronWorkflows
from fluxo.control.triggers.kubernetes import cron_workflow_name
from fluxo_core.clock import ManualClock
from fluxo_core.storage import Database, Principal
from tests.support import argo_reference
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)

SERVER = "https://argo.test:2746"
NS = "fluxo"
TOKEN = "argo-token-51d0a3"
ACME = Principal(account_id="acme", user_id="ada")
D = "io.argoproj.workflow.v1alpha1."

ON_ARGO = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "report"},
    "spec": {"engine": "argo", "steps": [{"id": "up", "kind": "service", "service": "inc"}]},
}


def nightly(schedule: str = "0 2 * * *") -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "nightly"},
        "spec": {
            "workflow": "report",
            "type": "cron",
            "schedule": schedule,
            "input": {"n": 1},
            "cron": {
                "scheduler": "kubernetes",
                "timeZone": "Europe/Paris",
                "concurrency": "forbid",
            },
        },
    }


def conform(definition: str, document: Any) -> None:
    schema = {
        "definitions": argo_reference.swagger(),
        "allOf": [{"$ref": f"#/definitions/{definition}"}],
    }
    problems = sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}"
        for e in jsonschema.Draft4Validator(schema).iter_errors(document)
    )
    assert problems == [], f"not a {definition}:\n" + "\n".join(problems[:10])


def conform_crd(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(argo_reference.crd_schema("CronWorkflow"))
    problems = [e.message[:200] for e in validator.iter_errors(document)]
    assert problems == [], problems


def grpc_error(status: int, message: str) -> httpx.Response:
    body = {"code": {404: 5, 409: 6, 403: 7}.get(status, 2), "message": message}
    conform("grpc.gateway.runtime.Error", body)
    return httpx.Response(status, json=body)


@dataclass
class FakeArgo:
    """The WorkflowTemplates (the engine deploys) and CronWorkflows of one namespace."""

    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    crons: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    version: int = 10

    def install(self, router: respx.MockRouter) -> None:
        api = re.escape(f"{SERVER}/api/v1")
        router.route(url__regex=rf"{api}/workflow-templates/{NS}(/(?P<name>[^/?]+))?$").mock(
            side_effect=self._template
        )
        router.route(url__regex=rf"{api}/cron-workflows/{NS}(/(?P<name>[^/?]+))?(\?.*)?$").mock(
            side_effect=self._cron
        )

    def _stamp(self, document: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        document["metadata"]["resourceVersion"] = str(self.version)
        document["metadata"]["namespace"] = NS
        return document

    def _template(self, request: httpx.Request, name: str | None) -> httpx.Response:
        if request.method == "GET":
            found = self.templates.get(name or "")
            return (
                grpc_error(404, "not found") if found is None else httpx.Response(200, json=found)
            )
        body = json.loads(request.content)
        template = self._stamp(body["template"])
        self.templates[template["metadata"]["name"]] = template
        return httpx.Response(200, json=template)

    def _cron(self, request: httpx.Request, name: str | None) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        stored = self.crons.get(name or "")
        if request.method == "GET":
            if stored is None:
                return grpc_error(404, f'cronworkflows.argoproj.io "{name}" not found')
            return self._answer(stored)
        if request.method == "POST":
            body = json.loads(request.content)
            conform(D + "CreateCronWorkflowRequest", body)
            cron = body["cronWorkflow"]
            conform_crd(cron)
            if cron["metadata"]["name"] in self.crons:
                return grpc_error(409, "already exists")
            self.crons[cron["metadata"]["name"]] = self._stamp(cron)
            return self._answer(cron)
        if request.method == "PUT":
            body = json.loads(request.content)
            conform(D + "UpdateCronWorkflowRequest", body)
            cron = body["cronWorkflow"]
            conform_crd(cron)
            assert stored is not None
            if cron["metadata"].get("resourceVersion") != stored["metadata"]["resourceVersion"]:
                return grpc_error(409, "the object has been modified")
            cron["status"] = stored.get("status", {})
            self.crons[cron["metadata"]["name"]] = self._stamp(cron)
            return self._answer(cron)
        assert request.method == "DELETE"
        if stored is None:
            return grpc_error(404, "not found")
        wanted = request.url.params.get("deleteOptions.preconditions.resourceVersion")
        assert wanted == stored["metadata"]["resourceVersion"]
        del self.crons[name or ""]
        return httpx.Response(200, json={})

    def _answer(self, cron: dict[str, Any]) -> httpx.Response:
        conform(D + "CronWorkflow", cron)
        return httpx.Response(200, json=copy.deepcopy(cron))


@dataclass
class World:
    platform: Platform
    argo: FakeArgo


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    argo = FakeArgo()
    with respx.mock(assert_all_called=False) as router:
        argo.install(router)
        async with httpx.AsyncClient() as http:
            engine = ArgoEngine(
                ArgoConfig(
                    base_url=SERVER, namespace=NS, token=TOKEN, gateway_url="http://fluxo:8240"
                ),
                client=http,
            )
            platform = Platform(
                db,
                svc.SERVICES,
                workers=1,
                engines=["step", engine],
                clock=ManualClock(1_800_000_000.0),
                run_triggers=False,
                argo_cron=ArgoCronWorkflows(SERVER, NS, TOKEN, client=http),
            )
            await platform.accounts.ensure_account("acme")
            async with platform:
                await platform.jobs.apply(ON_ARGO, ACME)
                yield World(platform, argo)


def conditions(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in document["status"]["conditions"]}


async def test_a_trigger_of_a_workflow_on_argo_becomes_a_cron_workflow(world: World) -> None:
    applied = await world.platform.resources.apply(ACME, nightly())
    assert conditions(applied.document) == {"Ready": ("True", "ScheduledByKubernetes")}
    assert applied.document["status"]["kubernetes"]["kind"] == "CronWorkflow"
    name = cron_workflow_name("acme", "nightly")
    cron = world.argo.crons[name]
    spec = cron["spec"]
    assert (spec["schedules"], spec["timezone"], spec["concurrencyPolicy"]) == (
        ["0 2 * * *"],
        "Europe/Paris",
        "Forbid",
    )
    assert (spec["suspend"], spec["startingDeadlineSeconds"]) == (False, 60)
    assert cron["metadata"]["annotations"]["fluxo.dev/account"] == "acme"
    assert cron["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fluxo"
    text = json.dumps(cron)
    assert "/v1/workflows/report/jobs" in text
    assert "fluxo-gateway-acme" in text  # the token is the Secret's, never in the object
    assert TOKEN not in text

    await world.platform.resources.apply(ACME, nightly("0 4 * * *"))
    assert world.argo.crons[name]["spec"]["schedules"] == ["0 4 * * *"]
    assert ("PUT", f"/api/v1/cron-workflows/{NS}/{name}") in world.argo.requests

    await world.platform.triggers.pause(ACME, "nightly")
    await world.platform.refresh_trigger("acme", "nightly")
    assert world.argo.crons[name]["spec"]["suspend"] is True

    world.argo.crons[name]["status"] = {"lastScheduledTime": "2027-01-16T01:00:00Z"}
    document = await world.platform.resources.refresh("acme", "Trigger", "nightly")
    assert document["status"]["kubernetes"]["lastScheduleTime"] == "2027-01-16T01:00:00Z"

    await world.platform.resources.delete(ACME, "Trigger", "nightly")
    assert world.argo.crons == {}
    assert name == cronjob_name("acme", "nightly")
