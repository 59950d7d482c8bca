"""Declarative resources: apply, get, list and delete documents; controllers reconcile them.

``apply`` checks a document (:func:`~fluxo_core.ir.resources.validate_resource`: every problem
located), lets the kind's controller refuse it before anything is stored (:meth:`Controller.admit`),
stores it (:class:`~fluxo_core.storage.resources.ResourceStore`: a stale ``resourceVersion`` is a
409), then asks the controller to make the platform match it (:meth:`Controller.reconcile`) and
writes the conditions it reports as the resource's ``status``. ``status`` is the platform's:
in an applied document it is ignored (so ``fluxo get -o yaml`` output applies again as is).

Where resources live: each account's own, except the platform-wide kinds. A **Service**'s terms
(price, limits) apply to every account, so Service resources live in the platform admin's
account: only its tokens write them, every account reads them. An **Account** resource lives in
the account it describes: only the platform admin writes (and lists) them; an account's token
reads its own and no other (404).

Kinds without a controller in this installation are validated and stored with the condition
``Accepted=False`` reason ``NoController``: :class:`ControllerRegistry` is where the platform
registers one per kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from fluxo.control.auth import acts_for_platform, require
from fluxo.control.blocks import BlockService
from fluxo.control.jobs import JobService, take_source
from fluxo.control.quotas import parse_quota_spec
from fluxo.control.workflow_services import WorkflowServices, published_from, published_of
from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import (
    ConfigError,
    EngineUnavailableError,
    FluxoError,
    IRValidationError,
    NotFoundError,
    PermissionDeniedError,
    UnsupportedFeatureError,
    ValidationError,
)
from fluxo_core.ir.resources import KINDS, KindInfo, ValidResource, kind_info, validate_resource
from fluxo_core.ir.validation import validate_workflow
from fluxo_core.storage import (
    AccountStore,
    Principal,
    Role,
    ServiceStore,
    ServiceTermsStore,
    TermsRow,
)
from fluxo_core.storage.accounts import PLATFORM_ACCOUNT
from fluxo_core.storage.blocks import BlockRow
from fluxo_core.storage.quotas import QuotaSpec, QuotaStore
from fluxo_core.storage.resources import (
    API_VERSION,
    ApplyOutcome,
    ResourceRow,
    ResourceStore,
    ResourceWrite,
)
from fluxo_core.storage.users import UserStore
from service_runtime.terms import ServiceTerms

__all__ = [
    "AccountController",
    "AppliedResource",
    "Condition",
    "Controller",
    "ControllerRegistry",
    "Reconciled",
    "ResourceService",
    "ServiceController",
    "WorkflowController",
    "default_controllers",
    "resource_document",
    "rfc3339",
]

MAX_DOCUMENTS = 500
CONTROLLER_USER = "fluxo-controller"


@dataclass(frozen=True)
class Condition:
    """One observation of a controller: ``Ready``/``Accepted`` is ``True``/``False`` and why.

    The service stamps ``lastTransitionTime`` (kept while ``status`` stays the same) and
    ``observedGeneration`` (the spec generation it is about).
    """

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Reconciled:
    """What a reconcile reports: its conditions, and facts for ``status`` (``version: 3``)."""

    conditions: Sequence[Condition]
    details: dict[str, Any] = field(default_factory=dict)


class Controller(Protocol):
    """Makes the platform match the resources of one kind.

    Register one per kind with :meth:`ControllerRegistry.register`. ``admit`` runs before the
    resource is stored and may refuse it (raise a :class:`~fluxo_core.errors.FluxoError`: a
    ``ValidationError`` with located problems is a 422); ``reconcile`` runs after every change
    and reports conditions, which become the resource's ``status`` (a controller that fails
    reports ``Ready=False`` with the reason; an exception is reported the same way);
    ``release`` runs after a delete.
    """

    async def admit(self, resource: ValidResource, principal: Principal) -> None: ...

    async def reconcile(self, resource: ResourceRow) -> Reconciled: ...

    async def release(self, resource: ResourceRow) -> None: ...


class ControllerRegistry:
    """The controller of each kind; a kind without one is stored and reported ``NoController``."""

    def __init__(self) -> None:
        self._controllers: dict[str, Controller] = {}

    def register(self, kind: str, controller: Controller) -> None:
        info = kind_info(kind)
        self._controllers[info.kind] = controller

    def get(self, kind: str) -> Controller | None:
        return self._controllers.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._controllers)


@dataclass(frozen=True)
class AppliedResource:
    """One applied document: the resource as stored (with its status) and what happened."""

    document: dict[str, Any]
    outcome: ApplyOutcome
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        meta = self.document["metadata"]
        return {
            "kind": self.document["kind"],
            "name": meta["name"],
            "outcome": self.outcome,
            "warnings": list(self.warnings),
            "resource": self.document,
        }


class ResourceService:
    """Resources of every kind, scoped to the caller's account (see the module docstring).

    Args:
        admin_account: the platform admin's account: its tokens write the platform-wide kinds.
    """

    def __init__(
        self,
        store: ResourceStore,
        controllers: ControllerRegistry,
        *,
        admin_account: str = "default",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.controllers = controllers
        self.admin_account = admin_account
        self.clock = clock

    # -- who sees what --------------------------------------------------------------------------

    def is_admin(self, principal: Principal) -> bool:
        # The platform's own account, and in it an admin: a member or viewer of that account
        # does not set platform-wide prices.
        return principal.account_id == self.admin_account and acts_for_platform(principal)

    def _scope(self, info: KindInfo, name: str, principal: Principal) -> str:
        """The account whose resource ``name`` of kind ``info`` the caller means."""
        if info.kind == "Account":
            if not self.is_admin(principal) and name != principal.account_id:
                raise _not_found(info, name, principal)
            return name
        if info.platform:
            return self.admin_account
        return principal.account_id

    def _check_writer(self, info: KindInfo, principal: Principal) -> None:
        if info.platform and not self.is_admin(principal):
            raise PermissionDeniedError(
                f"{info.kind} resources are platform-wide: only the platform admin (a token of "
                f"account {self.admin_account!r}) applies or deletes them",
                kind=info.kind,
            )

    # -- apply ----------------------------------------------------------------------------------

    async def apply(self, principal: Principal, data: Any) -> AppliedResource:
        """Apply one document (create, update, or nothing when it is the same)."""
        (applied,) = await self.apply_all(principal, [data])
        return applied

    async def apply_all(
        self, principal: Principal, documents: Sequence[Any]
    ) -> list[AppliedResource]:
        """Apply several documents in order. All are checked first (every problem of every
        document, located as ``documents[2].spec...``); none is stored if one is invalid.

        Raises:
            ValidationError: an invalid document (422), or two of the same kind and name.
            PermissionDeniedError: a platform-wide kind from an account that is not the admin.
            ConflictError: a stale ``metadata.resourceVersion`` (409); the documents before it
                stay applied, the result names them in the message.
        """
        if len(documents) > MAX_DOCUMENTS:
            raise ValidationError(
                f"{len(documents)} documents in one apply; send at most {MAX_DOCUMENTS} at a time",
                problems=[("documents", f"more than {MAX_DOCUMENTS}")],
            )
        several = len(documents) > 1
        checked: list[ValidResource] = []
        problems: list[tuple[str, str]] = []
        seen: dict[tuple[str, str], int] = {}
        for n, data in enumerate(documents):
            where = f"documents[{n}]" if several else ""
            try:
                # In a thread: a large workflow takes a while to validate.
                valid = await asyncio.to_thread(validate_resource, data, where=where)
                self._check_writer(valid.kind, principal)
                scope = self._scope(valid.kind, valid.name, principal)
                if valid.account is not None and valid.account != scope:
                    raise ValidationError(
                        f"metadata.account is {valid.account!r} but this {valid.kind.kind} "
                        f"belongs to account {scope!r}; remove metadata.account or use that "
                        "account's token",
                        problems=[(_at(where, "metadata.account"), "another account")],
                    )
                controller = self.controllers.get(valid.kind.kind)
                if controller is not None:
                    await _admitted(controller, valid, principal, where)
            except ValidationError as exc:
                if not several:
                    raise  # as it is: its own message and type (IRValidationError)
                problems.extend(_located(exc, where))
                continue
            key = (valid.kind.kind, valid.name)
            if key in seen:
                problems.append(
                    (
                        where or "<root>",
                        f"{valid.kind.kind} {valid.name!r} again (first in documents[{seen[key]}])",
                    )
                )
            seen[key] = n
            checked.append(valid)
        if problems:
            raise ValidationError(
                "nothing was applied: fix the problems listed below", problems=problems
            )
        results: list[AppliedResource] = []
        for valid in checked:
            try:
                results.append(await self._apply_one(principal, valid))
            except FluxoError as exc:
                if results:
                    done = ", ".join(
                        f"{r.document['kind'].lower()}/{r.document['metadata']['name']}"
                        for r in results
                    )
                    exc.message = f"{exc.message} (already applied: {done})"
                    exc.args = (exc.message,)
                raise
        return results

    async def _apply_one(self, principal: Principal, valid: ValidResource) -> AppliedResource:
        info = valid.kind
        account = self._scope(info, valid.name, principal)
        write = ResourceWrite(
            kind=info.kind,
            name=valid.name,
            spec=valid.spec,
            labels=valid.labels,
            resource_version=valid.resource_version,
        )
        row, outcome = await self.store.apply(account, write)
        if outcome != "unchanged" or not _settled(row):
            row = await self._reconcile(row)
        warnings = ("status is written by the platform: the document's status was ignored",)
        return AppliedResource(
            resource_document(row), outcome, warnings if valid.status_ignored else ()
        )

    async def refresh(self, account_id: str, kind: str, name: str) -> dict[str, Any]:
        """Reconcile a stored resource again (its world may have moved: a CronJob in a
        cluster); its document with the new status.

        Raises:
            NotFoundError: deleted meanwhile.
        """
        row = await self._reconcile(await self.store.get(account_id, kind, name))
        return resource_document(row)

    async def _reconcile(self, row: ResourceRow) -> ResourceRow:
        controller = self.controllers.get(row.kind)
        if controller is None:
            report = Reconciled(
                [
                    Condition(
                        "Accepted",
                        "False",
                        "NoController",
                        f"stored and valid; no controller acts on {row.kind} resources in this "
                        "installation yet",
                    )
                ]
            )
        else:
            try:
                report = await controller.reconcile(row)
            except FluxoError as exc:
                report = Reconciled([Condition("Ready", "False", _reason(exc), exc.message)])
        return await self.store.set_status(row, self._status(row, report))

    def _status(self, row: ResourceRow, report: Reconciled) -> dict[str, Any]:
        now = rfc3339(self.clock.time())
        before = {c.get("type"): c for c in row.status.get("conditions", [])}
        conditions = []
        for c in report.conditions:
            old = before.get(c.type)
            same = old is not None and old.get("status") == c.status
            conditions.append(
                {
                    "type": c.type,
                    "status": c.status,
                    "reason": c.reason,
                    "message": c.message,
                    "lastTransitionTime": old["lastTransitionTime"] if same and old else now,
                    "observedGeneration": row.generation,
                }
            )
        return {**report.details, "observedGeneration": row.generation, "conditions": conditions}

    # -- read and delete ----------------------------------------------------------------------

    async def get(self, principal: Principal, kind: str, name: str) -> dict[str, Any]:
        info = kind_info(kind)
        account = self._scope(info, name, principal)
        try:
            return resource_document(await self.store.get(account, info.kind, name))
        except NotFoundError:
            raise _not_found(info, name, principal) from None

    async def list(self, principal: Principal, kind: str) -> list[dict[str, Any]]:
        info = kind_info(kind)
        if info.kind == "Account":
            scope = None if self.is_admin(principal) else principal.account_id
            rows = await self.store.list(info.kind, scope)
            if scope is not None:
                rows = [r for r in rows if r.account_id == scope]
        else:
            rows = await self.store.list(info.kind, self._scope(info, "", principal))
        return [resource_document(r) for r in rows]

    async def delete(self, principal: Principal, kind: str, name: str) -> dict[str, Any]:
        info = kind_info(kind)
        account = self._scope(info, name, principal)
        self._check_writer(info, principal)
        try:
            row = await self.store.delete(account, info.kind, name)
        except NotFoundError:
            raise _not_found(info, name, principal) from None
        controller = self.controllers.get(info.kind)
        if controller is not None:
            await controller.release(row)
        return resource_document(row)


def _settled(row: ResourceRow) -> bool:
    """Whether the stored status is about this spec and the platform matches it: an unchanged
    apply of a resource whose last reconcile failed tries again."""
    if row.status.get("observedGeneration") != row.generation:
        return False
    return all(
        c.get("status") == "True" or c.get("reason") == "NoController"
        for c in row.status.get("conditions", [])
    )


def _at(where: str, path: str) -> str:
    return f"{where}.{path}" if where else path


def _reason(exc: FluxoError) -> str:
    return type(exc).__name__


async def _admitted(
    controller: Controller, valid: ValidResource, principal: Principal, where: str
) -> None:
    """The controller's admission, its problems located from the document list's root (a
    controller locates them in its own document: ``spec.limit``)."""
    try:
        await controller.admit(valid, principal)
    except ValidationError as exc:
        if not where or type(exc) is not ValidationError:
            raise
        located = [(_at(where, loc), msg) for loc, msg in exc.problems]
        raise ValidationError(exc.message.split("\n")[0], problems=located) from None


def _located(exc: ValidationError, where: str) -> list[tuple[str, str]]:
    if exc.problems:
        return list(exc.problems)
    return [(where or "<root>", exc.message.split("\n")[0])]


def _not_found(info: KindInfo, name: str, principal: Principal) -> NotFoundError:
    return NotFoundError(
        f"no {info.kind} {name!r} in account {principal.account_id!r}; list them with "
        f"fluxo get {info.plural}",
        kind=info.kind,
        name=name,
    )


def rfc3339(epoch: float) -> str:
    """``2027-01-15T08:00:00Z``: UTC, whole seconds, as Kubernetes writes times."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resource_document(row: ResourceRow) -> dict[str, Any]:
    """A stored resource as its document: what ``get -o yaml`` prints and ``apply`` takes back."""
    metadata: dict[str, Any] = {"name": row.name}
    if row.labels:
        metadata["labels"] = row.labels
    if row.kind == "Account" or KINDS[row.kind].platform is False:
        metadata["account"] = row.account_id
    metadata.update(
        {
            "uid": row.uid,
            "resourceVersion": str(row.resource_version),
            "generation": row.generation,
            "creationTimestamp": rfc3339(row.created_at),
        }
    )
    return {
        "apiVersion": row.api_version or API_VERSION,
        "kind": row.kind,
        "metadata": metadata,
        "spec": row.spec,
        "status": row.status,
    }


