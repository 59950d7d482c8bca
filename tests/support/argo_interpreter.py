"""A fake Argo Server that really runs the Argo subset Fluxo emits, for end-to-end tests.

Argo needs Kubernetes, so the "emitted specs really work" check runs them here instead: an
interpreter of ``WorkflowTemplate`` + ``Workflow`` documents, behind an ``httpx`` transport that
answers the Argo Server REST calls :class:`~engines.argo.ArgoEngine` makes (create, get, update,
list and delete workflow templates; create and get workflows; stop; terminate), with swagger
shapes. Creating a Workflow runs it in a background task that makes REAL HTTP calls (to the Fluxo
gateway under test) and keeps ``status.phase``, ``status.nodes`` and ``status.outputs`` the way
Argo's controller does.

What it interprets, following Argo's controller (``workflow/controller/dag.go``, ``operator.go``):

- ``workflowTemplateRef`` with ``arguments.parameters`` (the Workflow's values over the
  template's); ``entrypoint``, ``onExit`` (``{{workflow.status}}`` set), ``activeDeadlineSeconds``.
- DAG templates: ``depends`` (``task``, ``.Succeeded``, ``.Failed``, ``.Errored``, ``.Skipped``
  with ``&&``, ``||``, ``!``; a false ``depends`` marks the task ``Omitted``), ``when`` (after
  substitution the text must be ``true`` or ``false``; a false one marks the task ``Skipped``),
  ``withParam`` fan-out (a ``TaskGroup`` node; an empty list skips the task; ``{{item}}`` and
  ``{{item.key}}``; aggregated outputs as Argo builds them: ``tasks.X.outputs.parameters`` is the
  JSON list of each succeeded child's parameters, in item order), the DAG phase by Argo's
  branch-phase rule (an omitted or skipped task inherits the phase of its branch, a failed
  branch fails the DAG, except at a target task whose ``continueOn`` covers that phase),
  ``continueOn`` (``failed``, ``error``; refused in a DAG that uses ``depends``, as Argo's
  validation does), ``outputs.parameters[].valueFrom.expression`` and ``globalName``
  (``status.outputs.parameters``).
- HTTP templates: ``url``, ``method``, ``headers`` (``value`` or ``valueFrom.secretKeyRef`` from
  :attr:`FakeArgoServer.secrets`), ``body``, ``timeoutSeconds``, ``successCondition`` over
  ``response.statusCode`` / ``response.body`` / ``response.headers`` (default: a 2xx status);
  ``outputs.result`` is the response body.
- Suspend templates with ``duration``; ``retryStrategy`` (``limit``, ``retryPolicy``
  ``Always``/``OnFailure``/``OnError``, ``backoff`` duration/factor/cap); template
  ``activeDeadlineSeconds``. Durations are multiplied by ``time_scale`` so tests stay fast.
- Tags: ``{{inputs.parameters.x}}``, ``{{workflow.parameters.x}}``, ``{{workflow.name}}``,
  ``{{workflow.namespace}}``, ``{{workflow.status}}``, ``{{retries}}``, ``{{tasks.X.status}}``,
  ``{{tasks.X.outputs.result}}``, ``{{tasks.X.outputs.parameters[.y]}}``, ``{{item[.k]}}`` and
  expression tags ``{{=...}}`` (see :mod:`tests.support.argo_expr`). A tag ends at the first
  ``}}``, as in Argo's fasttemplate. An unknown tag or expression is an error of the node, with the
  reason in its ``message``, as on Argo.
- Stop (``spec.shutdown: Stop``): running nodes fail, the exit handler still runs, the workflow
  ends ``Failed``. Terminate: the same without the exit handler.

As on Argo, ``status.phase`` stays ``Running`` until the exit handler has finished, and the
workflow's final phase is the entrypoint's.

Not supported (an error naming it): container, script, resource, steps and plugin templates;
``withItems``/``withSequence``; ``depends`` results other than the four above; expression
functions and operators outside :mod:`tests.support.argo_expr`; ``when`` in govaluate form
(``{{x}} == y``); ``failFast: false``; artifacts; memoization; synchronization; ``podGC``.
Simplifications: a DAG is assessed once all its tasks are fulfilled (Argo's fail-fast may fail it
earlier, leaving running tasks to finish); HTTP calls are made from this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx

from tests.support.argo_expr import ExpressionError, evaluate, go_json, go_string

__all__ = ["ArgoRunError", "FakeArgoServer", "HttpCall", "parse_duration"]

_API = "/api/v1/"
_D = "io.argoproj.workflow.v1alpha1."
_COMPLETED = ("Succeeded", "Failed", "Error")
_FULFILLED = (*_COMPLETED, "Skipped", "Omitted")
_DEPENDS_RESULTS = {"Succeeded", "Failed", "Errored", "Skipped"}


class ArgoRunError(Exception):
    """A node cannot run: the reason becomes the node's ``message`` and its phase ``Error``."""


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request an HTTP template made (the test checks refusals with these)."""

    workflow: str
    node: str
    method: str
    url: str
    status: int | None
    body: str


def parse_duration(text: str) -> float:
    """A Go duration (``90s``, ``1500ms``, ``1m30s``) or a number of seconds, in seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ArgoRunError(f"cannot read the duration {text!r}")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * unit[u] for n, u in parts)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- tag substitution ----------------------------------------------------------------------------


