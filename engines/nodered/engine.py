"""The Node-RED engine: deploy, start and cancel Fluxo workflows on a real Node-RED.

It speaks Node-RED's Admin API (``httpAdminRoot``) and the ``http in`` routes of the deployed flows
(``httpNodeRoot``) with an injectable ``httpx.AsyncClient``:

- ``deploy``: :func:`~translators.nodered.to_nodered` the workflow (one tab), check the flow
  BEFORE Node-RED sees it (:func:`~translators.nodered.check_flow` plus the installed node types
  from ``GET /nodes``: Node-RED itself accepts an unknown type and then stops every flow, keeps
  the last of two equal ids, and drops messages sent along a dangling wire), then replace only
  this workflow's tab and its nodes with the v2 API: ``GET /flows`` -> ``{rev, flows}``, swap the
  owned nodes, ``POST /flows {rev, flows}`` with ``Node-RED-Deployment-Type: flows`` (only the
  changed tab restarts). A 409 (someone deployed in between) re-reads and tries once more. When
  the tab already holds exactly these nodes nothing is posted (no restart, ``rev`` unchanged).
- ``start``: POST the job's input packet to the tab's entry ``http in``
  (``{entry_root}/{account}/{name}/{version}``); the flow answers 202 for a new job and 200 for a
  job it already runs, so a retried start is harmless.
- ``status``: Node-RED keeps no job history; every service step passes the Fluxo gateway and the
  flow reports its end to Fluxo, so the control plane knows the job. ``status`` asks the
  ``steps_source`` it was given (the job row and its gateway calls).
- ``cancel``: POST ``{job_id}`` to the tab's ``.../cancel`` entry: the flow forgets the job (its
  messages in flight end without a report). The control plane also marks the job cancelled, so
  the gateway refuses the job's next service call.
- ``undeploy``: remove the tab and its nodes (v2, ``rev``, one 409 retry).

Node-RED is shared by every account: a tab's node ids and entry route carry the workflow's
account (``metadata.account``; the job's account in :class:`StartRequest`), so two accounts'
workflows of the same name are two tabs that never touch each other.

5xx answers and network errors are retried ``retries`` times with exponential backoff; errors are
mapped as :mod:`engines.nodered._errors` draws it, naming the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx

from engines.nodered._errors import NodeRedServerError, display_url, map_errors
from engines.nodered._flows import (
    containers_of,
    installed_types,
    owned_nodes,
    replace_owned,
    tab_id_of,
)
from fluxo_core.engine import (
    Deployment,
    EngineCapabilities,
    RunHandle,
    RunStatus,
    StartRequest,
)
from fluxo_core.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    FluxoError,
    NotFoundError,
    Problem,
    UnsupportedFeatureError,
    ValidationError,
)
from fluxo_core.ir import Workflow
from translators.nodered import (
    NodeRedOptions,
    check_flow,
    deploy_mark,
    flow_key,
    stable_id,
    to_nodered,
)

__all__ = ["ENGINE_NAME", "NodeRedEngine", "StepsSource"]

ENGINE_NAME: Final = "nodered"
StepsSource = Callable[[str], Awaitable[RunStatus]]
"""``async (job_id) -> RunStatus``: the job as the control plane knows it (row + gateway calls)."""

_V2: Final = {"Node-RED-API-Version": "v2", "Accept": "application/json"}
_REMEMBERED_JOBS: Final = 10_000
_LOCATION = re.compile(r"^flow\[(\d+)\]")
_PROBE_JOB: Final = "fluxo-readiness-probe"  # not a job id Fluxo makes (those are hex)


@dataclass(frozen=True)
class _Flow:
    """A validated flow ready to deploy, and what it owns on the server."""

    ref: str
    nodes: tuple[Mapping[str, Any], ...]
    tab_id: str | None
    ids: frozenset[str]
    containers: frozenset[str]
    entry: str | None = None  # the entry route of a generated flow
    mark: str | None = None  # what its cancel entry answers as ``flow`` (see deploy_mark)


class NodeRedEngine:
    """The :class:`~fluxo_core.engine.Engine` for Node-RED.

    Args:
        base_url: Node-RED's Admin API root (``httpAdminRoot``), e.g. ``http://127.0.0.1:1880/``;
            a missing trailing slash is added.
        token: a ready admin bearer token (``adminAuth``); never logged or put in messages.
        username, password: an ``adminAuth`` user; the engine gets its token with the
            ``POST /auth/token`` password flow (and again when it expires). Give these or
            ``token``, not both; neither when Node-RED has no ``adminAuth``.
        login: instead of ``username`` and ``password``: a function giving them (or None: no
            login), called at each login, so a credential that appears or changes after the
            engine was made is used (the managed Node-RED may be installed after Fluxo starts).
        options: how the generated flows reach Fluxo (``fluxo_url`` = the Fluxo API as
            Node-RED sees it, the token env var, the entry root).
        client: an ``httpx.AsyncClient`` to use (tests inject one); absent, the engine makes its
            own and closes it in :meth:`aclose`.
        steps_source: how :meth:`status` learns a job's state (the control plane passes it; it
            may also be set later through the ``steps_source`` attribute).
        node_url: where the flows' ``http in`` routes live (``httpNodeRoot``); default
            ``base_url``.
        timeout_s: the timeout of one HTTP request.
        start_wait_s: how long :meth:`deploy` waits for the deployed flow to start answering.
        retries: extra tries after a 5xx answer or a network error.
        backoff_s: the first pause between tries; doubles each time.
    """

    name = ENGINE_NAME
    capabilities = EngineCapabilities(
        locality="external",
        step_kinds=frozenset(
            {"service", "switch", "transform", "split", "join", "delay", "native"}
        ),
        native_engines=frozenset({ENGINE_NAME}),
        parallel=True,
        cancel=True,
        per_step_status=True,
    )

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        login: Callable[[], tuple[str, str] | None] | None = None,
        options: NodeRedOptions | None = None,
        client: httpx.AsyncClient | None = None,
        steps_source: StepsSource | None = None,
        node_url: str | None = None,
        timeout_s: float = 30.0,
        start_wait_s: float = 15.0,
        retries: int = 2,
        backoff_s: float = 0.25,
    ) -> None:
        self._root = _root(base_url, "base_url")
        self._node_root = _root(node_url, "node_url") if node_url else self._root
        if sum(map(bool, (token, username or password, login))) > 1:
            raise ConfigError(
                "NodeRedEngine: give an admin token, a username and password, or a login "
                "function; only one of them"
            )
        if bool(username) != bool(password):
            raise ConfigError(
                "NodeRedEngine: the POST /auth/token flow needs both a username and a password"
            )
        if retries < 0 or backoff_s < 0 or timeout_s <= 0:
            raise ConfigError("NodeRedEngine: retries and backoff_s must be >= 0, timeout_s > 0")
        self.options = options or NodeRedOptions()
        self.steps_source = steps_source
        self._token = token
        self._username = username
        self._password = password
        self._find_login = login
        self._retries = retries
        self._backoff_s = backoff_s
        self._start_wait_s = start_wait_s
        self._server = display_url(self._root)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._types: set[str] | None = None
        self._flows: dict[str, _Flow] = {}  # deployed by this engine, by flow_key
        # job id -> (workflow ref, entry route), for cancel
        self._jobs: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._write_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        """The Admin API root this engine talks to (without credentials)."""
        return self._server

    async def open(self) -> None:
        """Nothing runs in the background: the HTTP client connects on first use."""

    async def aclose(self) -> None:
        """Revoke the token the engine logged in for, and close the HTTP client if the engine
        made it."""
        token, self._token = self._token, None
        if token is not None and self._username:
            # Node-RED keeps a login valid for a week (sessionExpiryTime): end it with us.
            with contextlib.suppress(httpx.HTTPError, RuntimeError):  # RuntimeError: closed
                await self._client.post(
                    self._root + "auth/revoke",
                    json={"token": token},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5.0,
                )
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> NodeRedEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the Engine protocol --------------------------------------------------------------------

    async def starter(self, account: str, workflow: str, version: int) -> None:
        """None: the job's row gets a start message, and Fluxo's runner calls :meth:`start`."""
        return None

    async def deploy(self, workflow: Workflow) -> Deployment:
        """Deploy the workflow as its own tab, leaving every other tab alone (idempotent).

        Raises:
            UnsupportedFeatureError: a step this engine cannot run (named).
            ValidationError: the translated flow would be accepted by Node-RED and run wrongly
                (unknown node type, duplicate id, dangling wire, node outside its tab); nothing
                was sent to Node-RED. Or Node-RED itself refused the flow (its message quoted).
            ConflictError: the flows changed twice while deploying (a concurrent deployer).
        """
        ref = workflow.ref or workflow.metadata.name
        key = flow_key(workflow.metadata.account, ref)
        # A version fixes the content: translate and validate it once. Without one (a workflow
        # the control plane has not applied yet) the same name may hold other steps next time.
        flow = self._flows.get(key) if workflow.ref else None
        if flow is None:
            _check_kinds(workflow, ref, self.capabilities)
            try:
                nodes = to_nodered(workflow, options=self.options)
            except UnsupportedFeatureError as exc:
                raise UnsupportedFeatureError(
                    f"workflow {ref}: {exc.message}", workflow=ref, **exc.context
                ) from exc
            entry = self.options.entry_path(workflow.metadata.account, ref)
            flow = await self._validated(ref, nodes, entry=entry if workflow.ref else None)
        deployment = await self._deploy(flow)
        self._flows[key] = flow
        return deployment

    async def deploy_flow(self, ref: str, nodes: Sequence[Mapping[str, Any]]) -> Deployment:
        """Deploy a ready flow (e.g. an imported flow file exported back) as one unit.

        ``nodes`` is checked like a translated flow, then replaces the nodes it owns (its ids,
        and everything inside its tabs and subflows); every other node stays. ``ref`` names it
        in messages, in :meth:`undeploy` and in the returned :class:`Deployment`.
        """
        flow = await self._validated(ref, nodes)
        deployment = await self._deploy(flow)
        self._flows[ref] = flow
        return deployment

    async def undeploy(self, workflow: str, *, account: str | None = None) -> None:
        """Remove the tab of ``workflow`` (``name@version``) of ``account`` and its nodes;
        absent is fine.

        Config nodes the flow brought (no tab) are removed only when no remaining node uses them.
        """
        key = flow_key(account, workflow)
        flow = self._flows.get(key)
        if flow is None:
            tab = stable_id(key, "tab")  # generated flows: the tab id derives from the key
            flow = _Flow(workflow, (), tab, frozenset({tab}), frozenset({tab}))

        def remove(flows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]] | None:
            owned = owned_nodes(flows, set(flow.ids), set(flow.containers))
            if not owned:
                return None
            drop = {n.get("id") for n in owned}
            kept = [n for n in flows if n.get("id") not in drop]
            # Config nodes (no z) the flow shares with others stay while anything refers to them.
            used = {v for n in kept for v in n.values() if isinstance(v, str)}
            drop -= {
                n.get("id")
                for n in flows
                if not n.get("z")
                and n.get("type") not in ("tab", "subflow")
                and n.get("id") in used
            }
            return [n for n in flows if n.get("id") not in drop]

        await self._swap(workflow, remove, f"undeploy workflow {workflow}")
        self._flows.pop(key, None)

    async def start(self, request: StartRequest) -> RunHandle:
        """POST the job's input packet to the workflow's entry (idempotent by job id)."""
        ref = request.workflow
        path = self.options.entry_path(request.account, ref)
        url = self._node_root + path.lstrip("/")
        body = request.input.model_dump(mode="json")
        body.update(job_id=request.job_id, workflow=ref)
        operation = f"start job {request.job_id} of workflow {ref}"
        try:
            # No admin token here: an ``http in`` flow could read it from the request headers.
            await self._request("POST", url, operation, json=body, admin=False, workflow=ref)
        except NotFoundError as exc:
            raise NotFoundError(
                f"workflow {ref} is not deployed on Node-RED {self._server} (nothing answers at "
                f"{display_url(url)}); deploy it first (fluxo apply)",
                workflow=ref,
                job_id=request.job_id,
            ) from exc
        self._remember(request.job_id, ref, path)
        return RunHandle(engine=self.name, job_id=request.job_id, run_id=request.job_id)

    async def status(self, handle: RunHandle) -> RunStatus:
        """The job's state as the control plane knows it (Node-RED keeps no job history)."""
        if self.steps_source is None:
            raise ConfigError(
                "the Node-RED engine has no steps_source, so it cannot tell a job's status: "
                "Node-RED keeps no job history; pass the control plane's job reader as "
                "NodeRedEngine(..., steps_source=...) or create_engine(..., steps_source=...)",
                job_id=handle.job_id,
            )
        return await self.steps_source(handle.job_id)

    async def cancel(self, handle: RunHandle) -> None:
        """Tell the job's flow to forget it; an unknown job is fine (idempotent)."""
        ref, entry = self._jobs.get(handle.job_id) or (None, None)
        paths = [entry + "/cancel"] if entry is not None else await self._cancel_paths()
        for path in paths:
            url = self._node_root + path.lstrip("/")
            try:
                await self._request(
                    "POST",
                    url,
                    f"cancel job {handle.job_id}" + (f" of workflow {ref}" if ref else ""),
                    json={"job_id": handle.job_id},
                    admin=False,
                    job_id=handle.job_id,
                )
            except NotFoundError:
                continue  # not this flow's job, or the flow is gone: nothing to cancel there
            break
        self._jobs.pop(handle.job_id, None)

    # -- deploying ------------------------------------------------------------------------------

    async def _validated(
        self, ref: str, nodes: Sequence[Mapping[str, Any]], *, entry: str | None = None
    ) -> _Flow:
        """The flow, once it passed every check; else a ValidationError listing each problem."""
        known = await self._known_types(ref, refresh=False)
        problems = check_flow(nodes, known_types=known)
        if any(loc.endswith(".type") for loc, _ in problems):
            # A module may have been installed since the types were read: read them again once.
            problems = check_flow(nodes, known_types=await self._known_types(ref, refresh=True))
        if problems:
            raise ValidationError(
                f"workflow {ref}: its Node-RED flow was refused before deploying (Node-RED would "
                "accept it and run it wrongly); fix the nodes below",
                problems=[_locate(p, nodes) for p in problems],
                workflow=ref,
            )
        ids = frozenset(str(n["id"]) for n in nodes)
        containers = frozenset(containers_of(nodes))
        return _Flow(
            ref, tuple(nodes), tab_id_of(nodes), ids, containers, entry, deploy_mark(nodes)
        )

    async def _deploy(self, flow: _Flow) -> Deployment:
        wanted = list(flow.nodes)

        def replace(flows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]] | None:
            return replace_owned(flows, wanted, ids=set(flow.ids), containers=set(flow.containers))

        rev, changed = await self._swap(flow.ref, replace, f"deploy workflow {flow.ref}")
        await self._await_started(flow)
        details: dict[str, Any] = {
            "server": self._server,
            "tab": flow.tab_id,
            "rev": rev,
            "action": "deployed" if changed else "unchanged",
            "nodes": len(flow.nodes),
        }
        if flow.entry is not None:
            details["entry"] = display_url(self._node_root + flow.entry.lstrip("/"))
        return Deployment(workflow=flow.ref, engine=self.name, details=details)

    async def _await_started(self, flow: _Flow) -> None:
        """Wait until the flow's routes answer: Node-RED answers ``POST /flows`` BEFORE it starts
        the new flows, so a start right after a deploy could meet a 404.

        The probe is the flow's cancel entry with a job id no job has: the flow answers it with
        JSON (``{"status": "unknown"}``), Express's own 404 is HTML. It is among the last nodes
        of a generated flow, so when it answers the nodes before it exist. Flows without a
        generated cancel entry (:meth:`deploy_flow` of an imported file) are not waited for.
        It runs after unchanged deploys too: it also catches a Node-RED whose flows are stopped
        (an unknown node type in any tab stops them all).
        """
        root = self.options.entry_root.rstrip("/") + "/"
        paths = [
            str(n["url"])
            for n in flow.nodes
            if n.get("type") == "http in"
            and n.get("z") == flow.tab_id
            and isinstance(n.get("url"), str)
            and str(n["url"]).startswith(root)
            and str(n["url"]).endswith("/cancel")
        ]
        if not paths:
            return
        url = self._node_root + paths[0].lstrip("/")
        deadline = asyncio.get_running_loop().time() + self._start_wait_s
        pause = 0.02
        while True:
            with map_errors(f"check that workflow {flow.ref} started", self._server):
                response = await self._client.post(url, json={"job_id": _PROBE_JOB})
            if _answered_by_flow(response, flow.mark):
                return
            if asyncio.get_running_loop().time() >= deadline:
                raise NodeRedServerError(
                    f"workflow {flow.ref} is deployed on Node-RED {self._server} but its flow did "
                    f"not start within {self._start_wait_s:g} s ({display_url(url)} answers "
                    f"{response.status_code}); see Node-RED's log (a node type missing in any "
                    "tab stops every flow)",
                    retryable=True,
                    workflow=flow.ref,
                    server=self._server,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)

    async def _swap(
        self,
        ref: str,
        change: Callable[[list[Mapping[str, Any]]], list[Mapping[str, Any]] | None],
        operation: str,
    ) -> tuple[str, bool]:
        """Read the flows, change them, write them with the read ``rev``; once more on a 409.

        Returns the ``rev`` now deployed and whether anything was written.
        """
        async with self._write_lock:
            for attempt in (1, 2):
                rev, flows = await self._read_flows(ref)
                new = change(flows)
                if new is None:
                    return rev, False
                try:
                    return await self._write_flows(ref, rev, new, operation), True
                except ConflictError as exc:
                    if attempt == 2:
                        raise ConflictError(
                            f"workflow {ref}: Node-RED {self._server}'s flows changed twice "
                            f"while trying to {operation} (someone else deploys at the same "
                            "time); try again",
                            workflow=ref,
                        ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_flows(self, ref: str) -> tuple[str, list[Mapping[str, Any]]]:
        response = await self._request(
            "GET", self._root + "flows", f"read the flows (for {ref})", headers=_V2, workflow=ref
        )
        data = _json(response, "read the flows", self._server)
        if not isinstance(data, dict) or not isinstance(data.get("flows"), list):
            raise NodeRedServerError(
                f"Node-RED {self._server} answered GET /flows without {{flows, rev}}: it does not "
                "speak the v2 Admin API; use Node-RED 1.0 or later",
                workflow=ref,
                server=self._server,
            )
        flows: list[Mapping[str, Any]] = [n for n in data["flows"] if isinstance(n, dict)]
        return str(data.get("rev") or ""), flows

    async def _write_flows(
        self, ref: str, rev: str, flows: list[Mapping[str, Any]], operation: str
    ) -> str:
        response = await self._request(
            "POST",
            self._root + "flows",
            operation,
            json={"rev": rev, "flows": flows},
            headers={**_V2, "Node-RED-Deployment-Type": "flows"},
            workflow=ref,
        )
        data = _json(response, operation, self._server)
        return str(data.get("rev") or "") if isinstance(data, dict) else ""

    async def _known_types(self, ref: str, *, refresh: bool) -> set[str]:
        if self._types is None or refresh:
            response = await self._request(
                "GET",
                self._root + "nodes",
                f"list the installed node types (for {ref})",
                headers={"Accept": "application/json"},
                workflow=ref,
            )
            self._types = installed_types(_json(response, "list the node types", self._server))
        return self._types

    async def _cancel_paths(self) -> list[str]:
        """Every cancel entry of a Fluxo flow (when the job's workflow is not known here)."""
        _, flows = await self._read_flows("cancel")
        root = self.options.entry_root.rstrip("/") + "/"
        return [
            str(n["url"])
            for n in flows
            if n.get("type") == "http in"
            and isinstance(n.get("url"), str)
            and n["url"].startswith(root)
            and n["url"].endswith("/cancel")
        ]

    def _remember(self, job_id: str, ref: str, entry: str) -> None:
        self._jobs[job_id] = (ref, entry)
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > _REMEMBERED_JOBS:
            self._jobs.popitem(last=False)

    # -- HTTP -----------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        admin: bool = True,
        **context: Any,
    ) -> httpx.Response:
        """One call, retried on 5xx and network errors; a 401 renews a password-flow token once."""
        attempt = 0
        renewed = False
        while True:
            all_headers = dict(headers or {})
            if admin:
                all_headers.update(await self._auth_headers())
            try:
                with map_errors(operation, self._server, self._secrets(), **context):
                    response = await self._client.request(
                        method, url, json=json, headers=all_headers
                    )
                    response.raise_for_status()
                return response
            except AuthError:
                if not (admin and (self._username or self._find_login) and not renewed):
                    raise
                self._token = None  # expired or revoked: log in again, once
                renewed = True
                continue
            except FluxoError as exc:
                if not exc.retryable or attempt >= self._retries:
                    if exc.retryable and attempt:
                        exc.message = f"{exc.message} (after {attempt + 1} tries)"
                        exc.args = (exc.message,)
                    raise
            await asyncio.sleep(self._backoff_s * 2**attempt)
            attempt += 1

    async def _auth_headers(self) -> dict[str, str]:
        if self._token is None and self._find_login is not None:
            found = self._find_login()
            self._username, self._password = found if found else (None, None)
        if self._token is None and self._username and self._password:
            self._token = await self._login(self._username, self._password)
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def _login(self, username: str, password: str) -> str:
        """An admin token from the ``POST /auth/token`` password flow."""
        operation = f"log in as {username!r} (POST /auth/token)"
        with map_errors(operation, self._server, self._secrets()):
            response = await self._client.post(
                self._root + "auth/token",
                data={
                    "client_id": "node-red-admin",
                    "grant_type": "password",
                    "scope": "*",
                    "username": username,
                    "password": password,
                },
            )
            if response.status_code in (400, 401, 403):  # oauth2orize refuses bad users with 403
                raise AuthError(
                    f"Node-RED {self._server} refused the admin user {username!r} "
                    f"({response.status_code}); check the username and password of adminAuth",
                    server=self._server,
                    status=response.status_code,
                )
            response.raise_for_status()
        data = _json(response, operation, self._server)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"Node-RED {self._server} answered {operation} without an access_token; is "
                "adminAuth set in its settings.js?",
                server=self._server,
            )
        return token

    def _secrets(self) -> tuple[str | None, ...]:
        return (self._token, self._password)


