"""Validation of workflow documents: every problem at once, each with its location and its fix.

::

    IRValidationError: invalid workflow 'orders': fix the problems listed below
      spec.steps[2].kind: unknown kind 'servce' (did you mean 'service'?); use one of ...
      spec.steps[3].next[0]: unknown step 'shipp' (did you mean 'ship'?)
      spec.steps[5]: step 'audit' is unreachable from the start step 'enrich': route to it ...

:func:`validate_workflow` checks a decoded document; :func:`load_workflows_yaml` checks a
multi-document YAML text (locations then start with ``doc[n]``, messages end with the line);
:func:`graph_problems` runs the cross-node checks alone. It reads the raw document and skips the
parts that are malformed (the field checks report those), so one pass reports the graph problems
of a document whose fields are also wrong.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import jsonschema
import pydantic
import yaml
from pydantic import BaseModel, Tag
from pydantic.fields import FieldInfo

from fluxo_core.errors import IRValidationError, Problem
from fluxo_core.ir._problems import format_location
from fluxo_core.ir.documents import DEFAULT_LIMITS, DocumentLimits, parse_yaml_documents
from fluxo_core.ir.workflow import (
    PATTERN_HINTS,
    STEP_KINDS,
    DelayStep,
    JoinStep,
    NativeStep,
    SplitStep,
    SwitchStep,
    TransformStep,
    Workflow,
    WorkflowCallStep,
)

__all__ = ["graph_problems", "load_workflows_yaml", "validate_workflow"]


def validate_workflow(data: Any, *, known_services: Collection[str] | None = None) -> Workflow:
    """Validate a decoded workflow document (from JSON or YAML) into a :class:`Workflow`.

    Args:
        data: the document, e.g. ``{"apiVersion": "fluxo.dev/v1", "kind": "Workflow", ...}``.
        known_services: the services that exist, as ``name`` (any version) or ``name@version``;
            ``service`` and ``workflow`` steps are checked against them (a workflow is called
            through the service it is published as). None skips that check.

    Returns:
        The validated workflow.

    Raises:
        IRValidationError: listing every problem, field and graph, each with its location and fix.
    """
    workflow, problems, cause = _validate(data, known_services)
    if workflow is None:
        name = _name_of(data)
        raise IRValidationError(
            f"invalid workflow{f' {name!r}' if name else ''}: fix the problems listed below",
            problems=problems,
            workflow=name,
        ) from cause
    return workflow


def load_workflows_yaml(
    text: str | bytes,
    *,
    known_services: Collection[str] | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> list[Workflow]:
    """Validate every workflow of a multi-document YAML text (``---`` between documents).

    Locations start with the document's index (``doc[1].spec.steps[3].next[0]``) and messages end
    with the line. Empty documents are skipped. With ``known_services``, the workflows of the text
    count as known too, so one may call another. The text is read within ``limits`` (see
    :mod:`fluxo_core.ir.documents`).

    Raises:
        MalformedRequestError: the text is not YAML (the problem names the line and column).
        PayloadTooLargeError, DocumentTooComplexError: the text is over ``limits``.
        IRValidationError: listing every problem of every document.
    """
    docs = parse_yaml_documents(text, limits=limits, where="doc")
    known = None
    if known_services is not None:
        known = {*known_services, *(w for _, _, d in docs if (w := _name_of(d)) is not None)}
    workflows: list[Workflow] = []
    problems: list[Problem] = []
    first_doc: dict[str, int] = {}
    for n, node, data in docs:
        workflow, found, _ = _validate(data, known)
        name = _name_of(data)
        if name is not None and name in first_doc:
            found.append(
                (
                    "metadata.name",
                    f"workflow {name!r} is also defined in doc[{first_doc[name]}]: "
                    "rename one or remove the repeat",
                )
            )
        elif name is not None:
            first_doc[name] = n
        for where, message in found:
            location = f"doc[{n}].{where}" if where else f"doc[{n}]"
            problems.append((location, f"{message} (line {_line_of(node, where)})"))
        if workflow is not None and not found:
            workflows.append(workflow)
    if problems:
        raise IRValidationError(
            "invalid workflow YAML: fix the problems listed below", problems=problems
        )
    return workflows


def graph_problems(data: Any, *, known_services: Collection[str] | None = None) -> list[Problem]:
    """The cross-node problems of a raw workflow document, in document order.

    Checks: duplicate step ids; ``next``, switch ``cases[].next`` and ``default``,
    ``on_error.goto``, ``spec.start``, ``spec.output`` and ``join.split`` naming unknown steps (with
    a did-you-mean); a target listed twice; cycles (with their path); steps unreachable from the
    start; joins without a matching upstream split, and splits with two joins; native steps on an
    engine other than their own; unknown services and workflows (when ``known_services`` is
    given); an ``input_schema`` that is not a valid JSON Schema (draft 2020-12).
    """
    spec = data.get("spec") if isinstance(data, Mapping) else None
    if not isinstance(spec, Mapping):
        return []
    raw = spec.get("steps")
    steps = (
        [(i, s) for i, s in enumerate(raw) if isinstance(s, Mapping)]
        if isinstance(raw, list)
        else []
    )
    problems: list[Problem] = []

    index: dict[str, int] = {}  # step id -> position of its first definition
    for i, step in steps:
        sid = step.get("id")
        if isinstance(sid, str) and sid in index:
            problems.append(
                (
                    f"spec.steps[{i}].id",
                    f"duplicate step id {sid!r} (also spec.steps[{index[sid]}]): "
                    "give every step its own id",
                )
            )
        elif isinstance(sid, str):
            index[sid] = i
    kinds = {sid: raw[i].get("kind") for sid, i in index.items()}  # type: ignore[index]

    graph: dict[str, list[tuple[str, str]]] = {sid: [] for sid in index}  # id -> [(target, where)]
    for i, step in steps:
        sid = step.get("id")
        for where, target in _edges(step, f"spec.steps[{i}]", problems):
            if target not in index:
                problems.append((where, _unknown_step(target, index)))
            elif isinstance(sid, str) and index[sid] == i:
                graph[sid].append((target, where))

    for key in ("start", "output"):
        ref = spec.get(key)
        if isinstance(ref, str) and ref not in index:
            problems.append((f"spec.{key}", _unknown_step(ref, index)))

    problems += _cycles(graph)
    start = spec.get("start")
    if start is None and steps and steps[0][0] == 0:
        start = steps[0][1].get("id")
    if isinstance(start, str) and start in index:
        reached = _reachable(graph, start)
        for sid, i in index.items():
            if sid not in reached:
                problems.append(
                    (
                        f"spec.steps[{i}]",
                        f"step {sid!r} is unreachable from the start step {start!r}: route to it "
                        "with next, a switch case or on_error.goto, or remove it",
                    )
                )

    problems += _join_problems(steps, index, kinds, graph)
    problems += _native_problems(spec.get("engine"), steps)
    if known_services is not None:
        problems += _service_problems(steps, known_services)
    schema = spec.get("input_schema")
    if isinstance(schema, Mapping):
        problems += _schema_problems(schema)
    return _ordered(problems)


# --- graph checks --------------------------------------------------------------------------------


def _edges(step: Mapping[str, Any], where: str, problems: list[Problem]) -> list[tuple[str, str]]:
    """Every outgoing edge as ``(location, target)``; a target repeated in one list is reported."""
    lists: list[tuple[str, Any]] = [(f"{where}.{k}", step.get(k)) for k in ("next", "default")]
    cases = step.get("cases")
    if isinstance(cases, list):
        lists += [
            (f"{where}.cases[{c}].next", case.get("next"))
            for c, case in enumerate(cases)
            if isinstance(case, Mapping)
        ]
    edges: list[tuple[str, str]] = []
    for list_where, targets in lists:
        if not isinstance(targets, list):
            continue
        seen: set[str] = set()
        for j, target in enumerate(targets):
            if not isinstance(target, str):
                continue
            if target in seen:
                problems.append(
                    (f"{list_where}[{j}]", f"step {target!r} is listed twice: remove the repeat")
                )
                continue
            seen.add(target)
            edges.append((f"{list_where}[{j}]", target))
    on_error = step.get("on_error")
    if isinstance(on_error, Mapping) and isinstance(on_error.get("goto"), str):
        edges.append((f"{where}.on_error.goto", on_error["goto"]))
    return edges


def find_cycles(graph: Mapping[str, Sequence[tuple[str, str]]]) -> list[tuple[str, str]]:
    """Every back edge of ``graph`` (node -> [(target, location of the edge)]), as
    ``(location, "a -> b -> a")``: one per cycle-closing edge, in a stable order."""
    found: list[tuple[str, str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in state:
            continue
        path, stack = [root], [iter(graph[root])]
        state[root] = 1
        while stack:
            for target, where in stack[-1]:
                if state.get(target) == 1:
                    found.append((where, " -> ".join([*path[path.index(target) :], target])))
                elif target not in state:
                    state[target] = 1
                    path.append(target)
                    stack.append(iter(graph[target]))
                    break
            else:
                state[path.pop()] = 2
                stack.pop()
    return found


def _cycles(graph: Mapping[str, Sequence[tuple[str, str]]]) -> list[Problem]:
    """One problem per back edge, located at the edge, naming the cycle it closes."""
    return [
        (
            where,
            f"cycle {cycle}: a workflow must be acyclic; repeat attempts with retry, repeat "
            "over items with split",
        )
        for where, cycle in find_cycles(graph)
    ]


def _reachable(graph: Mapping[str, Sequence[tuple[str, str]]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target, _ in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _join_problems(
    steps: Sequence[tuple[int, Mapping[str, Any]]],
    index: Mapping[str, int],
    kinds: Mapping[str, Any],
    graph: Mapping[str, Sequence[tuple[str, str]]],
) -> list[Problem]:
    problems: list[Problem] = []
    joined: dict[str, str] = {}  # split id -> its join
    splits = [sid for sid, kind in kinds.items() if kind == "split"]
    for i, step in steps:
        split, sid = step.get("split"), step.get("id")
        if step.get("kind") != "join" or not isinstance(split, str):
            continue
        where = f"spec.steps[{i}].split"
        if split not in index:
            hint = _did_you_mean(split, splits)
            fix = hint or (f": use one of {_listing(splits)}" if splits else ": add a split step")
            problems.append((where, f"unknown split step {split!r}{fix}"))
        elif kinds[split] not in ("split", "service"):
            problems.append(
                (
                    where,
                    f"step {split!r} is a {kinds[split]} step: name the split whose items, or "
                    "the service step whose output packets, this join gathers",
                )
            )
        elif isinstance(sid, str) and sid in graph and sid not in _reachable(graph, split):
            problems.append(
                (
                    where,
                    f"join {sid!r} is not downstream of split {split!r}: put it on a path that "
                    f"starts at {split!r}",
                )
            )
        elif split in joined:
            problems.append(
                (
                    where,
                    f"split {split!r} is already gathered by join {joined[split]!r}: a split has "
                    "at most one join",
                )
            )
        elif isinstance(sid, str):
            joined[split] = sid
    return problems


# Which engines may be asked to run a native step of each engine. The step engine interprets
# some Node-RED nodes itself (function, template, json, csv): whether it can run a given node is
# its deploy's decision, which names the node; the IR only rules out what can never work.
NATIVE_HOSTS: dict[str, set[str]] = {"nodered": {"nodered", "step"}}


def _native_problems(engine: Any, steps: Sequence[tuple[int, Mapping[str, Any]]]) -> list[Problem]:
    natives = [
        (i, s["engine"])
        for i, s in steps
        if s.get("kind") == "native" and isinstance(s.get("engine"), str)
    ]
    problems: list[Problem] = []
    for i, own in natives:
        where = f"spec.steps[{i}].engine"
        if isinstance(engine, str) and engine not in NATIVE_HOSTS.get(own, {own}):
            problems.append(
                (
                    where,
                    f"a native {own} step cannot run on the {engine!r} engine: set "
                    f"spec.engine: {own} or replace the step with portable steps",
                )
            )
        elif not isinstance(engine, str) and own != natives[0][1]:
            problems.append(
                (
                    where,
                    f"this native step needs the {own} engine but spec.steps[{natives[0][0]}] "
                    f"needs {natives[0][1]}: a workflow runs on one engine",
                )
            )
    return problems


def _service_problems(
    steps: Sequence[tuple[int, Mapping[str, Any]]], known_services: Collection[str]
) -> list[Problem]:
    catalog: dict[str, set[str | None]] = {}
    for entry in known_services:
        name, _, version = entry.partition("@")
        catalog.setdefault(name, set()).add(version or None)
    problems: list[Problem] = []
    for i, step in steps:
        kind = step.get("kind")
        ref = step.get(kind) if kind in ("service", "workflow") else None
        if not isinstance(ref, str):
            continue
        name, _, version = ref.partition("@")
        where = f"spec.steps[{i}].{kind}"
        if name not in catalog:
            hint = _did_you_mean(name, catalog)
            fix = "" if hint else f": publish the {kind} first or fix the name"
            also = " (no service of that name)" if kind == "workflow" and not hint else ""
            problems.append((where, f"unknown {kind} {name!r}{also}{hint}{fix}"))
        elif version and None not in catalog[name] and version not in catalog[name]:
            versions = sorted(v for v in catalog[name] if v is not None)
            problems.append(
                (
                    where,
                    f"{kind} {name!r} has no version {version!r}: use one of "
                    f"{_listing(versions)}, or drop @{version} for the latest",
                )
            )
    return problems


_JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")


def _schema_problems(schema: Mapping[str, Any]) -> list[Problem]:
    meta = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    problems: list[Problem] = []
    for err in meta.iter_errors(schema):
        path = list(err.absolute_path)
        hint = ""
        if path and path[-1] == "type" and isinstance(err.instance, str):
            hint = _did_you_mean(err.instance, _JSON_TYPES)
        problems.append(
            (
                format_location(path, "spec.input_schema"),
                f"not a valid JSON Schema (draft 2020-12): {err.message}{hint}",
            )
        )
    return problems


# --- field problems: pydantic's errors, located in the user's terms and with a fix ---------------


def _validate(
    data: Any, known: Collection[str] | None
) -> tuple[Workflow | None, list[Problem], Exception | None]:
    if isinstance(data, Workflow):
        data = data.model_dump()  # revalidate: the known services may not have been checked
    try:
        return Workflow.model_validate(data, context={"known_services": known}), [], None
    except IRValidationError as exc:  # fields fine, graph not (raised by Workflow's validator)
        return None, exc.problems, exc
    except pydantic.ValidationError as exc:
        problems = _field_problems(exc, data) + graph_problems(data, known_services=known)
        return None, _ordered(problems), exc


def _field_problems(exc: pydantic.ValidationError, data: Any) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc, owner, tp = _resolve(err["loc"])
        message = _field_message(err, loc, owner, tp)
        disc = (err.get("ctx") or {}).get("discriminator")
        if err["type"].startswith("union_tag_") and isinstance(disc, str):
            loc = [*loc, disc.strip("'")]  # a bad or missing `kind` is the kind field's problem
        problems.append((format_location(loc), message))
    return problems


def _resolve(loc: Sequence[int | str]) -> tuple[list[int | str], type[BaseModel] | None, Any]:
    """Drop the union-member names pydantic puts in locations; find the model owning the last part.

    Returns the cleaned location, the model whose field the last part is (None after a list
    index) and the type expected at the location.
    """
    tp: Any = Workflow
    clean: list[int | str] = []
    owner: type[BaseModel] | None = None
    for part in loc:
        members = _members(tp)
        if len(members) > 1:  # this part names the union member pydantic tried
            tp = next((m for m, tags in members if part in tags), members[0][0])
            continue
        tp = members[0][0] if members else None
        if part == "[key]":
            continue
        clean.append(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            field = _fields(tp).get(str(part))
            tp = field.annotation if field else None
            continue
        owner = None
        origin, args = get_origin(tp), get_args(tp)
        tp = args[0] if origin is list else args[1] if origin is dict else None
    return clean, owner, tp


def _members(tp: Any) -> list[tuple[Any, set[str]]]:
    """The members of a (possibly Annotated, possibly optional) union, each with its tags."""
    if tp is None:
        return []
    tags: set[str] = set()
    while get_origin(tp) is Annotated:
        tp, *meta = get_args(tp)
        tags |= {m.tag for m in meta if isinstance(m, Tag)}
    if get_origin(tp) in (Union, types.UnionType):
        return [m for arg in get_args(tp) if arg is not type(None) for m in _members(arg)]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        tags.add(tp.__name__)
        for name, field in tp.model_fields.items():
            if field.is_required() and get_origin(field.annotation) is Literal:
                tags |= {str(v) for v in _literal_values(tp, name)}
    return [(tp, tags)]


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {(f.alias or n): f for n, f in model.model_fields.items()}


def _literal_values(model: Any, field: str) -> list[Any]:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    info = _fields(model).get(field)
    if info is None or get_origin(info.annotation) is not Literal:
        return []
    return list(get_args(info.annotation))


_CALL_ONLY = "only service, workflow and native steps take retry and timeout_s"
_SERVICE_ONLY = "only service steps take with (parameters of the service call)"
_FIELD_HINTS: dict[tuple[type[BaseModel], str], str] = {
    (SwitchStep, "next"): "a switch routes with cases[].next and default: move the targets there",
    **{
        (m, f): _CALL_ONLY
        for m in (SwitchStep, TransformStep, SplitStep, JoinStep, DelayStep)
        for f in ("retry", "timeout_s")
    },
    **{
        (m, "with"): _SERVICE_ONLY
        for m in (
            SwitchStep,
            TransformStep,
            SplitStep,
            JoinStep,
            DelayStep,
            WorkflowCallStep,
            NativeStep,
        )
    },
}


def _field_message(
    err: Any, loc: Sequence[int | str], owner: type[BaseModel] | None, tp: Any
) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    ctx: dict[str, Any] = err.get("ctx") or {}
    last = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        if owner is not None and (owner, last) in _FIELD_HINTS:
            return f"unknown field {last!r}: {_FIELD_HINTS[owner, last]}"
        allowed = list(_fields(owner)) if owner is not None else []
        own_kind = _literal_values(owner, "kind")
        if last in STEP_KINDS and own_kind:
            return (
                f"unknown field {last!r}: a {own_kind[0]} step has none; "
                f"for a {last} step set kind: {last}"
            )
        hint = _did_you_mean(last, allowed)
        return f"unknown field {last!r}" + (
            hint or f": remove it{f'; allowed here: {_listing(allowed)}' if allowed else ''}"
        )
    if kind == "missing":
        return f"required field {last!r} is missing: add it"
    if kind == "union_tag_invalid":
        tag, expected = str(ctx.get("tag")), _quoted(str(ctx.get("expected_tags", "")))
        disc = str(ctx.get("discriminator", "")).strip("'")
        return (
            f"unknown {disc} {tag!r}{_did_you_mean(tag, expected)}; use one of {_listing(expected)}"
        )
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'")
        choices = [str(v) for m, _ in _members(tp) for v in _literal_values(m, disc)]
        return f"required field {disc!r} is missing: set it to one of {_listing(choices)}"
    if kind == "literal_error":
        expected = _quoted(str(ctx.get("expected", "")))
        hint = _did_you_mean(value, expected) if isinstance(value, str) else ""
        goto = " or {goto: <step id>}" if last == "on_error" else ""
        return f"{value!r} is not allowed here{hint}; use one of {_listing(expected)}{goto}"
    if kind == "string_pattern_mismatch" and str(ctx.get("pattern")) in PATTERN_HINTS:
        return f"{value!r} is not valid here: {PATTERN_HINTS[str(ctx.get('pattern'))]}"
    if kind == "value_error":
        return str(msg).removeprefix("Value error, ")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if not loc:
            return (
                "a workflow document is a mapping with apiVersion, kind, metadata and spec, "
                f"not {_a(value)}"
            )
        return f"must be a mapping (an object), not {_a(value)}"
    if kind == "list_type":
        return f"must be a list, not {_a(value)}"
    return str(msg)


# --- helpers -------------------------------------------------------------------------------------


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _unknown_step(target: str, index: Mapping[str, int]) -> str:
    hint = _did_you_mean(target, index)
    return f"unknown step {target!r}{hint or f': use one of {_listing(index)}'}"


def _listing(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _a(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


_LOC_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _ordered(problems: Iterable[Problem]) -> list[Problem]:
    """Without repeats, in document order (``steps[2]`` before ``steps[10]``)."""

    def key(problem: Problem) -> tuple[tuple[int, int | str], ...]:
        return tuple((0, int(n)) if n else (1, k) for k, n in _LOC_PART.findall(problem[0]))

    return sorted(dict.fromkeys(problems), key=key)


def _name_of(data: Any) -> str | None:
    meta = data.get("metadata") if isinstance(data, Mapping) else None
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else None


# --- YAML ----------------------------------------------------------------------------------------


def _line_of(node: yaml.Node, where: str) -> int:
    """The line of the deepest node of ``where`` present in the document (1-based)."""
    line = node.start_mark.line + 1
    for key, index in _LOC_PART.findall(where):
        if key and isinstance(node, yaml.MappingNode):
            found = next((kv for kv in node.value if kv[0].value == key), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        else:
            break
    return line
