"""Cron triggers that Kubernetes schedules (``spec.cron.scheduler: kubernetes``).

The built-in scheduler fires none of them (their ``next_fire_at`` stays empty). Instead
:class:`KubernetesCron` makes a CronJob in the configured namespace match each one
(:mod:`fluxo.control.kubernetes.cronjob` builds it):

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
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

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
)
from fluxo.control.triggers.cron import GRACE_S, idle
from fluxo.control.triggers.service import TriggerService
from fluxo_core.errors import ConflictError, FluxoError
from fluxo_core.storage.triggers import TriggerRow

__all__ = ["CronJobState", "KubernetesCron", "scheduled_by_kubernetes"]

log = logging.getLogger(__name__)

_CRONJOBS: Final = "/apis/batch/v1/namespaces/{namespace}/cronjobs"


def scheduled_by_kubernetes(spec: dict[str, Any]) -> bool:
    """Whether a trigger's spec asks Kubernetes to keep its time."""
    return spec.get("type") == "cron" and (spec.get("cron") or {}).get("scheduler") == (
        "kubernetes"
    )


@dataclass(frozen=True)
class CronJobState:
    """What the cluster says about a trigger's CronJob (``status.kubernetes``)."""

    namespace: str
    name: str
    suspended: bool
    last_schedule_time: str | None
    last_successful_time: str | None
    active_jobs: int
    action: str  # created, updated, unchanged

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "CronJob",
            "namespace": self.namespace,
            "name": self.name,
            "suspended": self.suspended,
            "lastScheduleTime": self.last_schedule_time,
            "lastSuccessfulTime": self.last_successful_time,
            "activeJobs": self.active_jobs,
        }


class KubernetesCron:
    """Args:
    client: the Kubernetes API (its namespace is where the CronJobs live).
    triggers: whether a trigger is held; where its health is recorded.
    gateway_url: the Fluxo API as pods in the cluster reach it (``FLUXO_PUBLIC_URL``).
    image: the image of the starter container (it needs ``sh``, ``date`` and ``curl``).
    """

    def __init__(
        self,
        client: KubernetesClient,
        triggers: TriggerService,
        *,
        gateway_url: str,
        image: str = DEFAULT_IMAGE,
    ) -> None:
        self.client = client
        self.triggers = triggers
        self.gateway_url = gateway_url
        self.image = image
        self._wake = asyncio.Event()

    @property
    def namespace(self) -> str:
        return self.client.namespace

    def _path(self, name: str | None = None) -> str:
        base = _CRONJOBS.format(namespace=self.namespace)
        return base if name is None else f"{base}/{name}"

    async def desired(self, row: TriggerRow) -> dict[str, Any]:
        """The CronJob ``row`` wants now (suspended while it is held)."""
        cron = row.spec.get("cron") or {}
        held = await self.triggers.held(row)
        return cronjob_document(
            StarterCronJob(
                account=row.account_id,
                workflow=row.workflow,
                trigger=row.name,
                schedule=row.spec["schedule"],
                time_zone=cron.get("timeZone", "UTC"),
                concurrency=cron.get("concurrency", "allow"),
                catch_up="once" if cron.get("catchUp") == "once" else "skip",
                grace_s=int(GRACE_S),
                suspend=held is not None,
                input=dict(row.spec.get("input") or {}),
                gateway_url=self.gateway_url,
                image=self.image,
            )
        )

    async def sync(self, row: TriggerRow) -> CronJobState:
        """Make the trigger's CronJob match it; what the cluster then says.

        Raises:
            ConflictError: an object of its name that is not this trigger's, or written by
                someone else twice in a row.
            PermissionDeniedError, AuthError, KubernetesUnavailableError, ValidationError: as
                the API answered (the trigger is recorded ``failing`` with the message).
        """
        try:
            state = await self._sync(row)
        except FluxoError as exc:
            await self.triggers.store.record(
                row.account_id, row.name, health="failing", error=exc.message
            )
            raise
        await self.triggers.store.record(row.account_id, row.name, health="connected", error=None)
        return state

    async def _sync(self, row: TriggerRow) -> CronJobState:
        wanted = await self.desired(row)
        name = wanted["metadata"]["name"]
        what = f"CronJob {self.namespace}/{name}"
        for attempt in (1, 2):
            live = await self.client.get(self._path(name), f"get {what}")
            if live is None:
                try:
                    made = await self.client.create(self._path(), wanted, f"create {what}")
                except ConflictError:
                    if attempt == 2:
                        raise
                    continue  # created meanwhile (another Fluxo): read it and compare
                return _state(made, self.namespace, "created")
            _check_owner(live, row, what)
            if _annotation(live, SPEC_HASH) == wanted["metadata"]["annotations"][SPEC_HASH]:
                return _state(live, self.namespace, "unchanged")
            body = _with_version(wanted, live)
            try:
                replaced = await self.client.replace(self._path(name), body, f"update {what}")
            except ConflictError:
                if attempt == 2:
                    raise
                continue  # a stale resourceVersion: read again, compare again
            return _state(replaced, self.namespace, "updated")
        raise AssertionError("the loop returns or raises")  # pragma: no cover

    async def release(self, account_id: str, name: str) -> None:
        """Delete the CronJob of trigger ``name`` of ``account_id``, if it is this trigger's."""
        cronjob = cronjob_name(account_id, name)
        what = f"CronJob {self.namespace}/{cronjob}"
        live = await self.client.get(self._path(cronjob), f"get {what}")
        if live is None:
            return
        if not _owned_by(live, account_id, name):
            log.warning("%s is not Fluxo's trigger %s/%s: left alone", what, account_id, name)
            return
        version = str((live.get("metadata") or {}).get("resourceVersion") or "")
        await self.client.delete(self._path(cronjob), f"delete {what}", resource_version=version)

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


def _state(cronjob: dict[str, Any], namespace: str, action: str) -> CronJobState:
    status = cronjob.get("status") or {}
    return CronJobState(
        namespace=namespace,
        name=str((cronjob.get("metadata") or {}).get("name")),
        suspended=bool((cronjob.get("spec") or {}).get("suspend")),
        last_schedule_time=status.get("lastScheduleTime"),
        last_successful_time=status.get("lastSuccessfulTime"),
        active_jobs=len(status.get("active") or []),
        action=action,
    )
