"""Node-RED flows in and out of Fluxo: ``fluxo import nodered`` and ``fluxo export --engine
nodered``, with a lossless round trip.

**Import** writes one workflow YAML per tab and subflow, and the flow file itself next to them
as a sidecar, ``<flow>.flow.json`` (the nodes as read). Each workflow names it in
``spec.source`` (``{format: nodered, file: <flow>.flow.json}``), so the YAML stays readable
however large the flow. Each workflow gets the engine that can run it as Node-RED does: ``step``
when the step engine's own check (:func:`engines.step.step_runnable`) accepts it, else
``nodered``, and the report says why, node by node (:func:`placements`).

**Apply** (``fluxo apply``, ``fluxo validate``): a workflow document whose ``spec.source`` names a
file is sent with the file's nodes inline, once per apply (:class:`Sidecars`: the other
workflows of the same file name it by digest); the control plane stores the flow once per
account by its digest, with the version.

**Export** (:func:`export_flow`) gives the original nodes back when the workflow is still what
its source imports to: its spec, apart from ``engine`` and ``source``, equals the spec the
stored flow imports to. Then the output is the source's nodes of that workflow (ids,
configuration, wires, subflow definitions, groups, junctions, links, config nodes) plus only what
Fluxo adds (the tab of an old-format file without one). A workflow edited since (a step changed,
added or removed) no longer matches: the export says which steps differ and generates the flow
from the workflow, as for any workflow authored in Fluxo.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from engines.step import native_problem, native_steps_by_node, step_runnable
from fluxo_core.errors import ConfigError, UnsupportedFeatureError, ValidationError
from fluxo_core.ir import NativeStep, Workflow, parse_json, validate_workflow, workflow_document
from translators import (
    FLOW_LIMITS,
    NodeRedImport,
    NodeRedOptions,
    check_flow,
    from_nodered,
    to_nodered,
    to_nodered_flows,
)
from translators.nodered import NodeFidelity, Trigger

__all__ = [
    "SIDECAR_SUFFIX",
    "EngineChoice",
    "ExportedFlow",
    "ImportedFile",
    "Placement",
    "Sidecars",
    "choose_engine",
    "collector_paused",
    "dump_yaml",
    "export_flow",
    "export_flows",
    "import_file",
    "json_bytes",
    "placements",
    "source_problem",
]

SIDECAR_SUFFIX = ".flow.json"
# libyaml's writer when PyYAML was built with it: about 4x faster than the pure-Python one on a
# 5,000-node import (bench/nodered_import.py), where writing YAML took most of the time.
_BASE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
YAML_WRITER = _BASE_DUMPER.__name__
_STR = "tag:yaml.org,2002:str"
_YAML_1_1_BOOLS = frozenset({"y", "Y", "n", "N"})


class _JsonDumper(_BASE_DUMPER):  # type: ignore[misc]
    """The safe dumper, with the nodes of JSON values (what a workflow document holds) made
    directly rather than through PyYAML's per-type dispatch, and tags resolved without its
    general path (both ran once per value of a large import). The nodes are the ones PyYAML
    makes, so the text is the same; anything else goes the general way.

    Strings follow the rule hera registers on PyYAML's safe dumper (``translators`` imports
    it, so it has always applied here): a multi-line string as a ``|`` block, the YAML 1.1
    booleans ``y``/``n`` quoted.
    """

    def represent_data(self, data: Any) -> Any:
        kind = type(data)
        if kind is str:
            if "\n" in data:
                return yaml.ScalarNode(_STR, data, style="|")
            return yaml.ScalarNode(_STR, data, style="'" if data in _YAML_1_1_BOOLS else None)
        if (kind is list or (kind is dict and not self.sort_keys)) and (
            self.default_flow_style is not None  # else PyYAML picks a style per node
        ):
            key = id(data)
            node = self.represented_objects.get(key)
            if node is not None:  # the same object again: PyYAML writes an alias
                return node
            self.object_keeper.append(data)
            if kind is dict:
                pairs: list[tuple[Any, Any]] = []
                node = yaml.MappingNode(
                    "tag:yaml.org,2002:map", pairs, flow_style=self.default_flow_style
                )
                self.represented_objects[key] = node
                for item_key, item_value in data.items():
                    pairs.append((self.represent_data(item_key), self.represent_data(item_value)))
                return node
            values: list[Any] = []
            node = yaml.SequenceNode(
                "tag:yaml.org,2002:seq", values, flow_style=self.default_flow_style
            )
            self.represented_objects[key] = node
            for item in data:
                values.append(self.represent_data(item))
            return node
        if kind is bool:
            return yaml.ScalarNode("tag:yaml.org,2002:bool", "true" if data else "false")
        if kind is int:
            return yaml.ScalarNode("tag:yaml.org,2002:int", str(data))
        if data is None:
            return yaml.ScalarNode("tag:yaml.org,2002:null", "null")
        return super().represent_data(data)

    # The writer asks these of every node. The safe resolver has no path resolvers, so tags
    # depend on the scalar's text alone: the general path's bookkeeping is skipped.
    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, pattern in self.yaml_implicit_resolvers.get(value[:1], ()):
                    if pattern.match(value):
                        return tag
            return _STR
        return super().resolve(kind, value, implicit)

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


# The shortcuts hold for the safe resolver as PyYAML ships it (no path or wildcard resolvers).
_YAML_DUMPER: Any = (
    _JsonDumper
    if not _BASE_DUMPER.yaml_path_resolvers and None not in _BASE_DUMPER.yaml_implicit_resolvers
    else _BASE_DUMPER
)
_STEP_KINDS = frozenset({"service", "switch", "transform", "split", "join", "delay"})

Runs = Literal["step engine and Node-RED", "Node-RED only", "nowhere"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one import or YAML write: both build many objects
    that all stay alive until they end, so its passes free nothing (as the translator does)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def dump_yaml(document: Any) -> str:
    """``document`` as block YAML in the given key order (the C writer when present)."""
    return str(yaml.dump(document, Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True))


# --- import --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where one node of an imported flow runs.

    Attributes:
        node_id, type, name, workflow, status, target: as in the fidelity report.
        runs: ``step engine and Node-RED``, ``Node-RED only`` or ``nowhere`` (dropped:
            editor-only, or a sink whose work Fluxo does itself).
        engine: the engine the import chose for the node's workflow (None for shared nodes).
        why: the reason, in words a user can act on.
    """

    node_id: str
    type: str
    name: str
    workflow: str | None
    status: str
    target: str | None
    runs: Runs
    engine: str | None
    why: str


