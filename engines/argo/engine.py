"""The Argo engine: deploy, start, observe and cancel Fluxo workflows on an Argo Server.

It speaks the Argo Server REST API (``/api/v1/...``) with an injectable ``httpx.AsyncClient``:

- ``deploy``: :func:`~translators.argo.to_argo` the workflow, then create or update its
  ``WorkflowTemplate`` (``<account>-<name>-v<version>-<hash>``): GET; absent -> POST; present
  with the same spec hash -> nothing; else PUT with the stored ``resourceVersion``. A 409 on
  create (someone else created it meanwhile) re-reads and updates once. A template of that name
  holding another account's or another version's workflow is never overwritten (409). RBAC, the
  per-account token Secret and CronWorkflows are Kubernetes objects the cluster operator applies
  (``fluxo export``); the engine does not.
- ``start``: POST the job's ``Workflow`` (:func:`~translators.argo.to_argo_job`); its name derives
  from the job id, so a 409 for a workflow of the same job means "already started" (idempotent).
- ``status``: GET the workflow and read it (see ``_status``).
- ``watch``: the ``workflow-events`` stream of one job, reconnecting after a dropped stream.
- ``cancel``: PUT ``stop`` (exit handlers still report the end); ``terminate`` if stop fails.
- ``undeploy``: DELETE the template (absent is fine).

5xx answers and network errors are retried ``ArgoConfig.retries`` times with exponential backoff;
errors are mapped as ``_errors`` draws it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import httpx

from engines.argo._errors import ArgoServerError, display_url, map_errors, status_error
from engines.argo._status import FINAL, run_status
from fluxo_core.engine import (
    Deployment,
    EngineCapabilities,
    RunHandle,
    RunStatus,
    StartRequest,
)
from fluxo_core.errors import (
    ConfigError,
    ConflictError,
    FluxoError,
    NotFoundError,
    PayloadTooLargeError,
)
from fluxo_core.ir import Workflow
from translators.argo import ArgoBundle, to_argo, to_argo_job

__all__ = ["ENGINE_NAME", "ArgoConfig", "ArgoEngine"]

ENGINE_NAME: Final = "argo"
_API: Final = "api/v1"
_SPEC_HASH: Final = "fluxo.dev/spec-sha256"
_REF: Final = "fluxo.dev/workflow"
_ACCOUNT: Final = "fluxo.dev/account"
_JOB_LABEL: Final = "fluxo.dev/job-id"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, kw_only=True)
class ArgoConfig:
    """Where the Argo Server is and how to talk to it.

    Attributes:
        base_url: the server with its base path, e.g. ``https://argo.example.com/argo/``
            (a trailing slash is added when missing).
        namespace: the Kubernetes namespace the workflows run in.
        token: the bearer token (``argo auth token``); never logged or put in messages.
        gateway_url: the Fluxo gateway as the Argo cluster reaches it (for the templates).
        verify_tls: verify the server's certificate; a path names a CA bundle.
        timeout_s: the timeout of one HTTP request.
        retries: extra tries after a 5xx answer or a network error (and stream reconnects).
        backoff_s: the first pause between tries; doubles each time.
    """

    base_url: str
    namespace: str = "argo"
    token: str | None = field(default=None, repr=False)
    gateway_url: str
    verify_tls: bool | str = True
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", self.base_url):
            raise ConfigError(
                f"ArgoConfig.base_url={display_url(self.base_url)!r} is not an http(s) URL; "
                "give the Argo Server with its base path, e.g. 'https://argo.example.com/'"
            )
        if not _DNS_LABEL.match(self.namespace):
            raise ConfigError(
                f"ArgoConfig.namespace={self.namespace!r} is not a Kubernetes namespace name"
            )
        if self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ConfigError(
                "ArgoConfig: retries and backoff_s must be >= 0 and timeout_s > 0",
                retries=self.retries,
            )

    @property
    def root(self) -> str:
        """``base_url`` ending with exactly one slash."""
        return self.base_url.rstrip("/") + "/"


class ArgoEngine:
    """The :class:`~fluxo_core.engine.Engine` for Argo Workflows.

    Args:
        config: the server, namespace, token and gateway.
        client: an ``httpx.AsyncClient`` to use (tests inject one); absent, the engine makes its
            own from ``config`` and closes it in :meth:`aclose`.
    """

    name = ENGINE_NAME
    capabilities = EngineCapabilities(
        locality="external",
        step_kinds=frozenset(
            {"service", "workflow", "transform", "switch", "split", "join", "delay"}
        ),
        parallel=True,
        cancel=True,
        per_step_status=True,
    )

    def __init__(self, config: ArgoConfig, *, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._server = display_url(config.root)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            verify=_verify(config.verify_tls), timeout=config.timeout_s
        )
        self._bundles: dict[tuple[str | None, str], ArgoBundle] = {}  # by (account, ref)

    async def open(self) -> None:
        """Nothing runs in the background: the HTTP client connects on first use."""

    async def aclose(self) -> None:
        """Close the HTTP client if the engine made it."""
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> ArgoEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the Engine protocol --------------------------------------------------------------------

    async def starter(self, account: str, workflow: str, version: int) -> None:
        """None: the job's row gets a start message, and Fluxo's runner calls :meth:`start`."""
        return None

    async def deploy(self, workflow: Workflow) -> Deployment:
        """Create or update the workflow version's ``WorkflowTemplate`` (idempotent)."""
        version = workflow.metadata.version or "0"
        bundle = to_argo(workflow, gateway_url=self.config.gateway_url, version=version)
        document = bundle.workflow_template
        name = bundle.template_name
        path = self._path("workflow-templates", name)
        action = "unchanged"
        current = await self._get_or_none(path, f"read WorkflowTemplate {name}")
        if current is None:
            try:
                stored = await self._request(
                    "POST",
                    self._path("workflow-templates"),
                    f"create WorkflowTemplate {name}",
                    body={"namespace": self.config.namespace, "template": document},
                )
                action = "created"
            except ConflictError:  # created meanwhile by someone else: update it once
                current = await self._request("GET", path, f"read WorkflowTemplate {name}")
        if current is not None:
            self._check_owner(current, bundle)
            stored = current
            if _annotation(current, _SPEC_HASH) != _annotation(document, _SPEC_HASH):
                stored = await self._update_template(name, document, current)
                action = "updated"
        self._bundles[(bundle.account, bundle.workflow_ref)] = bundle
        return Deployment(
            workflow=bundle.workflow_ref,
            engine=self.name,
            details={
                "namespace": self.config.namespace,
                "template": name,
                "resourceVersion": _get(stored, "metadata", "resourceVersion"),
                "action": action,
            },
        )

    async def undeploy(self, workflow: str, *, account: str | None = None) -> None:
        """Delete the template of ``workflow`` (``name@version``) of ``account``; absent is
        fine."""
        name = await self._template_name(account, workflow)
        self._bundles.pop((account, workflow), None)
        if name is None:
            return
        try:
            await self._request(
                "DELETE",
                self._path("workflow-templates", name),
                f"delete WorkflowTemplate {name}",
            )
        except NotFoundError:
            return

    async def start(self, request: StartRequest) -> RunHandle:
        """Submit the job's Workflow (idempotent by job id)."""
        bundle = await self._bundle(request.account, request.workflow)
        try:
            document = to_argo_job(
                bundle, job_id=request.job_id, packet=request.input, rerun=request.rerun
            )
        except PayloadTooLargeError:
            # Too large for an Argo parameter: the input stays in Fluxo (the job row) and the
            # first calls carry ``fluxo-payload-ref: <job id>``, which the gateway resolves.
            document = to_argo_job(
                bundle,
                job_id=request.job_id,
                packet=request.input,
                input_ref=request.job_id,
                rerun=request.rerun,
            )
        run_id = str(document["metadata"]["name"])
        handle = RunHandle(engine=self.name, job_id=request.job_id, run_id=run_id)
        try:
            await self._request(
                "POST",
                self._path("workflows"),
                f"create Workflow {run_id}",
                body={"namespace": self.config.namespace, "workflow": document},
            )
        except ConflictError as exc:
            existing = await self._request(
                "GET", self._path("workflows", run_id), f"read Workflow {run_id}"
            )
            if _get(existing, "metadata", "labels", _JOB_LABEL) != _label(request.job_id):
                raise ConflictError(
                    f"Argo workflow {run_id} exists and belongs to another job; "
                    f"delete it or start job {request.job_id} under another id",
                    job_id=request.job_id,
                    run_id=run_id,
                ) from exc
        return handle

    async def status(self, handle: RunHandle) -> RunStatus:
        """The job's phase and one state per executed step, read from the Argo workflow."""
        document = await self._request(
            "GET", self._path("workflows", handle.run_id), f"read Workflow {handle.run_id}"
        )
        return run_status(document, handle.job_id)

    async def cancel(self, handle: RunHandle) -> None:
        """Stop the workflow (exit handlers run); terminate it if stop fails. Idempotent."""
        body = {"namespace": self.config.namespace, "name": handle.run_id}
        try:
            await self._request(
                "PUT",
                self._path("workflows", handle.run_id, "stop"),
                f"stop Workflow {handle.run_id}",
                body=body,
            )
            return
        except FluxoError as exc:
            if exc.http_status in (401, 403, 404):
                raise
            first = exc
        try:
            await self._request(
                "PUT",
                self._path("workflows", handle.run_id, "terminate"),
                f"terminate Workflow {handle.run_id}",
                body=body,
            )
        except FluxoError as exc:
            # Argo refuses to shut down a finished workflow: cancelling one is a no-op.
            if (await self.status(handle)).phase in FINAL:
                return
            raise exc from first

    async def watch(self, job_id: str) -> AsyncIterator[RunStatus]:
        """Each new status of the job's workflow until it ends, from the ``workflow-events`` stream.

        A dropped stream is reopened (``ArgoConfig.retries`` times in a row at most, with backoff);
        the server sends the current state on each (re)connect, and repeats are not yielded.
        """
        selector = f"{_JOB_LABEL}={_label(job_id)}"
        params = {"listOptions.labelSelector": selector}
        url = self.config.root + self._path("workflow-events")
        operation = f"watch the workflow of job {job_id}"
        failures = 0
        last: RunStatus | None = None
        while True:
            try:
                with map_errors(operation, self._server, self.config.token):
                    async with self._client.stream(
                        "GET", url, params=params, headers=self._headers()
                    ) as response:
                        if response.is_error:
                            await response.aread()
                            raise status_error(response, operation, self._server, self.config.token)
                        async for line in response.aiter_lines():
                            event = _event(line)
                            if event is None:
                                continue
                            failures = 0
                            current = run_status(event, job_id)
                            if current != last:
                                last = current
                                yield current
                            if current.phase in FINAL:
                                return
                raise ArgoServerError(  # the stream ended before the workflow did
                    f"the Argo Server {self._server} closed the event stream of job {job_id}",
                    retryable=True,
                    operation=operation,
                    server=self._server,
                )
            except FluxoError as exc:
                if not exc.retryable or failures >= self.config.retries:
                    raise
                await asyncio.sleep(self.config.backoff_s * 2**failures)
                failures += 1

    # -- helpers --------------------------------------------------------------------------------

    def _path(self, kind: str, *names: str) -> str:
        parts = [_API, kind, self.config.namespace, *names]
        return "/".join(quote(p, safe="") if i > 1 else p for i, p in enumerate(parts))

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call, retried on 5xx and network errors; the JSON answer."""
        attempt = 0
        while True:
            try:
                with map_errors(operation, self._server, self.config.token):
                    response = await self._client.request(
                        method,
                        self.config.root + path,
                        json=body,
                        params=params,
                        headers=self._headers(),
                    )
                    response.raise_for_status()
                    data = response.json() if response.content else {}
                return data if isinstance(data, dict) else {}
            except FluxoError as exc:
                if not exc.retryable or attempt >= self.config.retries:
                    if exc.retryable and attempt:
                        exc.message = f"{exc.message} (after {attempt + 1} tries)"
                        exc.args = (exc.message,)
                    raise
            except ValueError as exc:  # a 2xx that is not JSON
                raise ArgoServerError(
                    f"Argo Server {self._server} answered {operation} with a body that is not "
                    "JSON; check that ArgoConfig.base_url points at the Argo Server",
                    operation=operation,
                    server=self._server,
                ) from exc
            await asyncio.sleep(self.config.backoff_s * 2**attempt)
            attempt += 1

    async def _get_or_none(self, path: str, operation: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", path, operation)
        except NotFoundError:
            return None

    async def _update_template(
        self, name: str, document: dict[str, Any], current: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT the template over ``current`` (optimistic: its resourceVersion); one re-read on 409."""
        path = self._path("workflow-templates", name)
        for last in (False, True):
            version = _get(current, "metadata", "resourceVersion")
            metadata = {**document["metadata"], "resourceVersion": version}
            try:
                return await self._request(
                    "PUT",
                    path,
                    f"update WorkflowTemplate {name}",
                    body={
                        "namespace": self.config.namespace,
                        "template": {**document, "metadata": metadata},
                    },
                )
            except ConflictError:
                if last:
                    raise
                current = await self._request("GET", path, f"read WorkflowTemplate {name}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_owner(self, current: Mapping[str, Any], bundle: ArgoBundle) -> None:
        """Refuse to overwrite a template that holds another workflow (of another account, or
        another version): names are scoped and hashed, so this takes a hash collision or a
        template made by hand, and either must not break the workflow that is there."""
        owner = (_annotation(current, _ACCOUNT), _annotation(current, _REF))
        if owner != (bundle.account, bundle.workflow_ref):
            name = bundle.template_name
            raise ConflictError(
                # Whose workflow it is stays unsaid: it may be another account's.
                f"WorkflowTemplate {name} in namespace {self.config.namespace} of the Argo "
                f"Server {self._server} holds another workflow; Fluxo does not overwrite it "
                f"(delete it if it is stale, then apply workflow {bundle.workflow_ref} again)",
                workflow=bundle.workflow_ref,
                template=name,
            )

    async def _bundle(self, account: str | None, ref: str) -> ArgoBundle:
        """The deployed bundle of ``ref`` of ``account``: from this engine's deploys, else from
        the server."""
        bundle = self._bundles.get((account, ref))
        if bundle is not None:
            return bundle
        template = await self._find_template(account, ref)
        if template is None:
            raise NotFoundError(
                f"workflow {ref} is not deployed on the Argo Server {self._server} "
                f"(namespace {self.config.namespace}); deploy it first",
                workflow=ref,
            )
        bundle = ArgoBundle(
            workflow_template=template,
            cron_workflows=(),
            rbac=(),
            template_name=str(template["metadata"]["name"]),
            workflow_ref=ref,
            input_by_reference="fromJSON(workflow.parameters.input)" not in json.dumps(template),
            start_step=str(template["metadata"]["name"]),
            account=account,
        )
        self._bundles[(account, ref)] = bundle
        return bundle

    async def _template_name(self, account: str | None, ref: str) -> str | None:
        bundle = self._bundles.get((account, ref))
        if bundle is not None:
            return bundle.template_name
        template = await self._find_template(account, ref)
        return None if template is None else str(template["metadata"]["name"])

    async def _find_template(self, account: str | None, ref: str) -> dict[str, Any] | None:
        name = ref.partition("@")[0]
        listing = await self._request(
            "GET",
            self._path("workflow-templates"),
            f"list WorkflowTemplates of {name}",
            params={"listOptions.labelSelector": f"{_REF}={name}"},
        )
        for item in listing.get("items") or ():
            if (
                isinstance(item, dict)
                and _annotation(item, _REF) == ref
                and _annotation(item, _ACCOUNT) == account
            ):
                return item
        return None


def _verify(value: bool | str) -> bool | ssl.SSLContext:
    return ssl.create_default_context(cafile=value) if isinstance(value, str) else value


def _event(line: str) -> dict[str, Any] | None:
    """The workflow of one ``{"result": {"type", "object"}}`` stream line (None: keep-alive)."""
    line = line.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("error"), dict):
        message = str(data["error"].get("message") or "stream error")[:200]
        raise ArgoServerError(f"the Argo event stream reported: {message}", retryable=True)
    workflow = _get(data, "result", "object")
    return workflow if isinstance(workflow, dict) else None


def _annotation(document: Mapping[str, Any], key: str) -> Any:
    return _get(document, "metadata", "annotations", key)


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _label(value: str) -> str:
    """The job-id label as the translator writes it (a hash for values that are not labels)."""
    if re.match(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$", value):
        return value
    return hashlib.sha256(value.encode()).hexdigest()[:16]


if TYPE_CHECKING:  # mypy proves that the engine keeps the whole contract
    from fluxo_core.engine import Engine

    _CONTRACT: type[Engine] = ArgoEngine
