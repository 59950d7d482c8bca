"""The public data types of the Node-RED translator (re-exported by :mod:`translators.nodered`)."""

from __future__ import annotations

import copy
import functools
import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from fluxo_core.ir import Workflow
from translators._names import account_label

__all__ = [
    "FidelityReport",
    "FidelityStatus",
    "NodeFidelity",
    "NodeRedImport",
    "NodeRedOptions",
    "NodeRedSource",
    "Trigger",
    "WorkflowSource",
    "flow_key",
    "stable_id",
]

FidelityStatus = Literal["mapped", "native", "dropped"]


def stable_id(*parts: str) -> str:
    """A Node-RED style id (16 hex digits) derived from ``parts``: the same parts, the same id."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def flow_key(account: str | None, ref: str) -> str:
    """What the ids of a generated flow derive from: ``account/name@version`` (``name@version``
    for a workflow of no account; ``name`` before it has a version). Workflow names are unique
    only in their account, so two accounts' tabs on one Node-RED must differ by the account."""
    return ref if account is None else f"{account}/{ref}"


@dataclass(frozen=True)
class NodeFidelity:
    """What became of one node of an imported flow.

    Attributes:
        node_id: the node's id in the flow file.
        type: its Node-RED type (``change``, ``tab``, ``mqtt-broker`` ...).
        name: its name or label ('' when it has none).
        workflow: the IR workflow it belongs to (None for shared config nodes).
        status: ``mapped`` (it became an IR workflow, step or trigger), ``native`` (kept verbatim
            as a ``native`` step; runs only on Node-RED) or ``dropped`` (no IR counterpart).
            Every node, dropped ones included, is kept in :class:`NodeRedSource` and comes back on
            export.
        target: what it became: ``step 'route'``, ``trigger cron``, ``workflow 'orders'``.
        reason: why, in words a user can act on.
    """

    node_id: str
    type: str
    name: str
    workflow: str | None
    status: FidelityStatus
    target: str | None
    reason: str


@dataclass(frozen=True)
class FidelityReport:
    """Every node of an imported flow, classified (in file order), plus notes on the graph.

    Attributes:
        nodes: one entry per node of the file.
        notes: findings that concern wiring rather than one node (loops cut, dangling wires,
            several entry points).
    """

    nodes: tuple[NodeFidelity, ...]
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """How many nodes were mapped, kept native and dropped."""
        found = Counter(entry.status for entry in self.nodes)
        return {status: found.get(status, 0) for status in ("mapped", "native", "dropped")}

    def by_status(self, status: FidelityStatus) -> list[NodeFidelity]:
        return [entry for entry in self.nodes if entry.status == status]

    def get(self, node_id: str) -> NodeFidelity:
        """The entry of ``node_id`` (KeyError when the file has no such node)."""
        for entry in self.nodes:
            if entry.node_id == node_id:
                return entry
        raise KeyError(node_id)

    def lines(self) -> list[str]:
        """A plain-text table: one line per node, then the notes."""
        out = [
            f"{e.status:<8} {e.type:<16} {e.node_id:<18} {e.target or '-'}: {e.reason}"
            for e in self.nodes
        ]
        return out + [f"note: {note}" for note in self.notes]


@dataclass(frozen=True)
class Trigger:
    """A Node-RED entry node read as a Fluxo trigger (``inject`` or ``http in``).

    Attributes:
        kind: ``cron`` (inject with a schedule or an interval), ``manual`` (inject without
            either) or ``api`` (http in).
        workflow: the workflow it starts.
        node_id: the node it was read from.
        start: the steps it feeds.
        entry: on a tab with several triggers, the step a job this trigger starts names in its
            ``fluxo-entry`` header (:data:`fluxo_core.ir.ENTRY_HEADER`): the job runs only what
            this trigger starts, as on Node-RED. None when the workflow's start is its own.
        schedule: the cron expression (inject ``crontab``).
        interval_s: the repeat interval of an inject, in seconds.
        once: whether the inject fires once when the flow is deployed.
        payload: what the inject sends, when it is a literal (else None).
        sets: the message properties an inject sets (``payload``, ``topic``, ``reset``...).
        method, path: the HTTP method and path of an ``http in`` node.
    """

    kind: Literal["cron", "manual", "api"]
    workflow: str
    node_id: str
    name: str | None
    start: tuple[str, ...]
    schedule: str | None = None
    interval_s: float | None = None
    once: bool = False
    payload: Any = None
    sets: tuple[str, ...] = ()
    method: str | None = None
    path: str | None = None
    entry: str | None = None