@dataclass(frozen=True)
class ImportedFile:
    """What ``fluxo import nodered`` makes of one flow file.

    Attributes:
        result: the translator's import.
        engines: per workflow name, the engine chosen and why.
        documents: per workflow name, the YAML document to write (engine and source set).
        sidecar: the sidecar's file name.
        placements: every node, where it runs.
    """

    result: NodeRedImport
    engines: Mapping[str, EngineChoice]
    documents: Mapping[str, dict[str, Any]]
    sidecar: str
    placements: tuple[Placement, ...]

    def sidecar_bytes(self) -> bytes:
        """The flow's nodes as read, one node per line-indented object."""
        return json_bytes(list(self.result.source.nodes), indent=True)

    def yaml_texts(self) -> dict[str, str]:
        with collector_paused():
            return {name: dump_yaml(doc) for name, doc in self.documents.items()}


@dataclass(frozen=True)
class EngineChoice:
    """The engine an imported workflow is written with, and why.

    Attributes:
        engine: ``step`` when the step engine runs it as Node-RED runs the flow, else
            ``nodered``.
        why: the step engine's reasons for refusing it (empty on ``step``).
        refused: the Node-RED engine's reasons for refusing it too (its pre-deploy check of the
            generated flow): then no engine runs it as imported, and ``fluxo apply`` stores
            nothing; ``fluxo export FILE`` still gives the flow back.
    """

    engine: str
    why: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()


