"""Cron triggers scheduled by Kubernetes: the Trigger controller keeps a CronJob per trigger in
a Kubernetes API faked with respx (no cluster runs here), on SQLite and PostgreSQL.

Every CronJob Fluxo sends and every answer of the fake is checked against the strict schemas of
Kubernetes v1.37 (``tests/data/kubernetes``); so are the API's ``Status`` errors and the
``DeleteOptions`` of a delete (``tests/support/kubernetes_api.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from fluxo.control.kubernetes import KubernetesClient, KubernetesConfig, cronjob_name
from fluxo.control.platform import Platform
from fluxo_core.clock import ManualClock
from fluxo_core.errors import ValidationError
from fluxo_core.storage import Database, Principal
from tests.support import services as svc
from tests.support.kubernetes_api import FakeKubernetes, conform, status

pytestmark = pytest.mark.timeout(60)

SERVER = "https://kube.test:6443"
NS = "fluxo-jobs"
TOKEN = "kube-token-6c1f0e2b9d"
ACME = Principal(account_id="acme", user_id="ada")
GLOBEX = Principal(account_id="globex", user_id="gus")
START = 1_800_000_000.0 - (1_800_000_000 % 60)

COUNT_UP = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "count-up"},
    "spec": {"engine": "step", "steps": [{"id": "up", "kind": "service", "service": "inc"}]},
}


def nightly(schedule: str = "0 2 * * *", **cron: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "nightly"},
        "spec": {
            "workflow": "count-up",
            "type": "cron",
            "schedule": schedule,
            "input": {"n": 1},
            "cron": {"scheduler": "kubernetes", "timeZone": "Europe/Paris", **cron},
        },
    }


@dataclass
class World:
    platform: Platform
    kube: FakeKubernetes
    clock: ManualClock

    def cronjob(self, account: str = "acme", trigger: str = "nightly") -> dict[str, Any]:
        return self.kube.objects[(NS, cronjob_name(account, trigger))]

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.kube.requests if r[0] != "GET"]


def conditions(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in document["status"]["conditions"]}


def ready_message(document: dict[str, Any]) -> str:
    (ready,) = [c for c in document["status"]["conditions"] if c["type"] == "Ready"]
    return str(ready["message"])


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    clock = ManualClock(START + 5)
    kube = FakeKubernetes(SERVER, TOKEN)
    with respx.mock(assert_all_called=False) as router:
        kube.install(router)
        async with httpx.AsyncClient() as http:
            client = KubernetesClient(
                KubernetesConfig(server=SERVER, namespace=NS, token=TOKEN), client=http
            )
            platform = Platform(
                db,
                svc.SERVICES,
                workers=1,
                poll_interval_s=0.1,
                admission_cache_s=0,
                clock=clock,
                run_triggers=False,
                kubernetes=client,
            )
            for account in ("acme", "globex"):
                await platform.accounts.ensure_account(account)
            async with platform:
                await platform.jobs.apply(COUNT_UP, ACME)
                await platform.jobs.apply(COUNT_UP, GLOBEX)
                yield World(platform, kube, clock)


async def test_a_kubernetes_cron_trigger_becomes_a_cronjob_the_builtin_scheduler_leaves(
    world: World,
) -> None:
    applied = await world.platform.resources.apply(ACME, nightly())
    assert conditions(applied.document) == {"Ready": ("True", "ScheduledByKubernetes")}
    cronjob = world.cronjob()
    conform("CronJob", cronjob)
    spec = cronjob["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["suspend"]) == (
        "0 2 * * *",
        "Europe/Paris",
        False,
    )
    assert spec["concurrencyPolicy"] == "Allow"
    assert spec["startingDeadlineSeconds"] == 60  # catchUp skip: a slot over a minute late drops
    meta = cronjob["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "fluxo"
    assert meta["annotations"]["fluxo.dev/account"] == "acme"
    assert meta["annotations"]["fluxo.dev/trigger"] == "nightly"
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    # The token is a reference to the account's Secret, never a value in the object.
    assert env["FLUXO_AUTHORIZATION"]["valueFrom"]["secretKeyRef"] == {
        "name": "fluxo-gateway-acme",
        "key": "authorization",
    }
    assert env["FLUXO_JOBS_URL"]["value"].endswith("/v1/workflows/count-up/jobs")
    assert env["FLUXO_KEY_PREFIX"]["value"] == "trigger:nightly"
    assert json.loads(env["FLUXO_INPUT"]["value"]) == {"n": 1}
    assert TOKEN not in json.dumps(cronjob)
    status_kube = applied.document["status"]["kubernetes"]
    assert status_kube["name"] == meta["name"]
    assert status_kube["namespace"] == NS
    # Fluxo's own scheduler fires nothing for it, however late it gets.
    state = await world.platform.triggers.store.get("acme", "nightly")
    assert state.next_fire_at is None
    world.clock.advance(3 * 86_400)
    assert await world.platform.trigger_supervisor.tick() == 0
    assert (await world.platform.jobs.list(ACME)).items == []


async def test_a_changed_schedule_replaces_the_cronjob_at_its_resource_version(
    world: World,
) -> None:
    await world.platform.resources.apply(ACME, nightly())
    version = world.cronjob()["metadata"]["resourceVersion"]
    world.kube.requests.clear()
    await world.platform.resources.apply(ACME, nightly("30 3 * * 1-5", catchUp="once"))
    assert world.writes() == [
        ("PUT", f"/apis/batch/v1/namespaces/{NS}/cronjobs/" + cronjob_name("acme", "nightly"))
    ]
    spec = world.cronjob()["spec"]
    assert spec["schedule"] == "30 3 * * 1-5"
    assert "startingDeadlineSeconds" not in spec  # catchUp once: Kubernetes makes up the latest
    assert world.cronjob()["metadata"]["resourceVersion"] != version
    # The same spec again: read, compared, left as it is.
    world.kube.requests.clear()
    await world.platform.refresh_trigger("acme", "nightly")
    assert world.writes() == []


async def test_concurrency_maps_to_the_policy_and_catch_up_all_is_refused(world: World) -> None:
    await world.platform.resources.apply(ACME, nightly(concurrency="forbid"))
    assert world.cronjob()["spec"]["concurrencyPolicy"] == "Forbid"
    await world.platform.resources.apply(ACME, nightly(concurrency="replace"))
    assert world.cronjob()["spec"]["concurrencyPolicy"] == "Replace"
    with pytest.raises(ValidationError) as refused:
        await world.platform.resources.apply(ACME, nightly(catchUp="all"))
    assert "catchUp: all is not possible with scheduler: kubernetes" in str(refused.value)
    assert any(where.startswith("spec.cron") for where, _ in refused.value.problems)


async def test_a_paused_trigger_or_workflow_suspends_the_cronjob(world: World) -> None:
    await world.platform.resources.apply(ACME, nightly())
    await world.platform.triggers.pause(ACME, "nightly")
    document = await world.platform.resources.refresh("acme", "Trigger", "nightly")
    assert world.cronjob()["spec"]["suspend"] is True
    assert document["status"]["kubernetes"]["suspended"] is True
    assert "is suspended: trigger 'nightly' is paused" in ready_message(document)
    await world.platform.triggers.resume(ACME, "nightly")
    await world.platform.refresh_trigger("acme", "nightly")
    assert world.cronjob()["spec"]["suspend"] is False
    await world.platform.job_control.pause_workflow(ACME, "count-up")
    await world.platform.refresh_trigger("acme", "nightly")
    assert world.cronjob()["spec"]["suspend"] is True


async def test_the_cronjobs_status_comes_back_into_the_trigger(world: World) -> None:
    await world.platform.resources.apply(ACME, nightly())
    world.cronjob()["status"] = {
        "lastScheduleTime": "2027-01-16T01:00:00Z",
        "lastSuccessfulTime": "2027-01-15T01:00:04Z",
        "active": [{"kind": "Job", "namespace": NS, "name": "fluxo-acme-nightly-x-29000000"}],
    }
    document = await world.platform.resources.refresh("acme", "Trigger", "nightly")
    kube = document["status"]["kubernetes"]
    assert kube["lastScheduleTime"] == "2027-01-16T01:00:00Z"
    assert kube["lastSuccessfulTime"] == "2027-01-15T01:00:04Z"
    assert kube["activeJobs"] == 1
    assert "last scheduled: 2027-01-16T01:00:00Z" in ready_message(document)
    assert document["status"]["health"] == "connected"


async def test_deleting_the_trigger_deletes_its_cronjob(world: World) -> None:
    await world.platform.resources.apply(ACME, nightly())
    name = cronjob_name("acme", "nightly")
    await world.platform.resources.delete(ACME, "Trigger", "nightly")
    assert (NS, name) not in world.kube.objects
    assert ("DELETE", f"/apis/batch/v1/namespaces/{NS}/cronjobs/{name}") in world.kube.requests
    assert await world.platform.triggers.store.find("acme", "nightly") is None


async def test_moving_back_to_the_builtin_scheduler_deletes_the_cronjob(world: World) -> None:
    await world.platform.resources.apply(ACME, nightly())
    back = nightly()
    back["spec"]["cron"]["scheduler"] = "fluxo"
    applied = await world.platform.resources.apply(ACME, back)
    assert conditions(applied.document) == {"Ready": ("True", "Scheduled")}
    assert world.kube.objects == {}
    state = await world.platform.triggers.store.get("acme", "nightly")
    assert state.next_fire_at is not None


async def test_a_403_makes_the_trigger_failing_with_the_apis_words(world: World) -> None:
    world.kube.refuse = status(
        403,
        "Forbidden",
        'cronjobs.batch is forbidden: User "system:serviceaccount:fluxo:fluxo" cannot create '
        f'resource "cronjobs" in API group "batch" in the namespace "{NS}"',
    )
    applied = await world.platform.resources.apply(ACME, nightly())
    assert conditions(applied.document) == {"Ready": ("False", "KubernetesError")}
    message = ready_message(applied.document)
    assert "answered 403" in message
    assert "cannot create resource" in message
    assert "grant Fluxo's service account" in message
    assert TOKEN not in message
    assert applied.document["status"]["health"] == "failing"
    state = await world.platform.triggers.store.get("acme", "nightly")
    assert (state.health, state.last_error) == ("failing", message)
    # A delete the API refuses leaves a mark; the resync finishes it once the API allows.
    await world.platform.resources.delete(ACME, "Trigger", "nightly")
    assert await world.platform.triggers.store.find("acme", "nightly") is not None
    world.kube.refuse = None
    world.kube.put(NS, _planted("acme", "nightly"))
    await world.platform.refresh_trigger("acme", "nightly")
    assert world.kube.objects == {}
    assert await world.platform.triggers.store.find("acme", "nightly") is None


async def test_a_409_on_replace_reads_again_and_replaces_once_more(world: World) -> None:
    await world.platform.resources.apply(ACME, nightly())
    name = cronjob_name("acme", "nightly")
    raced = []

    def someone_else_writes() -> None:
        if not raced:  # once: another writer bumps the version between our GET and PUT
            raced.append(True)
            world.kube.put(NS, world.kube.objects[(NS, name)])

    world.kube.before_write = someone_else_writes
    world.kube.requests.clear()
    applied = await world.platform.resources.apply(ACME, nightly("15 4 * * *"))
    assert conditions(applied.document) == {"Ready": ("True", "ScheduledByKubernetes")}
    assert [m for m, _ in world.kube.requests] == ["GET", "PUT", "GET", "PUT"]
    assert world.cronjob()["spec"]["schedule"] == "15 4 * * *"


async def test_an_object_of_that_name_that_is_not_the_triggers_is_left_alone(
    world: World,
) -> None:
    # Someone else's CronJob under the name acme's trigger would take: never replaced.
    world.kube.put(NS, _planted("globex", "nightly", name=cronjob_name("acme", "nightly")))
    applied = await world.platform.resources.apply(ACME, nightly())
    assert conditions(applied.document) == {"Ready": ("False", "KubernetesError")}
    assert "is not this trigger's" in ready_message(applied.document)
    assert world.writes() == []
    await world.platform.resources.delete(ACME, "Trigger", "nightly")
    assert world.writes() == []
    assert len(world.kube.objects) == 1


async def test_each_account_reconciles_only_its_own_cronjob(world: World) -> None:
    await world.platform.resources.apply(GLOBEX, nightly("0 5 * * *"))
    globex = cronjob_name("globex", "nightly")
    world.kube.requests.clear()
    await world.platform.resources.apply(ACME, nightly())
    acme = cronjob_name("acme", "nightly")
    assert acme != globex
    base = f"/apis/batch/v1/namespaces/{NS}/cronjobs"
    # acme's reconcile read and wrote its own object's path, nothing else (no list either).
    assert set(world.kube.requests) == {("GET", f"{base}/{acme}"), ("POST", base)}
    assert world.cronjob("globex")["spec"]["schedule"] == "0 5 * * *"
    assert world.cronjob("globex")["metadata"]["annotations"]["fluxo.dev/account"] == "globex"
    world.kube.requests.clear()
    await world.platform.triggers.pause(ACME, "nightly")
    await world.platform.refresh_trigger("acme", "nightly")
    await world.platform.resources.delete(ACME, "Trigger", "nightly")
    assert all(path.endswith(acme) for _, path in world.kube.requests)
    assert world.cronjob("globex")["spec"]["suspend"] is False
    assert (NS, acme) not in world.kube.objects


async def test_without_a_kubernetes_api_the_trigger_says_how_to_configure_one(
    db: Database,
) -> None:
    platform = Platform(db, svc.SERVICES, workers=1, run_triggers=False)
    await platform.accounts.ensure_account("acme")
    async with platform:
        await platform.jobs.apply(COUNT_UP, ACME)
        applied = await platform.resources.apply(ACME, nightly())
    assert conditions(applied.document) == {"Ready": ("False", "KubernetesNotConfigured")}
    assert "set FLUXO_KUBERNETES" in ready_message(applied.document)


def _planted(account: str, trigger: str, *, name: str | None = None) -> dict[str, Any]:
    """A minimal valid CronJob as another writer (or an earlier Fluxo) left it."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name or cronjob_name(account, trigger),
            "labels": {"app.kubernetes.io/managed-by": "fluxo"},
            "annotations": {"fluxo.dev/account": account, "fluxo.dev/trigger": trigger},
        },
        "spec": {
            "schedule": "0 1 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "x", "image": "busybox"}],
                        }
                    }
                }
            },
        },
    }