# --- controllers -------------------------------------------------------------------------------


class WorkflowController:
    """Workflow resources are the workflow IR: admitted by the IR's checks (with the published
    services), reconciled by applying them as a workflow version (:meth:`JobService.apply`:
    deployed to its engine). ``status.version`` is the version the spec became. A delete stops
    managing the workflow; its stored versions stay, for the jobs that ran them."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        # Source flows sent inline (spec.source.flow), by digest, from admission to the
        # reconcile that stores them with the version: the resource keeps only the digest.
        self._flows: dict[str, bytes] = {}

    async def admit(self, resource: ValidResource, principal: Principal) -> None:
        published = await self.jobs.runtime.catalog.list()
        known = [s.name for s in published] + [f"{s.name}@{s.version}" for s in published]
        document = _workflow_document(resource.name, resource.labels, resource.spec)
        workflow = await asyncio.to_thread(validate_workflow, document, known_services=known)
        stored, flow = take_source(workflow)
        if flow is not None and stored.spec.source is not None:
            # The flow (up to the flow import limit) is not part of the resource: its digest is.
            resource.spec["source"] = stored.spec.source.model_dump(mode="json", exclude_none=True)
            while len(self._flows) >= _PENDING_FLOWS:  # admitted, never reconciled (refused)
                self._flows.pop(next(iter(self._flows)))
            self._flows[str(stored.spec.source.sha256)] = flow

    async def reconcile(self, resource: ResourceRow) -> Reconciled:
        document = _workflow_document(resource.name, resource.labels, resource.spec)
        principal = Principal(account_id=resource.account_id, user_id=CONTROLLER_USER)
        source = resource.spec.get("source")
        digest = source.get("sha256") if isinstance(source, dict) else None
        # Kept until a version stores it: the next workflow of the same file may need it.
        flow = self._flows.get(digest) if isinstance(digest, str) else None
        try:
            applied = await self.jobs.apply(document, principal, source=flow)
            if isinstance(digest, str):
                self._flows.pop(digest, None)
        except IRValidationError as exc:
            problems = "; ".join(f"{where}: {what}" for where, what in exc.problems)
            return Reconciled([Condition("Ready", "False", "Invalid", problems or exc.message)])
        except (ConfigError, EngineUnavailableError) as exc:
            return Reconciled([Condition("Ready", "False", "EngineUnavailable", exc.message)])
        except UnsupportedFeatureError as exc:
            return Reconciled([Condition("Ready", "False", "Unsupported", exc.message)])
        engine = applied.workflow.spec.engine or self.jobs.workflows.default_engine
        message = f"version {applied.version} on engine {engine}"
        return Reconciled(
            [Condition("Ready", "True", "Applied", message)],
            {"version": applied.version, "engine": engine},
        )

    async def release(self, resource: ResourceRow) -> None:
        return None


def _workflow_document(name: str, labels: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": "Workflow", "metadata": metadata, "spec": spec}


_PENDING_FLOWS = 8
_MICROS = Decimal(1_000_000)


class ServiceController:
    """Service resources set the terms of a published service (price, limits), on one version
    or every published one, over those the service's code declares.

    The terms go to their own table (:class:`~fluxo_core.storage.ServiceTermsStore`), never to
    the ``services`` row a process publishes at start, so a restart or a new deployment of the
    service keeps them. They are enforced where calls run: the workers price each call with
    them (the usage ledger), time a handler run out and retry a failure as they say, within
    about a second of the apply (:mod:`service_runtime.terms`); ``fluxo services`` shows them,
    marked ``applied``. Reported ``Ready=True`` reason ``Enforced``; a service (or version)
    that is not published yet is ``Ready=False`` reason ``NotPublished``, with no terms applied
    (those the resource set before are removed): apply again once it is. A delete removes the
    terms: the code's hold again."""

    def __init__(
        self,
        services: ServiceStore,
        terms: ServiceTermsStore,
        cache: ServiceTerms,
        workflow_services: WorkflowServices | None = None,
    ) -> None:
        self.services = services
        self.terms = terms
        self.cache = cache
        # Publishes the workflow of a Service with spec.workflow (a workflow service).
        self.workflow_services = workflow_services

    async def admit(self, resource: ValidResource, principal: Principal) -> None:
        published = published_from(resource.name, resource.spec, principal.account_id)
        if published is None:
            return
        if self.workflow_services is None:
            raise ValidationError(
                "spec.workflow: this installation runs no workflow services; apply the "
                "Service to the platform's server (fluxo up)",
                problems=[("spec.workflow", "not supported here")],
            )
        await self.workflow_services.check(published)

    async def reconcile(self, resource: ResourceRow) -> Reconciled:
        spec = resource.spec
        published = published_of(resource, resource.account_id)
        if published is not None and self.workflow_services is not None:
            await self.workflow_services.publish(published)
        version = spec.get("version")
        versions = await self.services.versions(resource.name, version)
        if not versions:
            # Terms this resource set before (on a version it no longer names) go: the
            # resource is the only say the platform has on this service's terms.
            if await self.terms.remove(resource.name):
                self.cache.invalidate()
            which = f"{resource.name}@{version}" if version else resource.name
            return Reconciled(
                [
                    Condition(
                        "Ready",
                        "False",
                        "NotPublished",
                        f"no service {which!r} is published; start the process that runs it, "
                        "then apply again",
                    )
                ]
            )
        await self.terms.replace(resource.name, _terms_row(resource))
        self.cache.invalidate()  # this process's catalog and workers: at once
        listed = ", ".join(f"{resource.name}@{v}" for v in versions)
        return Reconciled(
            [
                Condition(
                    "Ready",
                    "True",
                    "Enforced",
                    f"calls of {listed} are billed, timed out and retried by these terms, not "
                    "by those the code declares (on every worker within a second)",
                ),
            ],
            {"versions": versions},
        )

    async def release(self, resource: ResourceRow) -> None:
        await self.terms.remove(resource.name)
        self.cache.invalidate()
        if self.workflow_services is not None:
            await self.workflow_services.unpublish(resource.name)