def choose_engine(workflow: Workflow, triggers: Sequence[Trigger]) -> EngineChoice:
    """Ask the step engine's check, then (when it refuses) the Node-RED engine's."""
    runnable, reasons = step_runnable(workflow, triggers)
    if runnable:
        return EngineChoice("step")
    try:
        problems = [f"{where}: {what}" for where, what in check_flow(to_nodered(workflow))]
    except UnsupportedFeatureError as exc:
        problems = [exc.message]
    return EngineChoice("nodered", tuple(reasons), tuple(problems))


def import_file(text: bytes | str, *, name: str) -> ImportedFile:
    """Import a flow file: the workflows with their engine and source, and the node report.

    Raises:
        ValidationError: the file is not a flow (from the translator), or, a bug, an imported
            workflow does not validate as written.
    """
    with collector_paused():
        return _import_file(text, name)


def _import_file(text: bytes | str, name: str) -> ImportedFile:
    result = from_nodered(text, name=name)
    sidecar = f"{name}{SIDECAR_SUFFIX}"
    engines = {w.metadata.name: choose_engine(w, result.triggers) for w in result.workflows}
    documents = {
        w.metadata.name: _document(w, engines[w.metadata.name].engine, sidecar)
        for w in result.workflows
    }
    for workflow_name, document in documents.items():
        try:  # what is written must apply: checked here, not found out by the user
            validate_workflow(document)
        except ValidationError as exc:
            raise ValidationError(
                f"the import of workflow {workflow_name!r} does not validate as written; this is "
                f"a bug of the Node-RED import, please report it with the flow: {exc.message}",
                problems=exc.problems,
            ) from exc
    return ImportedFile(result, engines, documents, sidecar, tuple(placements(result, engines)))


def _document(workflow: Workflow, engine: str, sidecar: str) -> dict[str, Any]:
    document = workflow_document(workflow)
    spec = {k: v for k, v in document["spec"].items() if k not in ("engine", "source")}
    document["spec"] = {
        "engine": engine,
        "source": {"format": "nodered", "file": sidecar},
        **spec,
    }
    return document


def placements(result: NodeRedImport, engines: Mapping[str, EngineChoice]) -> list[Placement]:
    """Every node of the import, with where it runs and why (file order)."""
    workflows = {w.metadata.name: w for w in result.workflows}
    # Each workflow's step problems, found once (per node it made large flows slow); none on the
    # step engine, whose check found no step it cannot run.
    problems_of = {
        name: {} if (chosen := engines.get(name)) and chosen.engine == "step" else _step_problems(w)
        for name, w in workflows.items()
    }
    node_steps: dict[str, list[str]] = {}
    for source in result.source.workflows.values():
        for step_id, node_id in source.step_nodes.items():
            node_steps.setdefault(node_id, []).append(step_id)
    out = []
    for entry in result.report.nodes:
        chosen = engines.get(entry.workflow or "")
        engine = chosen.engine if chosen else None
        runs, why = _placement(
            entry,
            workflows.get(entry.workflow or ""),
            problems_of.get(entry.workflow or "", {}),
            node_steps,
            chosen,
        )
        out.append(
            Placement(
                node_id=entry.node_id,
                type=entry.type,
                name=entry.name,
                workflow=entry.workflow,
                status=entry.status,
                target=entry.target,
                runs=runs,
                engine=engine,
                why=why,
            )
        )
    return out


def _placement(
    entry: NodeFidelity,
    workflow: Workflow | None,
    step_problems: Mapping[str, str],
    node_steps: Mapping[str, list[str]],
    chosen: EngineChoice | None,
) -> tuple[Runs, str]:
    if entry.status == "dropped":
        return "nowhere", entry.reason
    steps = node_steps.get(entry.node_id)
    if workflow is None or not steps:  # a tab, subflow or trigger: it is where its workflow is
        if chosen is not None and chosen.engine == "nodered":
            return "Node-RED only", f"{entry.reason}; its workflow runs on Node-RED only"
        return "step engine and Node-RED", entry.reason
    problems = [step_problems[s] for s in steps if s in step_problems]
    if problems:
        return "Node-RED only", "; ".join(problems)
    if entry.status == "native":
        why = (
            "kept as the node itself: the step engine runs it with the nodered-node service, "
            "Node-RED as it is"
        )
    else:
        why = entry.reason
    if chosen is not None and chosen.engine == "nodered":
        why += "; its workflow runs on Node-RED, as other nodes of it do not run on the step engine"
    return "step engine and Node-RED", why


