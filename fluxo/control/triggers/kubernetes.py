"""Cron triggers that Kubernetes schedules (``spec.cron.scheduler: kubernetes``).

The built-in scheduler fires none of them (their ``next_fire_at`` stays empty). Instead
:class:`KubernetesCron` makes a CronJob in the configured namespace match each one
(:mod:`fluxo.control.kubernetes.cronjob` builds it), or, for a workflow on Argo, a CronWorkflow
on the argo engine's Argo Server (the translator's, :mod:`.argo_cron`); both are
:class:`CronObjects`, kept the same way:

- **create** when it is missing; **replace** (PUT with the ``resourceVersion`` read) when the
  hash of the wanted spec differs from the one annotated on the object, once more after a 409
  (someone wrote it meanwhile); **delete** (with that ``resourceVersion`` as precondition) with
  the trigger, or when it moves back to the built-in scheduler;
- **suspend** while the trigger is held: paused, disabled, blocked, or its workflow paused
  (:meth:`TriggerService.held`); the Job's API call would be refused then anyway;
- **status back**: the CronJob's ``lastScheduleTime``, ``lastSuccessfulTime`` and active Jobs
  go into the Trigger's ``status.kubernetes``; an API error makes the trigger ``failing`` with
  the API's words (RBAC, a conflict), and ``Ready: False``.

Fluxo touches only its own objects: each carries ``app.kubernetes.io/managed-by: fluxo`` and the
exact account and trigger in annotations; an object of that name that is not this trigger's is
left alone (ConflictError). Names carry a hash of the account (:func:`cronjob_name`), so the
same trigger name in two accounts gives two objects, and a reconcile reads and writes only its
own object's path: never a list, never another account's.

Concurrency maps to ``concurrencyPolicy`` (``Allow``/``Forbid``/``Replace``); Kubernetes applies
it to the starter Jobs, which end once their Fluxo job is created, so it limits overlapping
starts, not overlapping Fluxo jobs. Catch-up: ``skip`` sets ``startingDeadlineSeconds`` to the
built-in scheduler's grace (a slot later than that is dropped); ``once`` leaves it unset
(Kubernetes starts the latest missed slot). The resync (:meth:`KubernetesCron.run`) reconciles
every such trigger again every ``FLUXO_KUBERNETES_SYNC_S``, so a pause reaches the cluster and
the cluster's status reaches the Trigger within it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from fluxo.control.kubernetes import (
    KubernetesClient,
    StarterCronJob,
    cronjob_document,
    cronjob_name,
)
from fluxo.control.kubernetes.cronjob import (
    DEFAULT_IMAGE,
    MANAGED_BY,
    OWNER_ACCOUNT,
    OWNER_TRIGGER,
    SPEC_HASH,
    spec_hash,
)
from fluxo.control.triggers.cron import GRACE_S, idle
from fluxo.control.triggers.service import TriggerService
from fluxo_core.errors import ConfigError, ConflictError, FluxoError
from fluxo_core.ir import Workflow
from fluxo_core.storage.triggers import TriggerRow
from fluxo_core.storage.workflows import WorkflowStore
from translators.argo import CronTrigger, to_argo

__all__ = [
    "CronJobState",
    "CronJobs",
    "CronObjects",
    "KubernetesCron",
    "cron_workflow_name",
    "scheduled_by_kubernetes",
]

log = logging.getLogger(__name__)

_CRONJOBS: Final = "/apis/batch/v1/namespaces/{namespace}/cronjobs"


def scheduled_by_kubernetes(spec: dict[str, Any]) -> bool:
    """Whether a trigger's spec asks Kubernetes to keep its time."""
    return spec.get("type") == "cron" and (spec.get("cron") or {}).get("scheduler") == (
        "kubernetes"
    )


@dataclass(frozen=True)
class CronJobState:
    """What the cluster says about a trigger's CronJob or CronWorkflow (``status.kubernetes``)."""

    kind: str
    namespace: str
    name: str
    suspended: bool
    last_schedule_time: str | None
    last_successful_time: str | None
    active_jobs: int
    action: str  # created, updated, unchanged

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "suspended": self.suspended,
            "lastScheduleTime": self.last_schedule_time,
            "lastSuccessfulTime": self.last_successful_time,
            "activeJobs": self.active_jobs,
        }