def _terms_row(resource: ResourceRow) -> TermsRow:
    """The terms a Service resource applies (fields its spec leaves out stay the code's)."""
    spec = resource.spec
    price = spec.get("price")
    limits = spec.get("limits") or {}
    return TermsRow(
        name=resource.name,
        version=spec.get("version"),
        price_per_call_micros=None if price is None else _micros(price["perCall"]),
        price_per_item_micros=None if price is None else _micros(price["perItem"]),
        currency=None if price is None else price["currency"],
        max_attempts=limits.get("maxAttempts"),
        timeout_s=limits.get("timeoutS"),
        applied_at=resource.updated_at,
    )


def _micros(amount: str) -> int:
    return int((Decimal(amount) * _MICROS).to_integral_value())


class AccountController:
    """Account resources (platform admin only) make the account exist. A delete leaves the
    account and its data: stop an account with a Block instead."""

    def __init__(self, accounts: AccountStore) -> None:
        self.accounts = accounts

    async def admit(self, resource: ValidResource, principal: Principal) -> None:
        return None

    async def reconcile(self, resource: ResourceRow) -> Reconciled:
        await self.accounts.ensure_account(resource.name, resource.spec.get("displayName"))
        return Reconciled(
            [Condition("Ready", "True", "Exists", f"account {resource.name!r} exists")]
        )

    async def release(self, resource: ResourceRow) -> None:
        return None