def _step_problems(workflow: Workflow) -> dict[str, str]:
    """Why the step engine cannot run each step of ``workflow`` that it cannot run."""
    by_node = native_steps_by_node(workflow)
    return {
        step.id: problem
        for step in workflow.spec.steps
        if (problem := _step_problem(step, workflow, by_node)) is not None
    }


def _step_problem(step: Any, workflow: Workflow, by_node: Mapping[str, set[str]]) -> str | None:
    if step.kind in _STEP_KINDS:
        return None
    if isinstance(step, NativeStep):
        return native_problem(step, workflow, by_node)
    return f"a {step.kind} step, which the step engine does not run"


def report_json(imported: ImportedFile) -> dict[str, Any]:
    """The report as ``fluxo import nodered --json`` prints it."""
    report = imported.result.report
    return {
        "counts": report.counts(),
        "workflows": [
            {
                "name": name,
                "engine": choice.engine,
                "why": list(choice.why),
                "runnable": not choice.refused,
                "refused": list(choice.refused),
            }
            for name, choice in imported.engines.items()
        ],
        "nodes": [asdict(p) for p in imported.placements],
        "notes": list(report.notes),
    }


def report_lines(imported: ImportedFile) -> list[str]:
    """The report as ``fluxo import nodered`` prints it."""
    result = imported.result
    counts = result.report.counts()
    step = sum(1 for choice in imported.engines.values() if choice.engine == "step")
    lines = [
        f"{len(result.workflows)} workflow(s), {step} on the step engine; {counts['mapped']} "
        f"node(s) mapped, {counts['native']} kept native, {counts['dropped']} dropped"
    ]
    for name, choice in imported.engines.items():
        why = (
            "the step engine runs it as Node-RED does"
            if choice.engine == "step"
            else "; ".join(choice.why) or "not runnable on the step engine"
        )
        lines.append(f"  workflow {name}: engine {choice.engine}: {why}")
        if choice.refused:
            lines.append(
                f"  workflow {name}: no engine runs it as imported (apply stores nothing); the "
                f"Node-RED engine refuses its flow: {'; '.join(choice.refused)}"
            )
    for p in imported.placements:
        if p.status != "mapped" or p.runs != "step engine and Node-RED":
            label = p.name or p.node_id
            lines.append(f"  {p.runs:24} {p.type:16} {label}: {p.why}")
    lines += [f"  note: {note}" for note in result.report.notes]
    return lines


# --- apply and validate --------------------------------------------------------------------------


