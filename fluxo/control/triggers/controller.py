"""The Trigger controller: a Trigger resource becomes the trigger state the supervisor runs.

``admit`` refuses a cron schedule croniter cannot read (``spec.schedule``, located) and a mailbox
or broker on a host the platform's host policy refuses (:mod:`fluxo.control.hosts`). ``reconcile``
writes the trigger's row (a new or changed schedule gets its next fire time from now; otherwise
the stored one stays, so re-applying does not skip or repeat a slot) and reports ``Ready``:
``Scheduled`` (cron, with the next fire time), ``Listening`` (webhook, with its path), or
``False`` when the workflow is not applied, the webhook's secret is not set, or the type has no
source in this installation. ``release`` removes the row: the trigger stops firing.

A cron trigger with ``spec.cron.scheduler: kubernetes`` gets no next fire time (the built-in
scheduler passes it by); its CronJob (a CronWorkflow for a workflow on Argo) is made to match
it (:mod:`.kubernetes`) and reported as
``Ready: ScheduledByKubernetes`` with ``status.kubernetes``, or ``Ready: False`` with the API's
words; without a configured Kubernetes API, ``KubernetesNotConfigured``. Its CronJob goes with
the trigger, and when the trigger moves back to the built-in scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fluxo.control.hosts import refuse_internal_hosts
from fluxo.control.resources import Condition, Reconciled, rfc3339
from fluxo.control.triggers.cron import check_schedule, next_slot
from fluxo.control.triggers.kubernetes import KubernetesCron, scheduled_by_kubernetes
from fluxo.control.triggers.service import TriggerService
from fluxo_core.errors import ConfigError, FluxoError, NotFoundError
from fluxo_core.ir.resources import ValidResource
from fluxo_core.storage import Principal
from fluxo_core.storage.resources import ResourceRow
from fluxo_core.storage.workflows import WorkflowStore

if TYPE_CHECKING:
    from services.http.policy import HostPolicy

__all__ = ["TriggerController", "hook_path"]

log = logging.getLogger(__name__)


def hook_path(account_id: str, name: str) -> str:
    """Where a webhook trigger listens."""
    return f"/hooks/{account_id}/{name}"


class TriggerController:
    def __init__(
        self,
        triggers: TriggerService,
        workflows: WorkflowStore,
        *,
        policy: HostPolicy,
        source_types: Callable[[], set[str]] = set,
        on_change: Callable[[], None] = lambda: None,
        on_release: Callable[[str, str], Awaitable[object]] | None = None,
        kubernetes: KubernetesCron | None = None,
    ) -> None:
        self.triggers = triggers
        self.workflows = workflows
        self.policy = policy  # which hosts a mailbox or a broker may be on
        self.source_types = source_types
        self.on_change = on_change
        self.on_release = on_release  # what else goes with a deleted trigger (its attachments)
        self.kubernetes = kubernetes  # None: no Kubernetes API configured

    async def admit(self, resource: ValidResource, principal: Principal) -> None:
        if resource.spec["type"] == "cron":
            check_schedule(resource.spec["schedule"])
        await refuse_internal_hosts(self.policy, resource.spec)

    async def reconcile(self, resource: ResourceRow) -> Reconciled:
        spec = resource.spec
        store = self.triggers.store
        before = await store.find(resource.account_id, resource.name)
        next_at: float | None = None
        reschedule = False
        on_kubernetes = scheduled_by_kubernetes(spec)
        if spec["type"] == "cron":
            zone = (spec.get("cron") or {}).get("timeZone", "UTC")
            if not on_kubernetes:
                next_at = next_slot(spec["schedule"], zone, self.triggers.clock.time())
            reschedule = before is None or on_kubernetes or _timing(before.spec) != _timing(spec)
        row = await store.upsert(
            resource.account_id,
            resource.name,
            workflow=spec["workflow"],
            type=spec["type"],
            spec=spec,
            generation=resource.generation,
            enabled=spec.get("enabled", True),
            next_fire_at=next_at,
            reschedule=reschedule,
        )
        self.triggers.forget(resource.account_id, resource.name)
        if self.on_release is not None:
            await self.on_release(resource.account_id, resource.name)
        self.on_change()
        problems = await self._problems(resource)
        details: dict[str, Any] = {"health": row.health}
        if row.last_error is not None:
            details["lastError"] = row.last_error
        if row.type == "webhook":
            details["webhookPath"] = hook_path(row.account_id, row.name)
        if row.type == "sms":
            details["webhookPath"] = hook_path(row.account_id, row.name) + "/sms"
        if row.next_fire_at is not None:
            details["nextFireTime"] = rfc3339(row.next_fire_at)
        if before is not None and scheduled_by_kubernetes(before.spec) and not on_kubernetes:
            await self._release_kubernetes(resource.account_id, resource.name)
        if problems:
            reason, message = problems
            return Reconciled([Condition("Ready", "False", reason, message)], details)
        if on_kubernetes:
            return await self._on_kubernetes(resource, details)
        if not row.enabled:
            message = "disabled (spec.enabled: false): it does not fire"
            return Reconciled([Condition("Ready", "True", "Disabled", message)], details)
        if row.type == "cron":
            message = f"next fire at {details['nextFireTime']}"
            return Reconciled([Condition("Ready", "True", "Scheduled", message)], details)
        if row.type in ("webhook", "sms"):
            message = f"listening on POST {details['webhookPath']}"
            return Reconciled([Condition("Ready", "True", "Listening", message)], details)
        return Reconciled([Condition("Ready", "True", "Watching", "its source runs")], details)

    async def _problems(self, resource: ResourceRow) -> tuple[str, str] | None:
        spec = resource.spec
        try:
            await self.workflows.get(resource.account_id, spec["workflow"], None)
        except NotFoundError:
            return (
                "WorkflowNotFound",
                f"workflow {spec['workflow']!r} is not applied in this account; apply it, then "
                "apply this trigger again (until then a firing fails)",
            )
        if spec["type"] == "webhook":
            name = spec["webhook"]["secret"]
            secrets = self.triggers.secrets
            known = (
                [] if secrets is None else [s.name for s in await secrets.list(resource.account_id)]
            )
            if name not in known:
                return (
                    "SecretMissing",
                    f"the secret {name!r} (spec.webhook.secret) is not set in this account; set "
                    f"it with fluxo secret set {name}, then apply again (until then every "
                    "request is refused)",
                )
        pushed = ("cron", "webhook", "sms")  # served by the scheduler or the API, no source
        if spec["type"] not in pushed and spec["type"] not in self.source_types():
            return (
                "NoSource",
                f"this installation has no {spec['type']} source yet: the trigger is stored "
                "and does not fire",
            )
        return None

    async def _on_kubernetes(self, resource: ResourceRow, details: dict[str, Any]) -> Reconciled:
        if self.kubernetes is None:
            message = (
                "spec.cron.scheduler is kubernetes but this Fluxo has no Kubernetes API "
                "configured; set FLUXO_KUBERNETES (in-cluster or kubeconfig), or use "
                "scheduler: fluxo (until then the trigger does not fire)"
            )
            return Reconciled(
                [Condition("Ready", "False", "KubernetesNotConfigured", message)], details
            )
        row = await self.triggers.store.get(resource.account_id, resource.name)
        try:
            state = await self.kubernetes.sync(row)
        except FluxoError as exc:
            details = {**details, "health": "failing", "lastError": exc.message}
            reason = (
                "KubernetesNotConfigured" if isinstance(exc, ConfigError) else "KubernetesError"
            )
            return Reconciled([Condition("Ready", "False", reason, exc.message)], details)
        details = {**details, "health": "connected", "kubernetes": state.to_json()}
        details.pop("lastError", None)
        where = f"{state.kind} {state.namespace}/{state.name}"
        held = await self.triggers.held(row)
        if state.suspended:
            message = f"{where} is suspended: {held or 'the trigger is held'}"
        else:
            last = state.last_schedule_time or "not yet"
            message = f"Kubernetes schedules it ({where}; last scheduled: {last})"
        return Reconciled([Condition("Ready", "True", "ScheduledByKubernetes", message)], details)

    async def release_deleted(self, account_id: str, name: str) -> None:
        """Finish what :meth:`release` could not for a deleted trigger: its CronJob (raises as
        the API answers), then its row."""
        await self._release_kubernetes(account_id, name)
        await self.triggers.store.delete(account_id, name)

    async def _release_kubernetes(self, account_id: str, name: str) -> None:
        if self.kubernetes is not None:
            await self.kubernetes.release(account_id, name)

    async def release(self, resource: ResourceRow) -> None:
        if scheduled_by_kubernetes(resource.spec):
            try:
                await self._release_kubernetes(resource.account_id, resource.name)
            except FluxoError as exc:
                # The trigger's row stays behind as a mark: the resync finds it without its
                # resource and deletes the CronJob then (:meth:`release_deleted`).
                log.warning(
                    "trigger %s/%s: its CronJob is not deleted yet: %s",
                    resource.account_id,
                    resource.name,
                    exc.message,
                )
                self.on_change()
                return
        await self.triggers.store.delete(resource.account_id, resource.name)
        self.triggers.forget(resource.account_id, resource.name)
        if self.on_release is not None:
            await self.on_release(resource.account_id, resource.name)
        self.on_change()


def _timing(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What decides a cron trigger's slots: a change of it reschedules from now."""
    cron = spec.get("cron") or {}
    return (spec.get("schedule"), cron.get("timeZone", "UTC"), cron.get("scheduler", "fluxo"))