class QuotaController:
    """Quota resources are the quotas of ``/v1/quotas`` (one limit each, the same fields): the
    spec is checked by the quota store's rules at apply (located ``spec.limit: ...``), then set
    under the resource's name, where admission enforces it. A delete deletes the quota; a quota
    set over ``/v1/quotas`` without a resource stays as it is."""

    def __init__(self, quotas: QuotaStore) -> None:
        self.quotas = quotas

    async def admit(self, resource: ValidResource, principal: Principal) -> None:
        _quota_spec(resource.spec)

    async def reconcile(self, resource: ResourceRow) -> Reconciled:
        spec = _quota_spec(resource.spec)
        quota, _ = await self.quotas.set(resource.account_id, resource.name, spec)
        return Reconciled(
            [Condition("Ready", "True", "Enforced", f"quota {quota.name!r} is enforced")]
        )

    async def release(self, resource: ResourceRow) -> None:
        try:
            await self.quotas.delete(resource.account_id, resource.name)
        except NotFoundError:
            return None  # deleted over /v1/quotas already


class BlockController:
    """Block resources are blocks (``fluxo block``): an apply places the block the spec says,
    written ``status.blockId``; a changed spec lifts that block and places the new one; a delete
    lifts it. Blocking a whole account takes a platform admin (its ``target.name`` is the
    account); anything else is blocked in the resource's own account."""

    def __init__(self, blocks: BlockService) -> None:
        self.blocks = blocks
        # The controller acts for the platform: who may block what was decided at admission.
        self.acting = Principal(account_id=PLATFORM_ACCOUNT, user_id=CONTROLLER_USER)

    async def admit(self, resource: ValidResource, principal: Principal) -> None:
        if resource.spec["target"]["kind"] == "account" and not acts_for_platform(principal):
            raise PermissionDeniedError(
                "blocking a whole account is platform-wide: apply this Block with a platform "
                "admin's token (fluxo up prints one)"
            )

    async def reconcile(self, resource: ResourceRow) -> Reconciled:
        spec = resource.spec
        kind, name = spec["target"]["kind"], spec["target"]["name"]
        account = name if kind == "account" else resource.account_id
        until = spec.get("until")
        ends_at = datetime.fromisoformat(until).timestamp() if until else None
        current = await self._current(resource)
        wanted = (account, kind, name, spec["reason"].strip(), ends_at)
        if current is not None and current.active_at(self.blocks.clock.time()):
            if (
                current.account_id,
                current.kind,
                current.target,
                current.reason,
                current.ends_at,
            ) == wanted:
                return self._report(current.id, kind, name)
            await self.blocks.lift(self.acting, current.id)
        placed = await self.blocks.place(
            self.acting,
            kind=kind,
            target=name,
            reason=spec["reason"],
            ends_at=until,
            account=account,
        )
        return self._report(placed.id, kind, name)

    async def release(self, resource: ResourceRow) -> None:
        current = await self._current(resource)
        if current is not None and current.lifted_at is None:
            await self.blocks.lift(self.acting, current.id)

    async def _current(self, resource: ResourceRow) -> BlockRow | None:
        block_id = resource.status.get("blockId")
        if not isinstance(block_id, str):
            return None
        try:
            return await self.blocks.store.get(None, block_id)
        except NotFoundError:
            return None

    @staticmethod
    def _report(block_id: str, kind: str, name: str) -> Reconciled:
        return Reconciled(
            [Condition("Ready", "True", "Placed", f"block {block_id} holds {kind} {name!r}")],
            {"blockId": block_id},
        )