@dataclass(frozen=True)
class WorkflowSource:
    """Where one imported workflow came from in the flow file.

    Attributes:
        container: the id of the tab or subflow (or the shared ``z`` of an old-format file).
        has_tab: whether the file holds the tab/subflow node itself (old-format files do not).
        label: the tab's label (or the name given to a file without tabs).
        imported: the workflow exactly as imported; an export compares against it to tell the
            steps edited in Fluxo from those that can go back verbatim.
        step_nodes: step id -> the id of the node it came from.
        node_ids: every node the workflow owns (its tab, its nodes, in file order).
        step_calls: step id -> the link call and subflow instance nodes it runs within,
            outermost first, for the steps of a copy the import made of the nodes a link call
            runs or a subflow holds (absent: within none).
    """

    container: str
    has_tab: bool
    label: str
    imported: Workflow
    step_nodes: Mapping[str, str]
    node_ids: tuple[str, ...]
    step_calls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeRedSource:
    """The flow file an import came from: the sidecar that makes the round trip lossless.

    The IR keeps only what it can express (its models forbid extra fields), so everything else
    (positions, groups, comments, config nodes, loops, the exact node configuration of mapped
    steps) lives here. Keep it next to the workflows (the Node-RED engine stores it with the
    deployment) and pass it to :func:`~translators.nodered.to_nodered`.

    Attributes:
        nodes: every node of the file, in file order, as read.
        workflows: by workflow name.
        owner: node id -> the workflow that owns it (config nodes and the like have none).
    """

    nodes: tuple[Mapping[str, Any], ...]
    workflows: Mapping[str, WorkflowSource]
    owner: Mapping[str, str] = field(default_factory=dict)

    @functools.cached_property
    def by_id(self) -> dict[str, Mapping[str, Any]]:
        """The nodes by id, built once (an export looks nodes up for every workflow)."""
        return {str(n["id"]): n for n in self.nodes}


@dataclass(frozen=True)
class NodeRedImport:
    """What :func:`~translators.nodered.from_nodered` returns.

    Attributes:
        workflows: one per tab, per subflow and per ``z`` of an old-format file, in file order.
        report: the fidelity report: every node, mapped / native / dropped, with the reason.
        triggers: the ``inject`` and ``http in`` nodes, read as triggers.
        source: the flow file, for a lossless export.
    """

    workflows: tuple[Workflow, ...]
    report: FidelityReport
    triggers: tuple[Trigger, ...]
    source: NodeRedSource

    def workflow(self, name: str) -> Workflow:
        """The imported workflow called ``name`` (KeyError when there is none)."""
        for workflow in self.workflows:
            if workflow.metadata.name == name:
                return workflow
        raise KeyError(name)


@dataclass(frozen=True)
class NodeRedOptions:
    """How a generated flow reaches Fluxo.

    Attributes:
        fluxo_url: the Fluxo API as Node-RED sees it (the gateway and the event endpoint).
        token_env: the environment variable holding the API token the flow sends as
            ``Authorization: Bearer ...`` (never written into the flow). A workflow of an
            account reads ``{token_env}_{ACCOUNT}`` first (see :meth:`token_envs`), so one
            Node-RED can hold one engine token per account.
        entry_root: where the entry ``http in`` nodes live; a workflow's entry is
            ``{entry_root}/{account}/{name}/{version}`` (see :meth:`entry_path`).
        events_path: where completion and error reports go (POST, JSON).
        call_wait_s: how long a service call waits for its result when the step sets no
            ``timeout_s`` (the gateway's ``?wait=``).
    """

    fluxo_url: str = "http://127.0.0.1:8080"
    token_env: str = "FLUXO_TOKEN"
    entry_root: str = "/fluxo/jobs"
    events_path: str = "/v1/engine-events"
    call_wait_s: float = 30.0

    def token_envs(self, account: str | None) -> list[str]:
        """The variables a workflow of ``account`` reads its token from, first set wins:
        ``FLUXO_TOKEN_ACME_CORP`` (the account id upper-cased, every other character than a
        letter or digit an ``_``) for account ``acme-corp``, then ``FLUXO_TOKEN``."""
        if account is None:
            return [self.token_env]
        suffix = re.sub(r"[^A-Z0-9]", "_", account.upper())
        return [f"{self.token_env}_{suffix}", self.token_env]

    def entry_path(self, account: str | None, ref: str) -> str:
        """The route of the entry ``http in`` of workflow ``ref`` (``name[@version]``) of
        ``account``: ``{entry_root}/{account label}/{name}/{version}``, e.g.
        ``/fluxo/jobs/acme/order-intake/3``; without an account ``{entry_root}/{name}/{version}``;
        without a version, no ``/{version}``. The account label is the account id when it is a
        lowercase DNS label, else a cleaned form with a hash of the id
        (:func:`~translators._names.account_label`): Node-RED matches routes case-insensitively
        and reads ``:`` as a route parameter."""
        name, _, version = ref.partition("@")
        parts = [self.entry_root.rstrip("/")]
        if account is not None:
            parts.append(account_label(account))
        parts.append(name)
        if version:
            parts.append(version)
        return "/".join(parts)


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (what a flow file holds), many times faster than
    ``copy.deepcopy``: imports and exports copy every node. Data orjson cannot write as it is
    (integers over 64 bits, non-string keys, NaN) is copied with ``copy.deepcopy``."""
    try:
        data = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return copy.deepcopy(value)
    if b"null" in data and _has_nan(value):  # orjson writes NaN and infinities as null
        return copy.deepcopy(value)
    return orjson.loads(data)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nan(v) for v in value)
    return False
