"""Fluxo's semantic check of Argo documents: what Argo's JSON Schema and CRDs cannot see. Pure.

The schema checks shapes; this checks meaning: a template or task that does not exist, a
``{{tasks.x...}}`` reference to a task that is not in the DAG (or not upstream of the task using
it), a dependency cycle, more than 200 tasks or templates, names that are not DNS-1123 labels of at
most 63 characters, ``inputs.parameters``/``workflow.parameters`` that nobody declared, and
``continueOn`` in a DAG that uses ``depends`` (Argo's validation rejects it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fluxo_core.errors import Problem
from fluxo_core.ir.validation import find_cycles

__all__ = ["MAX_DAG_TASKS", "MAX_NAME_LENGTH", "MAX_TEMPLATES", "check_argo"]

MAX_DAG_TASKS = 200
MAX_TEMPLATES = 200
MAX_NAME_LENGTH = 63

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SIMPLE_TASK_REF = re.compile(r"\{\{\s*tasks\.([A-Za-z0-9][-A-Za-z0-9]*)\.")
_BRACKET_TASK_REF = re.compile(r"""tasks\[\s*['"]([^'"]+)['"]\s*\]""")
_DOTTED_TASK_REF = re.compile(r"\btasks\.([A-Za-z_][A-Za-z0-9_]*)\b")
_EXPR_TAG = re.compile(r"\{\{=(.*?)\}\}", re.DOTALL)
_INPUT_REF = re.compile(
    r"""inputs\.parameters(?:\.([A-Za-z0-9_][-A-Za-z0-9_]*)|\[\s*['"]([^'"]+)['"]\s*\])"""
)
_WORKFLOW_PARAM_REF = re.compile(
    r"""workflow\.parameters(?:\.([A-Za-z0-9_][-A-Za-z0-9_]*)|\[\s*['"]([^'"]+)['"]\s*\])"""
)
_DEPENDS_TOKEN = re.compile(r"[A-Za-z0-9][-A-Za-z0-9]*(?:\.[A-Za-z]+)?")
_DEPENDS_RESULTS = frozenset(
    {
        "Succeeded",
        "Failed",
        "Errored",
        "Skipped",
        "Omitted",
        "Daemoned",
        "AnySucceeded",
        "AllFailed",
    }
)


def check_argo(document: Mapping[str, Any]) -> list[Problem]:
    """The semantic problems of one Argo document (Workflow, WorkflowTemplate, CronWorkflow).

    Returns:
        ``(location, message)`` pairs such as ``("spec.templates[0].dag.tasks[2].when",
        "task 'ship' refers to task 'pack', which is not in this DAG: ...")``; empty when sound.
    """
    problems: list[Problem] = []
    metadata = document.get("metadata")
    if isinstance(metadata, Mapping):
        for key in ("name", "generateName"):
            value = metadata.get(key)
            if isinstance(value, str):
                text = value.rstrip("-") if key == "generateName" else value
                _check_name(f"metadata.{key}", text, "the document", problems)
    spec = document.get("spec")
    if not isinstance(spec, Mapping):
        return [*problems, ("spec", "the document has no spec")]
    base = "spec"
    if document.get("kind") == "CronWorkflow":
        spec, base = spec.get("workflowSpec"), "spec.workflowSpec"
        if not isinstance(spec, Mapping):
            return [*problems, (base, "a CronWorkflow needs a workflowSpec")]
    _check_spec(spec, base, problems)
    return problems


def _check_spec(spec: Mapping[str, Any], base: str, problems: list[Problem]) -> None:
    templates = [t for t in _list(spec.get("templates")) if isinstance(t, Mapping)]
    if not templates:
        if not isinstance(spec.get("workflowTemplateRef"), Mapping):
            problems.append((f"{base}.templates", "no templates and no workflowTemplateRef"))
        return
    if len(templates) > MAX_TEMPLATES:
        problems.append(
            (
                f"{base}.templates",
                f"{len(templates)} templates, over Argo's limit of {MAX_TEMPLATES}: share "
                "templates between steps or split the workflow",
            )
        )
    names: dict[str, int] = {}
    for i, template in enumerate(templates):
        name = template.get("name")
        where = f"{base}.templates[{i}].name"
        if not isinstance(name, str):
            problems.append((where, "a template needs a name"))
            continue
        _check_name(where, name, "a template", problems)
        if name in names:
            problems.append((where, f"template {name!r} is defined twice (also [{names[name]}])"))
        names.setdefault(name, i)
    for key in ("entrypoint", "onExit"):
        ref = spec.get(key)
        if isinstance(ref, str) and ref not in names:
            problems.append((f"{base}.{key}", _missing_template(ref, names)))
    declared = {
        p.get("name")
        for p in _list((spec.get("arguments") or {}).get("parameters"))
        if isinstance(p, Mapping)
    }
    for i, template in enumerate(templates):
        where = f"{base}.templates[{i}]"
        _check_parameter_refs(template, where, declared, problems)
        dag = template.get("dag")
        if isinstance(dag, Mapping):
            _check_dag(template, dag, where, names, problems)
        for j, group in enumerate(_list(template.get("steps"))):
            for k, step in enumerate(_list(group)):
                ref = step.get("template") if isinstance(step, Mapping) else None
                if isinstance(ref, str) and ref not in names:
                    problems.append(
                        (f"{where}.steps[{j}][{k}].template", _missing_template(ref, names))
                    )


def _check_parameter_refs(
    template: Mapping[str, Any], where: str, declared_globals: set[Any], problems: list[Problem]
) -> None:
    inputs = {
        p.get("name")
        for p in _list((template.get("inputs") or {}).get("parameters"))
        if isinstance(p, Mapping)
    }
    seen: set[tuple[str, str]] = set()
    for location, text in _strings(template, where):
        for pattern, known, what in (
            (_INPUT_REF, inputs, "input parameter"),
            (_WORKFLOW_PARAM_REF, declared_globals, "workflow parameter"),
        ):
            for match in pattern.finditer(text):
                name = match.group(1) or match.group(2)
                if name not in known and (what, name) not in seen:
                    seen.add((what, name))
                    problems.append(
                        (location, f"{what} {name!r} is used but not declared: declare it")
                    )


def _check_dag(
    template: Mapping[str, Any],
    dag: Mapping[str, Any],
    where: str,
    templates: Mapping[str, int],
    problems: list[Problem],
) -> None:
    tasks = [t for t in _list(dag.get("tasks")) if isinstance(t, Mapping)]
    name = template.get("name")
    if len(tasks) > MAX_DAG_TASKS:
        problems.append(
            (
                f"{where}.dag.tasks",
                f"DAG {name!r} has {len(tasks)} tasks, over Argo's limit of {MAX_DAG_TASKS}: "
                "move part of it into a nested DAG template or another workflow",
            )
        )
    index: dict[str, int] = {}
    for i, task in enumerate(tasks):
        task_name = task.get("name")
        at = f"{where}.dag.tasks[{i}]"
        if not isinstance(task_name, str):
            problems.append((f"{at}.name", "a task needs a name"))
            continue
        _check_name(f"{at}.name", task_name, "a task", problems)
        if task_name in index:
            problems.append((f"{at}.name", f"task {task_name!r} is defined twice"))
        index.setdefault(task_name, i)
    graph: dict[str, list[tuple[str, str]]] = {n: [] for n in index}
    for i, task in enumerate(tasks):
        at = f"{where}.dag.tasks[{i}]"
        task_name = task.get("name")
        ref = task.get("template")
        if isinstance(ref, str) and ref not in templates:
            problems.append((f"{at}.template", _missing_template(ref, templates)))
        hook = ((task.get("hooks") or {}).get("exit") or {}).get("template")
        if isinstance(hook, str) and hook not in templates:
            problems.append((f"{at}.hooks.exit.template", _missing_template(hook, templates)))
        if "continueOn" in task and any("depends" in t for t in tasks):
            problems.append(
                (
                    f"{at}.continueOn",
                    f"DAG {name!r} uses depends, so continueOn cannot be used in it (Argo "
                    "rejects it): use depends with 'x.Failed'/'x.Errored' instead",
                )
            )
        for dep, dep_where in _dependencies(task, at, problems):
            if dep not in index:
                problems.append((dep_where, f"task {task_name!r} depends on unknown task {dep!r}"))
            elif isinstance(task_name, str) and task_name in graph:
                graph[task_name].append((dep, dep_where))
        if (
            isinstance(task_name, str)
            and task_name[:1].isdigit()
            and ("depends" in task or "dependencies" in task)
        ):
            problems.append(
                (f"{at}.name", "a task name may not start with a digit when depends is used")
            )
    problems += _cycles(graph)
    ancestors = _ancestors(graph)
    for i, task in enumerate(tasks):
        at = f"{where}.dag.tasks[{i}]"
        task_name = task.get("name")
        upstream = ancestors.get(task_name, set()) if isinstance(task_name, str) else set()
        for location, ref in _task_refs(task, at):
            if ref not in index:
                problems.append(
                    (
                        location,
                        f"task {task_name!r} refers to task {ref!r}, which is not in DAG "
                        f"{name!r}: fix the name or move the reference into that DAG",
                    )
                )
            elif ref not in upstream:
                problems.append(
                    (
                        location,
                        f"task {task_name!r} refers to task {ref!r}, which is not upstream "
                        f"of it: add {ref!r} to its depends",
                    )
                )
    for location, ref in _task_refs(template.get("outputs"), f"{where}.outputs"):
        if ref not in index:
            problems.append(
                (location, f"DAG {name!r} outputs refer to task {ref!r}, which is not in it")
            )


def _dependencies(
    task: Mapping[str, Any], at: str, problems: list[Problem]
) -> Iterator[tuple[str, str]]:
    for j, dep in enumerate(_list(task.get("dependencies"))):
        if isinstance(dep, str):
            yield dep, f"{at}.dependencies[{j}]"
    depends = task.get("depends")
    if isinstance(depends, str):
        for token in _DEPENDS_TOKEN.findall(depends):
            dep, _, result = token.partition(".")
            if result and result not in _DEPENDS_RESULTS:
                problems.append((f"{at}.depends", f"unknown task result {result!r} in {token!r}"))
            yield dep, f"{at}.depends"


def _task_refs(node: Any, where: str) -> Iterator[tuple[str, str]]:
    for location, text in _strings(node, where):
        refs = set(_SIMPLE_TASK_REF.findall(text)) | set(_BRACKET_TASK_REF.findall(text))
        expressions = _EXPR_TAG.findall(text)
        if location.endswith(".expression"):
            expressions.append(text)
        for expression in expressions:
            refs |= {r for r in _DOTTED_TASK_REF.findall(expression) if r != "name"}
        for ref in sorted(refs):
            yield location, ref


def _cycles(graph: Mapping[str, Sequence[tuple[str, str]]]) -> list[Problem]:
    return [
        (
            where,
            f"dependency cycle {cycle} (each task waits for the next): a DAG must be acyclic; "
            "remove one of these dependencies",
        )
        for where, cycle in find_cycles(graph)
    ]


def _ancestors(graph: Mapping[str, Sequence[tuple[str, str]]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for start in graph:
        seen: set[str] = set()
        todo = [dep for dep, _ in graph[start]]
        while todo:
            dep = todo.pop()
            if dep not in seen and dep in graph:
                seen.add(dep)
                todo.extend(d for d, _ in graph[dep])
        out[start] = seen
    return out


def _check_name(where: str, name: str, what: str, problems: list[Problem]) -> None:
    if len(name) > MAX_NAME_LENGTH:
        problems.append(
            (where, f"{what} name {name[:80]!r} has {len(name)} characters, over {MAX_NAME_LENGTH}")
        )
    if not _DNS_LABEL.match(name):
        problems.append(
            (
                where,
                f"{what} name {name[:80]!r} is not a DNS-1123 label: use lowercase letters, "
                "digits and '-', starting and ending with a letter or digit",
            )
        )


def _missing_template(ref: str, templates: Mapping[str, int]) -> str:
    known = ", ".join(sorted(templates)[:10])
    return f"no template named {ref!r} (templates: {known})"


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