class UserController:
    """User resources are the account's users (``fluxo users``): the name is the user id, the
    spec's role its role. An apply adds the user (without a password: set one with ``fluxo users
    passwd``, or ``PUT /v1/users/{id}/password``) or changes its role, revoking its tokens
    above the new role; a delete removes the user and revokes its tokens and sessions. Only an
    account admin applies them, and never a role above its own."""

    def __init__(self, users: UserStore) -> None:
        self.users = users

    async def admit(self, resource: ValidResource, principal: Principal) -> None:
        require(principal, Role.ACCOUNT_ADMIN, "manage users")
        role = Role.parse(resource.spec["role"], "spec.role")
        if role.rank > principal.role.rank:
            raise PermissionDeniedError(
                f"your role {principal.role.value} may not grant the role {role.value}",
                role=principal.role.value,
            )

    async def reconcile(self, resource: ResourceRow) -> Reconciled:
        role = Role.parse(resource.spec["role"], "spec.role")
        found = await self.users.find(resource.account_id, resource.name)
        if found is None:
            await self.users.add(resource.account_id, resource.name, role)
            has_password = False
        else:
            if found.role is not role:
                await self.users.set_role(resource.account_id, resource.name, role)
            has_password = found.has_password
        message = f"user {resource.name!r} is a {role.value}" + (
            "" if has_password else "; no password yet (fluxo users passwd) to sign in"
        )
        return Reconciled([Condition("Ready", "True", "Exists", message)])

    async def release(self, resource: ResourceRow) -> None:
        try:
            await self.users.remove(resource.account_id, resource.name)
        except NotFoundError:
            return None  # removed with fluxo users already