def _nested(scope: Mapping[str, Any]) -> dict[str, Any]:
    """Flat ``a.b.c`` keys as nested maps: the environment of expression tags."""
    env: dict[str, Any] = {}
    for key in sorted(scope, key=lambda k: k.count(".")):
        parts = key.split(".")
        node = env
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                if child is not None:
                    break  # a value is already here (e.g. aggregated parameters): keep it
                child = node[part] = {}
            node = child
        else:
            node.setdefault(parts[-1], scope[key])
    return env


def substitute(text: str, scope: Mapping[str, Any]) -> str:
    """Replace every ``{{...}}`` tag of ``text`` (simple names from ``scope``, ``{{=expr}}``)."""
    if "{{" not in text:
        return text
    out: list[str] = []
    pos = 0
    env: dict[str, Any] | None = None
    while True:
        start = text.find("{{", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        end = text.find("}}", start + 2)
        if end < 0:
            raise ArgoRunError(f"an unterminated tag in {text[start : start + 80]!r}")
        out.append(text[pos:start])
        tag = text[start + 2 : end]
        if tag.startswith("="):
            env = env if env is not None else _nested(scope)
            try:
                value = evaluate(tag[1:], env)
            except ExpressionError as exc:
                raise ArgoRunError(f"failed to evaluate expression: {exc}") from exc
            if value is None:
                raise ArgoRunError(f"failed to evaluate expression {tag[1:200]!r}: it is nil")
            out.append(go_string(value))
        else:
            name = tag.strip()
            if name not in scope:
                raise ArgoRunError(f"failed to resolve {{{{{name}}}}}")
            out.append(str(scope[name]))
        pos = end + 2


def _substitute_all(node: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        return substitute(node, scope)
    if isinstance(node, list):
        return [_substitute_all(v, scope) for v in node]
    if isinstance(node, dict):
        return {k: _substitute_all(v, scope) for k, v in node.items()}
    return node


def _depends_names(depends: str) -> list[str]:
    names = []
    for name, result in re.findall(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:\.([A-Za-z]+))?", depends):
        if result and result not in _DEPENDS_RESULTS:
            raise ArgoRunError(f"depends result .{result} is not supported by the interpreter")
        if name not in names:
            names.append(name)
    return names


def _depends_true(depends: str, phases: Mapping[str, str]) -> bool:
    def result(match: re.Match[str]) -> str:
        name, which = match.group(1), match.group(2)
        phase = phases[name]
        if which is None:  # a bare task: Succeeded, Skipped or Daemoned
            ok = phase in ("Succeeded", "Skipped")
        else:
            ok = phase == {"Errored": "Error"}.get(which, which)
        return "true" if ok else "false"

    text = re.sub(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:\.([A-Za-z]+))?", result, depends)
    value = evaluate(text, {})
    if not isinstance(value, bool):
        raise ArgoRunError(f"depends {depends!r} is not a boolean")
    return value


# --- one workflow run ----------------------------------------------------------------------------


@dataclass
class _Outcome:
    phase: str
    result: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    aggregated: str | None = None  # a fan-out's outputs.parameters (a JSON list)


class _Run:
    """Executes one Workflow, keeping ``document['status']`` up to date."""

    def __init__(self, server: FakeArgoServer, document: dict[str, Any], spec: dict[str, Any]):
        self.server = server
        self.document = document
        self.spec = spec
        self.name: str = document["metadata"]["name"]
        self.templates = {t["name"]: t for t in spec.get("templates") or ()}
        self.status: dict[str, Any] = document.setdefault("status", {})
        self.nodes: dict[str, Any] = self.status.setdefault("nodes", {})
        self.globals: dict[str, Any] = {
            "workflow.name": self.name,
            "workflow.namespace": document["metadata"].get("namespace", server.namespace),
        }
        for param in (spec.get("arguments") or {}).get("parameters") or ():
            if "value" not in param:
                raise ArgoRunError(f"workflow parameter {param['name']!r} has no value")
            self.globals[f"workflow.parameters.{param['name']}"] = param["value"]
        self.global_outputs: dict[str, str] = {}
        self.counter = itertools.count()
        self.main: asyncio.Task[_Outcome] | None = None
        self.shutdown: str | None = None

    # -- nodes --

    def node(
        self,
        name: str,
        display: str,
        kind: str,
        template: str | None,
        parent: dict[str, Any] | None,
        boundary: str | None,
        inputs: Mapping[str, str] | None = None,
        phase: str = "Running",
        message: str | None = None,
    ) -> dict[str, Any]:
        node: dict[str, Any] = {
            "id": f"{self.name}-{next(self.counter)}",
            "name": name,
            "displayName": display,
            "type": kind,
            "phase": phase,
            "startedAt": _now(),
        }
        if template is not None:
            node["templateName"] = template
        if boundary is not None:
            node["boundaryID"] = boundary
        if inputs:
            node["inputs"] = {"parameters": [{"name": k, "value": v} for k, v in inputs.items()]}
        if message is not None:
            node["message"] = message
        if phase in _FULFILLED:
            node["finishedAt"] = node["startedAt"]
        self.nodes[node["id"]] = node
        if parent is not None:
            parent.setdefault("children", []).append(node["id"])
        return node

    def finish(self, node: dict[str, Any], outcome: _Outcome) -> _Outcome:
        node["phase"] = outcome.phase
        node["finishedAt"] = _now()
        if outcome.message:
            node["message"] = outcome.message[:1000]
        outputs: dict[str, Any] = {}
        if outcome.result is not None:
            outputs["result"] = outcome.result
        if outcome.parameters:
            outputs["parameters"] = [{"name": k, "value": v} for k, v in outcome.parameters.items()]
        if outputs:
            node["outputs"] = outputs
        return outcome

    # -- the workflow --

    async def run(self) -> None:
        self.status.update(phase="Running", startedAt=_now())
        entry = str(self.spec.get("entrypoint"))
        deadline = self.spec.get("activeDeadlineSeconds")
        self.main = asyncio.create_task(self.execute(entry, {}, self.name, self.name, None, None))
        try:
            outcome = await asyncio.wait_for(
                asyncio.shield(self.main),
                None if deadline is None else float(deadline) * self.server.time_scale,
            )
        except TimeoutError:
            self.main.cancel()
            await self._settle(self.main)
            outcome = _Outcome("Failed", message="Max duration limit exceeded")
        except asyncio.CancelledError:
            await self._settle(self.main)
            if self.shutdown is None:
                raise
            outcome = _Outcome("Failed", message=f"Stopped with strategy '{self.shutdown}'")
        except ArgoRunError as exc:
            outcome = _Outcome("Error", message=str(exc))
        self._fail_unfinished(outcome.message or "")
        if self.global_outputs:
            self.status["outputs"] = {
                "parameters": [{"name": k, "value": v} for k, v in self.global_outputs.items()]
            }
        exit_template = self.spec.get("onExit")
        if exit_template and self.shutdown != "Terminate":
            self.globals["workflow.status"] = outcome.phase
            with contextlib.suppress(ArgoRunError):
                await self.execute(exit_template, {}, f"{self.name}.onExit", "onExit", None, None)
        self.status.update(phase=outcome.phase, finishedAt=_now())
        if outcome.message:
            self.status["message"] = outcome.message

    async def _settle(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    def _fail_unfinished(self, message: str) -> None:
        for node in self.nodes.values():
            if node["phase"] in ("Running", "Pending"):
                node.update(phase="Failed", finishedAt=_now(), message=message or "stopped")

    def stop(self, strategy: str) -> None:
        self.shutdown = strategy
        self.document.setdefault("spec", {})["shutdown"] = strategy
        if self.main is not None and not self.main.done():
            self.main.cancel()

    # -- templates --

    async def execute(
        self,
        template_name: str,
        args: Mapping[str, str],
        name: str,
        display: str,
        parent: dict[str, Any] | None,
        boundary: str | None,
    ) -> _Outcome:
        template = self.templates.get(template_name)
        if template is None:
            node = self.node(name, display, "Skipped", None, parent, boundary, phase="Error")
            return self.finish(node, _Outcome("Error", message=f"no template {template_name!r}"))
        inputs: dict[str, str] = {}
        for param in (template.get("inputs") or {}).get("parameters") or ():
            if param["name"] in args:
                inputs[param["name"]] = args[param["name"]]
            elif "value" in param or "default" in param:
                inputs[param["name"]] = param.get("value", param.get("default"))
            else:
                node = self.node(name, display, "Skipped", template_name, parent, boundary)
                message = f"inputs.parameters.{param['name']} was not supplied"
                return self.finish(node, _Outcome("Error", message=message))
        strategy = template.get("retryStrategy")
        if strategy is None:
            return await self.attempt(template, inputs, name, display, parent, boundary, None)
        retry_node = self.node(name, display, "Retry", template_name, parent, boundary, inputs)
        limit = int(strategy.get("limit", 0))
        policy = strategy.get("retryPolicy", "OnFailure")
        backoff = strategy.get("backoff") or {}
        outcome = _Outcome("Error", message="no attempt")
        for attempt in range(limit + 1):
            outcome = await self.attempt(
                template,
                inputs,
                f"{name}({attempt})",
                f"{display}({attempt})",
                retry_node,
                boundary,
                attempt,
            )
            retryable = outcome.phase == "Failed" and policy in ("Always", "OnFailure")
            retryable = retryable or (outcome.phase == "Error" and policy in ("Always", "OnError"))
            if outcome.phase == "Succeeded" or not retryable or attempt == limit:
                break
            await asyncio.sleep(self.backoff(backoff, attempt) * self.server.time_scale)
        if outcome.phase != "Succeeded" and limit > 0 and outcome.message:
            outcome.message = f"{outcome.message} (after {limit + 1} attempts)"
        return self.finish(retry_node, outcome)

    @staticmethod
    def backoff(backoff: Mapping[str, Any], attempt: int) -> float:
        if not backoff.get("duration"):
            return 0.0
        delay = parse_duration(str(backoff["duration"])) * int(backoff.get("factor", 1)) ** attempt
        cap = backoff.get("cap") or backoff.get("maxDuration")
        return float(min(delay, parse_duration(str(cap))) if cap else delay)

    async def attempt(
        self,
        template: dict[str, Any],
        inputs: Mapping[str, str],
        name: str,
        display: str,
        parent: dict[str, Any] | None,
        boundary: str | None,
        retries: int | None,
    ) -> _Outcome:
        scope: dict[str, Any] = {
            **self.globals,
            **{f"inputs.parameters.{k}": v for k, v in inputs.items()},
        }
        if retries is not None:
            scope["retries"] = str(retries)
        kinds = [
            k
            for k in (
                "dag",
                "http",
                "suspend",
                "container",
                "script",
                "resource",
                "steps",
                "plugin",
                "data",
                "containerSet",
            )
            if k in template
        ]
        kind = kinds[0] if kinds else "none"
        node_type = {"dag": "DAG", "http": "HTTP", "suspend": "Suspend"}.get(kind, "Pod")
        node = self.node(name, display, node_type, template["name"], parent, boundary, inputs)
        deadline = template.get("activeDeadlineSeconds")
        try:
            if kind == "dag":
                work = self.run_dag(template, scope, node)
            elif kind == "http":
                work = self.run_http(template, scope, node)
            elif kind == "suspend":
                work = self.run_suspend(template, scope)
            else:
                raise ArgoRunError(
                    f"template {template['name']!r} is a {kind} template, which the test "
                    "interpreter does not run (it runs dag, http and suspend templates)"
                )
            if deadline is None:
                outcome = await work
            else:
                seconds = float(deadline) * self.server.time_scale
                try:
                    outcome = await asyncio.wait_for(work, seconds)
                except TimeoutError:
                    outcome = _Outcome("Failed", message="Step exceeded its deadline")
        except ArgoRunError as exc:
            outcome = _Outcome("Error", message=str(exc))
        return self.finish(node, outcome)

    async def run_suspend(self, template: dict[str, Any], scope: Mapping[str, Any]) -> _Outcome:
        suspend = _substitute_all(template["suspend"], scope)
        duration = suspend.get("duration")
        if duration is None:
            raise ArgoRunError(
                "a suspend template without duration waits for a resume, which "
                "the interpreter does not offer"
            )
        await asyncio.sleep(parse_duration(str(duration)) * self.server.time_scale)
        return _Outcome("Succeeded")

    async def run_http(
        self, template: dict[str, Any], scope: Mapping[str, Any], node: dict[str, Any]
    ) -> _Outcome:
        spec = template["http"]
        unknown = set(spec) - {
            "url",
            "method",
            "headers",
            "body",
            "successCondition",
            "timeoutSeconds",
            "insecureSkipVerify",
        }
        if unknown:
            raise ArgoRunError(f"HTTP template fields {sorted(unknown)} are not interpreted")
        http = _substitute_all(spec, scope)
        headers: dict[str, str] = {}
        for header in http.get("headers") or ():
            if "value" in header:
                headers[header["name"]] = header["value"]
                continue
            ref = ((header.get("valueFrom") or {}).get("secretKeyRef")) or {}
            secret = self.server.secrets.get(ref.get("name", ""), {})
            if ref.get("key") not in secret:
                raise ArgoRunError(
                    f"secret {ref.get('name')!r} key {ref.get('key')!r} not found for header "
                    f"{header['name']!r}"
                )
            headers[header["name"]] = secret[ref["key"]]
        method = http.get("method", "GET")
        body = http.get("body")
        timeout = float(http["timeoutSeconds"]) if "timeoutSeconds" in http else None
        try:
            response = await self.server.gateway.request(
                method,
                http["url"],
                headers=headers,
                content=body.encode() if body is not None else None,
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            self.server.calls.append(
                HttpCall(self.name, node["name"], method, http["url"], None, body or "")
            )
            return _Outcome("Failed", message=f"{type(exc).__name__}: {exc}")
        self.server.calls.append(
            HttpCall(self.name, node["name"], method, http["url"], response.status_code, body or "")
        )
        condition = spec.get("successCondition")
        if condition:
            env = {
                "response": {
                    "statusCode": response.status_code,
                    "body": response.text,
                    "headers": {k: [v] for k, v in response.headers.items()},
                }
            }
            try:
                success = evaluate(condition, env)
            except ExpressionError as exc:
                return _Outcome("Failed", message=f"successCondition failed: {exc}")
        else:
            success = 200 <= response.status_code < 300
        if success is not True:
            # As Argo's agent (workflow/executor/agent.go): the body stays the node's result.
            message = (
                f"successCondition '{condition}' evaluated false"
                if condition
                else f"received non-2xx response code: {response.status_code}"
            )
            return _Outcome("Failed", result=response.text, message=message)
        return _Outcome("Succeeded", result=response.text)

    # -- DAGs --

    async def run_dag(
        self, template: dict[str, Any], scope: Mapping[str, Any], node: dict[str, Any]
    ) -> _Outcome:
        dag = template["dag"]
        unknown = set(dag) - {"tasks", "failFast"}
        if unknown or dag.get("failFast") is False:
            raise ArgoRunError(f"DAG fields {sorted(unknown) or ['failFast']} are not interpreted")
        tasks = {t["name"]: t for t in dag["tasks"]}
        deps = {name: _depends_names(t.get("depends") or "") for name, t in tasks.items()}
        for name, names in deps.items():
            for dep in names:
                if dep not in tasks:
                    raise ArgoRunError(f"task {name!r} depends on an unknown task {dep!r}")
            if t_dependencies := tasks[name].get("dependencies"):
                raise ArgoRunError(f"task {name!r}: dependencies {t_dependencies} (use depends)")
        if any(t.get("depends") for t in tasks.values()):
            for name, t in tasks.items():
                if "continueOn" in t:
                    raise ArgoRunError(
                        f"templates.{template['name']} cannot use 'continueOn' when using "
                        f"'depends' (task {name!r})"
                    )
        phases: dict[str, str] = {}
        task_scope: dict[str, Any] = dict(scope)
        running: dict[asyncio.Task[_Outcome], str] = {}
        waiting = dict(tasks)
        try:
            while waiting or running:
                for name in list(waiting):
                    if all(dep in phases for dep in deps[name]):
                        task = waiting.pop(name)
                        coroutine = self.run_task(task, phases, dict(task_scope), node)
                        running[asyncio.create_task(coroutine)] = name
                if not running:
                    raise ArgoRunError(f"DAG {template['name']!r} is stuck: {sorted(waiting)}")
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    name = running.pop(finished)
                    outcome = finished.result()
                    phases[name] = outcome.phase
                    task_scope[f"tasks.{name}.status"] = outcome.phase
                    if outcome.result is not None:
                        task_scope[f"tasks.{name}.outputs.result"] = outcome.result
                    for key, value in outcome.parameters.items():
                        task_scope[f"tasks.{name}.outputs.parameters.{key}"] = value
                    if outcome.aggregated is not None:
                        task_scope[f"tasks.{name}.outputs.parameters"] = outcome.aggregated
        finally:
            for pending in running:
                pending.cancel()
            for pending in running:
                await self._settle(pending)
        phase = self.assess(tasks, deps, phases)
        if phase != "Succeeded":
            failed = sorted(n for n, p in phases.items() if p in ("Failed", "Error"))
            return _Outcome(phase, message=f"child tasks failed: {', '.join(failed)}")
        parameters: dict[str, str] = {}
        env = _nested(task_scope)
        for param in (template.get("outputs") or {}).get("parameters") or ():
            source = param.get("valueFrom") or {}
            if set(source) != {"expression"}:
                raise ArgoRunError(f"output {param['name']!r}: only valueFrom.expression is read")
            try:
                value = go_string(evaluate(source["expression"], env))
            except ExpressionError as exc:
                raise ArgoRunError(f"output {param['name']!r}: {exc}") from exc
            parameters[param["name"]] = value
            if param.get("globalName"):
                self.global_outputs[param["globalName"]] = value
                self.globals[f"workflow.outputs.parameters.{param['globalName']}"] = value
        return _Outcome("Succeeded", parameters=parameters)

    @staticmethod
    def assess(
        tasks: Mapping[str, Any], deps: Mapping[str, list[str]], phases: Mapping[str, str]
    ) -> str:
        """Argo's ``assessDAGPhase``: each target task's branch phase; a failed one fails the DAG.

        An omitted or skipped task inherits the phases of its branches (failures preferred). A
        target task whose ``continueOn`` covers its (branch) phase does not fail the DAG.
        """
        branch: dict[str, set[str]] = {}

        def phases_of(name: str) -> set[str]:
            if name not in branch:
                if phases[name] in _COMPLETED:
                    branch[name] = {phases[name]}
                else:
                    inherited: set[str] = set()
                    for dep in deps[name]:
                        inherited |= phases_of(dep)
                    branch[name] = inherited or {"Succeeded"}
            return branch[name]

        depended = {dep for names in deps.values() for dep in names}
        for target in (name for name in tasks if name not in depended):
            found = phases_of(target)
            continue_on = tasks[target].get("continueOn") or {}
            for bad, key in (("Error", "error"), ("Failed", "failed")):
                # dag.go: a target task with continueOn for its phase does not fail the DAG.
                if bad in found and continue_on.get(key) is not True:
                    return bad
        return "Succeeded"

    async def run_task(
        self,
        task: dict[str, Any],
        phases: Mapping[str, str],
        scope: dict[str, Any],
        dag_node: dict[str, Any],
    ) -> _Outcome:
        name = task["name"]
        node_name = f"{dag_node['name']}.{name}"
        boundary = dag_node["id"]
        for unsupported in ("withItems", "withSequence", "onExit", "hooks", "templateRef"):
            if unsupported in task:
                raise ArgoRunError(f"task {name!r}: {unsupported} is not interpreted")
        try:
            if task.get("depends") and not _depends_true(task["depends"], phases):
                message = "omitted: depends condition not met"
                self.node(
                    node_name,
                    name,
                    "Skipped",
                    None,
                    dag_node,
                    boundary,
                    phase="Omitted",
                    message=message,
                )
                return _Outcome("Omitted")
            if "withParam" in task:
                items = json.loads(substitute(task["withParam"], scope))
                if not isinstance(items, list):
                    raise ArgoRunError(f"withParam of {name!r} is not a JSON list")
                return await self.fan_out(task, items, scope, node_name, dag_node)
        except (ArgoRunError, ExpressionError, ValueError) as exc:
            return self.errored(node_name, name, dag_node, boundary, exc)
        return await self.run_if(task, scope, node_name, name, dag_node, boundary)

    def errored(
        self, node_name: str, label: str, parent: Any, boundary: str, exc: Exception
    ) -> _Outcome:
        """A task whose arguments or conditions could not be evaluated: an Error node."""
        self.node(
            node_name, label, "Skipped", None, parent, boundary, phase="Error", message=str(exc)
        )
        return _Outcome("Error", message=str(exc))

    async def run_if(
        self,
        task: dict[str, Any],
        scope: dict[str, Any],
        node_name: str,
        label: str,
        parent: Any,
        boundary: str,
    ) -> _Outcome:
        """Evaluate the task's ``when`` and arguments in ``scope``; skip it or run its template."""
        try:
            when = substitute(task["when"], scope) if "when" in task else "true"
            args = self.arguments(task, scope)
        except (ArgoRunError, ExpressionError, ValueError) as exc:
            return self.errored(node_name, label, parent, boundary, exc)
        if not self.when_true(when, label):
            self.node(
                node_name,
                label,
                "Skipped",
                task["template"],
                parent,
                boundary,
                phase="Skipped",
                message=f"when '{when}' evaluated false",
            )
            return _Outcome("Skipped")
        return await self.execute(task["template"], args, node_name, label, parent, boundary)

    @staticmethod
    def when_true(when: str, task: str) -> bool:
        text = when.strip()
        if text not in ("true", "false"):
            raise ArgoRunError(
                f"task {task!r}: when {when[:200]!r} is not true/false after substitution; the "
                "interpreter reads only expression-tag conditions"
            )
        return text == "true"

    @staticmethod
    def arguments(task: dict[str, Any], scope: Mapping[str, Any]) -> dict[str, str]:
        args: dict[str, str] = {}
        for param in (task.get("arguments") or {}).get("parameters") or ():
            if "value" not in param:
                raise ArgoRunError(f"argument {param['name']!r} has no value")
            args[param["name"]] = substitute(str(param["value"]), scope)
        if (task.get("arguments") or {}).get("artifacts"):
            raise ArgoRunError("artifacts are not interpreted")
        return args

    async def fan_out(
        self,
        task: dict[str, Any],
        items: list[Any],
        scope: Mapping[str, Any],
        node_name: str,
        dag_node: dict[str, Any],
    ) -> _Outcome:
        name = task["name"]
        boundary = dag_node["id"]
        if not items:
            self.node(
                node_name,
                name,
                "Skipped",
                task["template"],
                dag_node,
                boundary,
                phase="Skipped",
                message="Skipped, empty params",
            )
            return _Outcome("Skipped")
        group = self.node(node_name, name, "TaskGroup", None, dag_node, boundary)

        async def child(index: int, item: Any) -> _Outcome:
            item_scope = dict(scope)
            item_scope["item"] = item if isinstance(item, str) else go_json(item)
            if isinstance(item, dict):
                for key, value in item.items():
                    item_scope[f"item.{key}"] = value if isinstance(value, str) else go_json(value)
            label = f"{name}({index}:{item_scope['item'][:40]})"
            child_name = f"{node_name}({index}:{item_scope['item'][:40]})"
            return await self.run_if(task, item_scope, child_name, label, group, boundary)

        outcomes = await asyncio.gather(*(child(i, item) for i, item in enumerate(items)))
        failed = [o for o in outcomes if o.phase in ("Failed", "Error")]
        outcome = _Outcome("Failed" if failed else "Succeeded")
        if failed:
            outcome.message = failed[0].message
        self.finish(group, outcome)
        # Argo's processAggregateNodeOutputs: the succeeded children, in item order.
        succeeded = [o for o in outcomes if o.phase == "Succeeded"]
        outcome.aggregated = json.dumps(
            [o.parameters for o in succeeded if o.parameters], separators=(",", ":")
        )
        results = [o.result for o in succeeded if o.result is not None]
        if results:
            outcome.result = json.dumps(results, separators=(",", ":"))
        return outcome


# --- the fake server -----------------------------------------------------------------------------

Conform = Callable[[str, Any], None]


class FakeArgoServer:
    """The Argo Server REST API over the interpreter, as an ``httpx`` transport.

    Args:
        token: the bearer token the server requires.
        namespace: the only namespace it serves.
        secrets: Kubernetes Secrets by name (``{"fluxo-gateway": {"authorization": "..."}}``).
        time_scale: multiplies suspend durations, retry backoffs and deadlines.
        conform: called as ``conform(swagger_definition, body)`` on every request and response
            body (the test passes a swagger validator).
        validate_document: called with every WorkflowTemplate and Workflow it receives (the test
            passes Argo's JSON Schema).
    """

    def __init__(
        self,
        *,
        token: str,
        namespace: str = "argo",
        secrets: dict[str, dict[str, str]] | None = None,
        time_scale: float = 0.01,
        conform: Conform | None = None,
        validate_document: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.token = token
        self.namespace = namespace
        self.secrets = secrets if secrets is not None else {}
        self.time_scale = time_scale
        self.conform = conform or (lambda definition, body: None)
        self.validate_document = validate_document or (lambda document: None)
        self.templates: dict[str, dict[str, Any]] = {}
        self.workflows: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, _Run] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.calls: list[HttpCall] = []
        self.received: list[dict[str, Any]] = []
        self.gateway = httpx.AsyncClient()
        self._versions = itertools.count(1)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def aclose(self) -> None:
        """Stop every run still going and close the gateway client."""
        for task in self.tasks.values():
            task.cancel()
        for task in self.tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.gateway.aclose()

    async def wait_idle(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """The workflow once its run (exit handler included) is over."""
        task = self.tasks[name]
        await asyncio.wait_for(asyncio.shield(task), timeout)
        return copy.deepcopy(self.workflows[name])

    def failures(self) -> list[str]:
        """Runs that crashed inside the interpreter (bugs of the interpreter itself)."""
        out = []
        for name, task in self.tasks.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                out.append(f"{name}: {task.exception()!r}")
        return out

    # -- HTTP --

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self.error(401, "token not valid")
        path = unquote(request.url.path)
        if _API not in path:
            return self.error(404, f"no route {path}")
        parts = path.split(_API, 1)[1].strip("/").split("/")
        body = json.loads(request.content) if request.content else None
        kind, rest = parts[0], parts[1:]
        if not rest or rest[0] != self.namespace:
            return self.error(404, f"namespace {rest[:1]} is not served")
        names = rest[1:]
        if kind == "workflow-templates":
            return self.templates_api(request.method, names, body, request.url.params)
        if kind == "workflows":
            return self.workflows_api(request.method, names, body)
        return self.error(404, f"no route {path}")

    def answer(self, definition: str, body: dict[str, Any], status: int = 200) -> httpx.Response:
        self.conform(definition, body)
        return httpx.Response(status, json=body)

    def error(self, status: int, message: str) -> httpx.Response:
        grpc = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13}.get(status, 2)
        return self.answer("grpc.gateway.runtime.Error", {"code": grpc, "message": message}, status)

    def templates_api(
        self, method: str, names: list[str], body: Any, params: httpx.QueryParams
    ) -> httpx.Response:
        if method == "GET" and not names:
            selector = params.get("listOptions.labelSelector", "")
            wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
            items = [
                t
                for t in self.templates.values()
                if all(t["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
            ]
            return self.answer(f"{_D}WorkflowTemplateList", {"metadata": {}, "items": items})
        if method == "POST" and not names:
            self.conform(f"{_D}WorkflowTemplateCreateRequest", body)
            template = copy.deepcopy(body["template"])
            self.validate_document(template)
            self.received.append(copy.deepcopy(template))
            name = template["metadata"]["name"]
            if name in self.templates:
                return self.error(409, f'workflowtemplates.argoproj.io "{name}" already exists')
            template["metadata"].update(
                namespace=self.namespace, resourceVersion=str(next(self._versions))
            )
            self.templates[name] = template
            return self.answer(f"{_D}WorkflowTemplate", template)
        if len(names) != 1:
            return self.error(404, "not found")
        name = names[0]
        current = self.templates.get(name)
        if current is None:
            return self.error(404, f'workflowtemplates.argoproj.io "{name}" not found')
        if method == "GET":
            return self.answer(f"{_D}WorkflowTemplate", current)
        if method == "PUT":
            self.conform(f"{_D}WorkflowTemplateUpdateRequest", body)
            template = copy.deepcopy(body["template"])
            if (
                template["metadata"].get("resourceVersion")
                != current["metadata"]["resourceVersion"]
            ):
                return self.error(409, "the object has been modified")
            self.validate_document(
                {
                    **template,
                    "metadata": {
                        k: v for k, v in template["metadata"].items() if k != "resourceVersion"
                    },
                }
            )
            self.received.append(copy.deepcopy(template))
            template["metadata"].update(
                namespace=self.namespace, resourceVersion=str(next(self._versions))
            )
            self.templates[name] = template
            return self.answer(f"{_D}WorkflowTemplate", template)
        if method == "DELETE":
            del self.templates[name]
            return self.answer(f"{_D}WorkflowTemplateDeleteResponse", {})
        return self.error(404, f"{method} is not served")

    def workflows_api(self, method: str, names: list[str], body: Any) -> httpx.Response:
        if method == "POST" and not names:
            self.conform(f"{_D}WorkflowCreateRequest", body)
            document = copy.deepcopy(body["workflow"])
            self.validate_document(document)
            self.received.append(copy.deepcopy(document))
            name = document["metadata"]["name"]
            if name in self.workflows:
                return self.error(409, f'workflows.argoproj.io "{name}" already exists')
            ref = (document.get("spec") or {}).get("workflowTemplateRef") or {}
            template = self.templates.get(ref.get("name", ""))
            if template is None:
                return self.error(
                    400, f'workflowtemplates.argoproj.io "{ref.get("name")}" not found'
                )
            document["metadata"].update(
                namespace=self.namespace,
                resourceVersion=str(next(self._versions)),
                creationTimestamp=_now(),
            )
            document["status"] = {"phase": "Pending", "nodes": {}}
            self.workflows[name] = document
            run = _Run(self, document, _merged_spec(template["spec"], document["spec"]))
            self.runs[name] = run
            self.tasks[name] = asyncio.create_task(run.run(), name=f"argo-{name}")
            return self.answer(f"{_D}Workflow", document)
        if not names:
            return self.error(404, f"{method} is not served")
        name = names[0]
        document = self.workflows.get(name)
        if document is None:
            return self.error(404, f'workflows.argoproj.io "{name}" not found')
        if method == "GET" and len(names) == 1:
            return self.answer(f"{_D}Workflow", copy.deepcopy(document))
        if method == "PUT" and names[1:] in (["stop"], ["terminate"]):
            action = names[1]
            definition = "WorkflowStopRequest" if action == "stop" else "WorkflowTerminateRequest"
            self.conform(f"{_D}{definition}", body)
            if document["status"].get("phase") in _COMPLETED:
                return self.error(400, f"cannot {action} a completed workflow")
            self.runs[name].stop("Stop" if action == "stop" else "Terminate")
            return self.answer(f"{_D}Workflow", copy.deepcopy(document))
        return self.error(404, f"{method} {'/'.join(names)} is not served")


def _merged_spec(template: dict[str, Any], workflow: dict[str, Any]) -> dict[str, Any]:
    """The template's spec with the Workflow's fields over it; parameters merged by name."""
    spec = copy.deepcopy(template)
    for key, value in workflow.items():
        if key in ("workflowTemplateRef", "arguments"):
            continue
        spec[key] = copy.deepcopy(value)
    params = {p["name"]: dict(p) for p in (spec.get("arguments") or {}).get("parameters") or ()}
    for param in (workflow.get("arguments") or {}).get("parameters") or ():
        params.setdefault(param["name"], {}).update(param)
    spec["arguments"] = {"parameters": list(params.values())}
    return spec
