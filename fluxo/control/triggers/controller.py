"""The Trigger controller: a Trigger resource becomes the trigger state the supervisor runs.

``admit`` refuses a cron schedule croniter cannot read (``spec.schedule``, located) and a mailbox
or broker on a host the platform's host policy refuses (:mod:`fluxo.control.hosts`). ``reconcile``
writes the trigger's row (a new or changed schedule gets its next fire time from now; otherwise
the stored one stays, so re-applying does not skip or repeat a slot) and reports ``Ready``:
``Scheduled`` (cron, with the next fire time), ``Listening`` (webhook, with its path), or
``False`` when the workflow is not applied, the webhook's secret is not set, or the type has no
source in this installation. ``release`` removes the row: the trigger stops firing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fluxo.control.hosts import refuse_internal_hosts
from fluxo.control.resources import Condition, Reconciled, rfc3339
from fluxo.control.triggers.cron import check_schedule, next_slot
from fluxo.control.triggers.service import TriggerService
from fluxo_core.errors import NotFoundError
from fluxo_core.ir.resources import ValidResource
from fluxo_core.storage import Principal
from fluxo_core.storage.resources import ResourceRow
from fluxo_core.storage.workflows import WorkflowStore

if TYPE_CHECKING:
    from services.http.policy import HostPolicy

__all__ = ["TriggerController", "hook_path"]


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
    ) -> None:
        self.triggers = triggers
        self.workflows = workflows
        self.policy = policy  # which hosts a mailbox or a broker may be on
        self.source_types = source_types
        self.on_change = on_change
        self.on_release = on_release  # what else goes with a deleted trigger (its attachments)

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
        if spec["type"] == "cron":
            zone = (spec.get("cron") or {}).get("timeZone", "UTC")
            next_at = next_slot(spec["schedule"], zone, self.triggers.clock.time())
            reschedule = before is None or _timing(before.spec) != _timing(spec)
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
        if problems:
            reason, message = problems
            return Reconciled([Condition("Ready", "False", reason, message)], details)
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

    async def release(self, resource: ResourceRow) -> None:
        await self.triggers.store.delete(resource.account_id, resource.name)
        self.triggers.forget(resource.account_id, resource.name)
        if self.on_release is not None:
            await self.on_release(resource.account_id, resource.name)
        self.on_change()


def _timing(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What decides a cron trigger's slots: a change of it reschedules from now."""
    return (spec.get("schedule"), (spec.get("cron") or {}).get("timeZone", "UTC"))