class CronObjects(Protocol):
    """The objects of one kind in one namespace that schedule triggers: CronJobs in the
    Kubernetes API, or CronWorkflows on an Argo Server."""

    kind: str
    namespace: str

    async def get(self, name: str) -> dict[str, Any] | None: ...

    async def create(self, document: dict[str, Any]) -> dict[str, Any]: ...

    async def replace(self, name: str, document: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, name: str, resource_version: str) -> None: ...

    async def aclose(self) -> None: ...


class CronJobs:
    """The ``batch/v1`` CronJobs of the client's namespace."""

    kind = "CronJob"

    def __init__(self, client: KubernetesClient) -> None:
        self.client = client
        self.namespace = client.namespace

    def _path(self, name: str | None = None) -> str:
        base = _CRONJOBS.format(namespace=self.namespace)
        return base if name is None else f"{base}/{name}"

    async def get(self, name: str) -> dict[str, Any] | None:
        return await self.client.get(self._path(name), f"get CronJob {self.namespace}/{name}")

    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        name = document["metadata"]["name"]
        return await self.client.create(
            self._path(), document, f"create CronJob {self.namespace}/{name}"
        )

    async def replace(self, name: str, document: dict[str, Any]) -> dict[str, Any]:
        return await self.client.replace(
            self._path(name), document, f"update CronJob {self.namespace}/{name}"
        )

    async def delete(self, name: str, resource_version: str) -> None:
        await self.client.delete(
            self._path(name),
            f"delete CronJob {self.namespace}/{name}",
            resource_version=resource_version,
        )

    async def aclose(self) -> None:
        await self.client.aclose()