# -- helpers ------------------------------------------------------------------------------------


def _root(url: str, setting: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", url):
        raise ConfigError(
            f"NodeRedEngine: {setting}={display_url(url)!r} is not an http(s) URL; give "
            "Node-RED's address, e.g. 'http://127.0.0.1:1880/'",
            setting=setting,
        )
    return url.rstrip("/") + "/"


def _check_kinds(workflow: Workflow, ref: str, capabilities: EngineCapabilities) -> None:
    for step in workflow.spec.steps:
        if step.kind not in capabilities.step_kinds:
            raise UnsupportedFeatureError(
                f"workflow {ref}: step {step.id!r} is a {step.kind!r} step, which the Node-RED "
                f"engine does not run (it runs {', '.join(sorted(capabilities.step_kinds))}); "
                "replace the step or choose another engine (spec.engine)",
                workflow=ref,
                step=step.id,
                kind=step.kind,
            )


def _locate(problem: Problem, nodes: Sequence[Mapping[str, Any]]) -> Problem:
    """``flow[3].wires[0][0]`` -> ``flow[3] (function 'enrich: result').wires[0][0]``."""
    location, message = problem
    match = _LOCATION.match(location)
    if match is None or int(match.group(1)) >= len(nodes):
        return problem
    node = nodes[int(match.group(1))]
    label = node.get("name") or node.get("label") or node.get("id")
    described = f"{match.group(0)} ({node.get('type')} {label!r})"
    return described + location[match.end() :], message


def _answered_by_flow(response: httpx.Response, mark: str | None = None) -> bool:
    """Whether the flow's ``http response`` node answered (JSON), not Express's HTML 404; with
    ``mark``, the flow as deployed now, not the one it replaces (still answering for a moment)."""
    if response.status_code not in (200, 404):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict) or "status" not in body:
        return False
    return mark is None or body.get("flow") == mark


def _json(response: httpx.Response, operation: str, server: str) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError as exc:
        raise NodeRedServerError(
            f"Node-RED {server} answered {operation} with a body that is not JSON; check that "
            "the engine's URL points at Node-RED's httpAdminRoot",
            operation=operation,
            server=server,
        ) from exc


if TYPE_CHECKING:  # mypy proves that the engine keeps the whole contract
    from fluxo_core.engine import Engine

    _CONTRACT: type[Engine] = NodeRedEngine