def _quota_spec(spec: dict[str, Any]) -> QuotaSpec:
    """The quota store's spec of a Quota resource's ``spec``; problems located under ``spec``."""
    try:
        return parse_quota_spec({k: v for k, v in spec.items() if v is not None})
    except ValidationError as exc:
        problems = [(loc.replace("body", "spec", 1), msg) for loc, msg in exc.problems]
        raise ValidationError("the Quota's spec is not valid", problems=problems) from None


def default_controllers(
    jobs: JobService,
    accounts: AccountStore,
    quotas: QuotaStore,
    blocks: BlockService,
    workflow_services: WorkflowServices | None = None,
) -> ControllerRegistry:
    """The controllers this installation has: Workflow, Service, Account, Quota, User and Block.
    The Platform registers the Trigger controller (fluxo/control/triggers), which needs the
    trigger service it builds."""
    registry = ControllerRegistry()
    registry.register("Workflow", WorkflowController(jobs))
    runtime = jobs.runtime
    registry.register(
        "Service",
        ServiceController(
            ServiceStore(runtime.db),
            ServiceTermsStore(runtime.db),
            runtime.terms,
            workflow_services,
        ),
    )
    registry.register("Account", AccountController(accounts))
    registry.register("Quota", QuotaController(quotas))
    registry.register("User", UserController(UserStore(accounts.db, accounts)))
    registry.register("Block", BlockController(blocks))
    return registry