class Sidecars:
    """The flow files that workflow documents name (``spec.source.file``), each read once.

    :meth:`attach` gives the first document naming a file its flow inline and the next ones
    only its digest, so one apply sends a flow once however many workflows (tabs) came from it:
    the control plane keeps the flow it was sent until a version stores it.
    """

    def __init__(self) -> None:
        self._read: dict[Path, tuple[list[dict[str, Any]], str]] = {}
        self._sent: set[Path] = set()

    def read(self, folder: Path, name: str, *, where: str) -> tuple[list[dict[str, Any]], str]:
        """The nodes of sidecar ``name`` in ``folder`` and their digest (as the control plane
        computes it: the sha256 of their compact JSON).

        Raises:
            ConfigError: the file cannot be read, or ``name`` is not a plain file name.
            ValidationError: it is not a flow, or is over the flow import limit.
        """
        if Path(name).name != name:
            raise ConfigError(
                f"{where} spec.source.file: {name!r} must be a file name in the workflow file's "
                "folder (no directories)"
            )
        path = (folder / name).resolve()
        found = self._read.get(path)
        if found is not None:
            return found
        try:
            with path.open("rb") as handle:
                raw = handle.read(FLOW_LIMITS.max_bytes + 1)
        except OSError as exc:
            raise ConfigError(
                f"{where} spec.source.file: cannot read {path}: {exc.strerror}; keep the flow "
                "file `fluxo import nodered` wrote next to the workflow, or remove spec.source "
                "(an export then generates the flow)"
            ) from exc
        data = parse_json(raw, limits=FLOW_LIMITS, where=str(path))
        if isinstance(data, dict) and isinstance(data.get("flows"), list):
            data = data["flows"]  # the Admin API's {flows, rev}
        if not isinstance(data, list) or not all(isinstance(n, dict) for n in data):
            raise ValidationError(
                f"{where} spec.source.file: {path} is not a Node-RED flow (a JSON array of nodes)",
                problems=[(f"{where} spec.source.file", "not a JSON array of nodes")],
            )
        found = (data, hashlib.sha256(json_bytes(data)).hexdigest())
        self._read[path] = found
        return found

    def attach(self, document: Any, folder: Path, *, where: str) -> Any:
        """``document`` with the flow its ``spec.source`` names (inline the first time, by
        digest after); other documents as they are."""
        ref = _source_ref(document)
        if ref is None:
            return document
        nodes, digest = self.read(folder, ref["file"], where=where)
        path = (folder / ref["file"]).resolve()
        sent = {"flow": nodes} if path not in self._sent else {"sha256": digest}
        self._sent.add(path)
        spec = document["spec"]
        return {**document, "spec": {**spec, "source": {**ref, **sent}}}

    def flow_of(self, workflow: Workflow, folder: Path) -> list[dict[str, Any]] | None:
        """The flow a workflow read by :meth:`attach` names (None without ``spec.source``)."""
        source = workflow.spec.source
        if source is None:
            return None
        return source.flow or self.read(folder, source.file, where=workflow.metadata.name)[0]


def _source_ref(document: Any) -> dict[str, Any] | None:
    """The ``spec.source`` of a workflow document that names a file and carries no flow."""
    if not isinstance(document, dict) or document.get("kind") != "Workflow":
        return None
    spec = document.get("spec")
    source = spec.get("source") if isinstance(spec, dict) else None
    if (
        not isinstance(source, dict)
        or "flow" in source
        or "sha256" in source
        or not isinstance(source.get("file"), str)
    ):
        return None
    return source


# --- export --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedFlow:
    """A workflow as a Node-RED flow.

    Attributes:
        nodes: the flow.
        from_source: whether the nodes are the imported flow's (else generated).
        note: why the source was not used (None when it was, or when there is none).
    """

    nodes: list[dict[str, Any]]
    from_source: bool
    note: str | None = None


def export_flow(
    workflow: Workflow, source_flow: Any | None, *, options: NodeRedOptions
) -> ExportedFlow:
    """``workflow`` as a Node-RED flow: its source's nodes when it still matches them (see the
    module's rule), else generated.

    Args:
        source_flow: the flow ``spec.source`` names (nodes, or their JSON), None without one.
    """
    if source_flow is None:
        return ExportedFlow(_generated(workflow, options), False)
    imported = from_nodered(source_flow, name=workflow.metadata.name)
    origin, note = _origin(workflow, imported)
    if origin is None:
        return ExportedFlow(_generated(workflow, options), False, note)
    return ExportedFlow(to_nodered(origin, source=imported.source), True)


def export_flows(
    workflows: Sequence[Workflow], source_flow: Any | None, *, options: NodeRedOptions
) -> tuple[list[dict[str, Any]], list[str]]:
    """Several workflows of one source as one flow, and why any was generated: the source is
    imported once, and the workflows that still match it are exported together in one pass
    over its nodes (a file of many tabs)."""
    if source_flow is None:
        flows = [export_flow(w, None, options=options) for w in workflows]
        return merged([f.nodes for f in flows]), [f.note for f in flows if f.note]
    imported = from_nodered(source_flow, name=workflows[0].metadata.name if workflows else "flow")
    matching: list[Workflow] = []
    generated: list[list[dict[str, Any]]] = []
    notes: list[str] = []
    for workflow in workflows:
        origin, note = _origin(workflow, imported)
        if origin is None:
            generated.append(_generated(workflow, options))
            notes.append(str(note))
        else:
            matching.append(origin)
    original = to_nodered_flows(matching, source=imported.source) if matching else []
    return merged([original, *generated]), notes