class KubernetesCron:
    """Args:
    cronjobs: the CronJobs (None: no Kubernetes API configured).
    cron_workflows: the Argo Server's CronWorkflows, for workflows on Argo (None: no argo
        engine).
    triggers: whether a trigger is held; where its health is recorded.
    workflows: which engine a trigger's workflow runs on (and, for Argo, the workflow).
    gateway_url: the Fluxo API as pods in the cluster reach it (``FLUXO_PUBLIC_URL``).
    image: the image of the starter container (it needs ``sh``, ``date`` and ``curl``).
    """

    def __init__(
        self,
        cronjobs: CronObjects | None,
        triggers: TriggerService,
        workflows: WorkflowStore,
        *,
        gateway_url: str,
        cron_workflows: CronObjects | None = None,
        image: str = DEFAULT_IMAGE,
    ) -> None:
        self.cronjobs = cronjobs
        self.cron_workflows = cron_workflows
        self.triggers = triggers
        self.workflows = workflows
        self.gateway_url = gateway_url
        self.image = image
        self._wake = asyncio.Event()

    def _backends(self) -> list[CronObjects]:
        return [b for b in (self.cronjobs, self.cron_workflows) if b is not None]

    async def aclose(self) -> None:
        for backend in self._backends():
            await backend.aclose()

    async def desired(self, row: TriggerRow) -> tuple[CronObjects, dict[str, Any]]:
        """Where the trigger's object lives and what it is now (suspended while held): a
        CronWorkflow for a workflow on Argo, else a CronJob.

        Raises:
            NotFoundError: the workflow is not applied.
            ConfigError: no Kubernetes API (or, for Argo, no Argo Server) to put it in.
        """
        cron = row.spec.get("cron") or {}
        suspend = await self.triggers.held(row) is not None
        applied = await self.workflows.get(row.account_id, row.workflow, None)
        engine = applied.workflow.spec.engine or self.workflows.default_engine
        if engine == "argo":
            if self.cron_workflows is None:
                raise ConfigError(
                    f"workflow {row.workflow!r} runs on Argo, whose CronWorkflows this Fluxo "
                    "cannot reach; set FLUXO_ARGO_URL and add argo to FLUXO_ENGINES",
                    setting="FLUXO_ARGO_URL",
                )
            return self.cron_workflows, _cron_workflow(
                applied.workflow, applied.version, row, suspend, self.gateway_url
            )
        if self.cronjobs is None:
            raise ConfigError(
                "spec.cron.scheduler is kubernetes but no Kubernetes API is configured; set "
                "FLUXO_KUBERNETES (in-cluster or kubeconfig)",
                setting="FLUXO_KUBERNETES",
            )
        document = cronjob_document(
            StarterCronJob(
                account=row.account_id,
                workflow=row.workflow,
                trigger=row.name,
                schedule=row.spec["schedule"],
                time_zone=cron.get("timeZone", "UTC"),
                concurrency=cron.get("concurrency", "allow"),
                catch_up="once" if cron.get("catchUp") == "once" else "skip",
                grace_s=int(GRACE_S),
                suspend=suspend,
                input=dict(row.spec.get("input") or {}),
                gateway_url=self.gateway_url,
                image=self.image,
            )
        )
        return self.cronjobs, document

    async def sync(self, row: TriggerRow) -> CronJobState:
        """Make the trigger's object match it; what the cluster then says.

        Raises:
            ConflictError: an object of its name that is not this trigger's, or written by
                someone else twice in a row.
            PermissionDeniedError, AuthError, KubernetesUnavailableError, ValidationError: as
                the API answered (the trigger is recorded ``failing`` with the message).
        """
        try:
            backend, wanted = await self.desired(row)
            state = await _converge(backend, wanted, row)
            # The workflow may have moved engines: its object on the other side goes.
            for other in self._backends():
                if other is not backend:
                    await _release(other, row.account_id, row.name)
        except FluxoError as exc:
            await self.triggers.store.record(
                row.account_id, row.name, health="failing", error=exc.message
            )
            raise
        await self.triggers.store.record(row.account_id, row.name, health="connected", error=None)
        return state

    async def release(self, account_id: str, name: str) -> None:
        """Delete the objects of trigger ``name`` of ``account_id`` that are this trigger's."""
        for backend in self._backends():
            await _release(backend, account_id, name)

    def wake(self) -> None:
        """Resync now (a trigger was paused or resumed)."""
        self._wake.set()

    async def run(
        self,
        stop: asyncio.Event,
        refresh: Callable[[str, str], Awaitable[object]],
        *,
        every_s: float,
    ) -> None:
        """Reconcile every Kubernetes-scheduled trigger again every ``every_s`` (or after
        :meth:`wake`) through ``refresh(account, name)``, which writes its status."""
        while not stop.is_set():
            self._wake.clear()
            try:
                rows = await self.triggers.store.list()
            except FluxoError as exc:
                log.warning("kubernetes cron resync: %s", exc.message)
                rows = []
            for row in rows:
                if not scheduled_by_kubernetes(row.spec):
                    continue
                try:
                    await refresh(row.account_id, row.name)
                except FluxoError as exc:  # deleted meanwhile, a database away: next round
                    log.warning("kubernetes cron %s/%s: %s", row.account_id, row.name, exc.message)
            waker = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(idle(stop, every_s))
            await asyncio.wait({waker, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            stopper.cancel()


async def _converge(backend: CronObjects, wanted: dict[str, Any], row: TriggerRow) -> CronJobState:
    name = wanted["metadata"]["name"]
    what = f"{backend.kind} {backend.namespace}/{name}"
    for attempt in (1, 2):
        live = await backend.get(name)
        if live is None:
            try:
                made = await backend.create(wanted)
            except ConflictError:
                if attempt == 2:
                    raise
                continue  # created meanwhile (another Fluxo): read it and compare
            return _state(backend, made, "created")
        _check_owner(live, row, what)
        if _annotation(live, SPEC_HASH) == wanted["metadata"]["annotations"][SPEC_HASH]:
            return _state(backend, live, "unchanged")
        try:
            replaced = await backend.replace(name, _with_version(wanted, live))
        except ConflictError:
            if attempt == 2:
                raise
            continue  # a stale resourceVersion: read again, compare again
        return _state(backend, replaced, "updated")
    raise AssertionError("the loop returns or raises")  # pragma: no cover


async def _release(backend: CronObjects, account_id: str, name: str) -> None:
    object_name = (
        cron_workflow_name(account_id, name)
        if backend.kind == "CronWorkflow"
        else cronjob_name(account_id, name)
    )
    live = await backend.get(object_name)
    if live is None:
        return
    if not _owned_by(live, account_id, name):
        log.warning(
            "%s %s/%s is not Fluxo's trigger %s/%s: left alone",
            backend.kind,
            backend.namespace,
            object_name,
            account_id,
            name,
        )
        return
    version = str((live.get("metadata") or {}).get("resourceVersion") or "")
    await backend.delete(object_name, version)


def cron_workflow_name(account_id: str, trigger: str) -> str:
    """The CronWorkflow of a trigger: named like its CronJob (the trigger, not the workflow,
    so a trigger that changes workflow keeps its object)."""
    return cronjob_name(account_id, trigger)


def _cron_workflow(
    workflow: Workflow, version: int, row: TriggerRow, suspend: bool, gateway_url: str
) -> dict[str, Any]:
    """The translator's CronWorkflow for the trigger, named, owned and hashed as a CronJob."""
    cron = row.spec.get("cron") or {}
    policies: dict[str, Literal["Allow", "Forbid", "Replace"]] = {
        "allow": "Allow",
        "forbid": "Forbid",
        "replace": "Replace",
    }
    policy = policies[cron.get("concurrency", "allow")]
    bundle = to_argo(
        workflow,
        gateway_url=gateway_url,
        version=version,
        crons=[
            CronTrigger(
                name=row.name,
                schedules=(row.spec["schedule"],),
                timezone=cron.get("timeZone", "UTC"),
                input=dict(row.spec.get("input") or {}),
                suspend=suspend,
                concurrency_policy=policy,
            )
        ],
    )
    document = copy.deepcopy(bundle.cron_workflows[0])
    spec = document["spec"]
    spec["suspend"] = suspend  # the translator leaves a false suspend out
    if cron.get("catchUp") != "once":
        spec["startingDeadlineSeconds"] = int(GRACE_S)
    meta = document["metadata"]
    meta["name"] = cron_workflow_name(row.account_id, row.name)
    meta["labels"] = {**meta.get("labels", {}), **MANAGED_BY}
    meta["annotations"] = {
        **meta.get("annotations", {}),
        OWNER_ACCOUNT: row.account_id,
        OWNER_TRIGGER: row.name,
        SPEC_HASH: spec_hash(spec),
    }
    return document


def _annotation(document: dict[str, Any], key: str) -> Any:
    return ((document.get("metadata") or {}).get("annotations") or {}).get(key)


def _owned_by(live: dict[str, Any], account_id: str, name: str) -> bool:
    labels = (live.get("metadata") or {}).get("labels") or {}
    managed = all(labels.get(k) == v for k, v in MANAGED_BY.items())
    return (
        managed
        and _annotation(live, OWNER_ACCOUNT) == account_id
        and _annotation(live, OWNER_TRIGGER) == name
    )


def _check_owner(live: dict[str, Any], row: TriggerRow, what: str) -> None:
    if not _owned_by(live, row.account_id, row.name):
        raise ConflictError(
            f"{what} exists and is not this trigger's (not managed by Fluxo for trigger "
            f"{row.name!r} of this account); Fluxo leaves it alone: delete or rename it in the "
            "cluster, or rename the trigger",
            kind="CronJob",
        )


def _with_version(wanted: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The wanted object as a replacement of ``live``: its resourceVersion (a stale one is
    refused with 409), and the labels and annotations others added kept."""
    meta = live.get("metadata") or {}
    return {
        **wanted,
        "metadata": {
            **wanted["metadata"],
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {**(meta.get("labels") or {}), **wanted["metadata"]["labels"]},
            "annotations": {
                **(meta.get("annotations") or {}),
                **wanted["metadata"]["annotations"],
            },
        },
    }


def _state(backend: CronObjects, live: dict[str, Any], action: str) -> CronJobState:
    status = live.get("status") or {}
    return CronJobState(
        kind=backend.kind,
        namespace=backend.namespace,
        name=str((live.get("metadata") or {}).get("name")),
        suspended=bool((live.get("spec") or {}).get("suspend")),
        # A CronJob says lastScheduleTime; a CronWorkflow lastScheduledTime.
        last_schedule_time=status.get("lastScheduleTime") or status.get("lastScheduledTime"),
        last_successful_time=status.get("lastSuccessfulTime"),
        active_jobs=len(status.get("active") or []),
        action=action,
    )