async def test_a_running_fluxo_suspends_the_cronjob_as_soon_as_the_trigger_is_paused(
    db: Database,
) -> None:
    """The resync as ``fluxo up`` runs it: a pause wakes it, whatever its interval."""
    kube = FakeKubernetes(SERVER, TOKEN)
    with respx.mock(assert_all_called=False) as router:
        kube.install(router)
        async with httpx.AsyncClient() as http:
            client = KubernetesClient(
                KubernetesConfig(server=SERVER, namespace=NS, token=TOKEN), client=http
            )
            platform = Platform(db, svc.SERVICES, workers=1, kubernetes=client)
            platform.kubernetes_sync_s = 3600.0  # only a wake makes it look again
            await platform.accounts.ensure_account("acme")
            async with platform:
                await platform.jobs.apply(COUNT_UP, ACME)
                await platform.resources.apply(ACME, nightly())
                name = cronjob_name("acme", "nightly")
                assert kube.objects[(NS, name)]["spec"]["suspend"] is False
                await platform.triggers.pause(ACME, "nightly")
                # The sync replaces the CronJob first and writes the Trigger's status after:
                # wait for both, the status being the later of the two.
                for _ in range(200):
                    document = await platform.resources.get(ACME, "Trigger", "nightly")
                    if document["status"].get("kubernetes", {}).get("suspended"):
                        break
                    await asyncio.sleep(0.05)
                assert kube.objects[(NS, name)]["spec"]["suspend"] is True
                assert document["status"]["kubernetes"]["suspended"] is True


async def test_a_token_the_api_refuses_is_named_as_the_problem(db: Database) -> None:
    kube = FakeKubernetes(SERVER, TOKEN)
    with respx.mock(assert_all_called=False) as router:
        kube.install(router)
        async with httpx.AsyncClient() as http:
            wrong = KubernetesConfig(server=SERVER, namespace=NS, token="expired-token-9a7c")
            platform = Platform(
                db,
                svc.SERVICES,
                workers=1,
                run_triggers=False,
                kubernetes=KubernetesClient(wrong, client=http),
            )
            await platform.accounts.ensure_account("acme")
            async with platform:
                await platform.jobs.apply(COUNT_UP, ACME)
                applied = await platform.resources.apply(ACME, nightly())
    assert conditions(applied.document) == {"Ready": ("False", "KubernetesError")}
    message = ready_message(applied.document)
    assert f"Kubernetes API {SERVER}" in message
    assert "answered 401" in message
    assert "check the token or client certificate" in message
    assert "expired-token-9a7c" not in message
    assert kube.objects == {}