def source_problem(workflow: Workflow, flow: Any) -> str | None:
    """Why ``workflow`` no longer matches ``flow``, the flow its ``spec.source`` names (None
    when it matches: an export gives the flow back)."""
    return _origin(workflow, from_nodered(flow, name=workflow.metadata.name))[1]


def _origin(workflow: Workflow, imported: NodeRedImport) -> tuple[Workflow | None, str | None]:
    """The workflow as its source imports to, when ``workflow`` still matches it; else None and
    why not."""
    name = workflow.metadata.name
    origin = imported.source.workflows.get(name)
    if origin is None:
        names = ", ".join(sorted(imported.source.workflows)) or "none"
        return None, (
            f"workflow {name!r} is not in its source flow {_file(workflow)} (its workflows: "
            f"{names}); the flow is generated from the workflow"
        )
    changed = edited_steps(workflow, origin.imported)
    if changed:
        return None, (
            f"workflow {name!r} was edited since its import from {_file(workflow)} "
            f"({', '.join(changed)}); the flow is generated from the workflow, not the source"
        )
    return origin.imported, None


def _generated(workflow: Workflow, options: NodeRedOptions) -> list[dict[str, Any]]:
    if workflow.spec.source is not None:  # the flow travels beside the workflow, never in it
        spec = workflow.spec.model_copy(update={"source": None})
        workflow = workflow.model_copy(update={"spec": spec})
    return to_nodered(workflow, options=options)


def merged(flows: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Several exported flows as one: a node they share (a config node, a subflow) once."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for flow in flows:
        for node in flow:
            if node["id"] not in seen:
                seen.add(node["id"])
                out.append(dict(node))
    return out


def edited_steps(workflow: Workflow, imported: Workflow) -> list[str]:
    """What differs between ``workflow`` and the workflow its source imports to, apart from the
    fields the import itself chooses (``engine``, ``source``): ``step 'x' changed``, ``step 'y'
    added``, ``start``... (empty when nothing does)."""
    same_choices = {"engine": imported.spec.engine, "source": imported.spec.source}
    if workflow.spec.model_copy(update=same_choices) == imported.spec:
        return []  # equal values dump equal: the usual case, found without dumping both
    mine = _behaviour(workflow)
    theirs = _behaviour(imported)
    if mine == theirs:
        return []
    my_steps = {s["id"]: s for s in mine.pop("steps", [])}
    their_steps = {s["id"]: s for s in theirs.pop("steps", [])}
    out = [
        f"step {sid!r} changed"
        for sid in my_steps
        if sid in their_steps and my_steps[sid] != their_steps[sid]
    ]
    out += [f"step {sid!r} added" for sid in my_steps if sid not in their_steps]
    out += [f"step {sid!r} removed" for sid in their_steps if sid not in my_steps]
    out += [
        f"spec.{key} changed"
        for key in sorted(set(mine) | set(theirs))
        if mine.get(key) != theirs.get(key)
    ]
    return out or ["the step order changed"]


def _behaviour(workflow: Workflow) -> dict[str, Any]:
    return workflow.spec.model_dump(
        mode="json", exclude_defaults=True, by_alias=True, exclude={"engine", "source"}
    )


def _file(workflow: Workflow) -> str:
    source = workflow.spec.source
    return source.file if source is not None else "its source"


def json_bytes(value: Any, *, indent: bool = False) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    except (orjson.JSONEncodeError, TypeError):  # integers over 64 bits: the slow writer
        return json.dumps(value, indent=2 if indent else None).encode()
