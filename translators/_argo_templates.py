"""The templates of a workflow's ``WorkflowTemplate``: DAGs, calls, delays, the exit report. Pure.

:class:`TemplateBuilder` turns a :class:`~translators._argo_plan.Plan` into hera models. Calls share
templates: every step with the same kind, timeout and retry uses one template, parameterised by
service, step id, task key, payload and headers (Argo allows 200 templates per workflow).

A guarded call (a step with ``on_error`` continue or goto) runs through ``try-<call template>``: a
DAG whose only task, ``call``, runs the call template with ``continueOn: {failed, error}`` (and no
``depends``: Argo rejects ``continueOn`` in a DAG that uses it). Argo does not fail a DAG for a
target task that continues on its phase, so the ``try-`` node succeeds whatever the call did and
outputs ``status`` (the call's phase), ``result`` (its response, ``null`` unless it succeeded) and
``error`` (``null`` if it succeeded, else the ``error`` of the call record or refusal the gateway
answered with, or a generic one without an answer); the steps after it route on ``status``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final, Literal

from hera.workflows import models as m

from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.ir import (
    MAX_ATTEMPTS_HEADER,
    RetrySpec,
    ServiceStep,
    TransformStep,
    Workflow,
    key_in_id,
)
from translators._argo_check import MAX_DAG_TASKS, MAX_NAME_LENGTH, MAX_TEMPLATES
from translators._argo_expr import (
    Leaf,
    expr_tag,
    json_text,
    lift,
    literal,
    render,
    static_json,
    with_params,
)
from translators._argo_plan import Plan, Scope, Task
from translators._names import account_label, digest

__all__ = [
    "API_VERSION",
    "CONTAINER_GRACE_S",
    "DEFAULT_IMAGE",
    "HTTP_GRACE_S",
    "MANAGED",
    "MAX_HTTP_WAIT_S",
    "MAX_INLINE_PAYLOAD_BYTES",
    "Mode",
    "TemplateBuilder",
    "account_labels",
    "auth_headers",
    "dns_name",
    "gateway_secret_name",
    "is_label",
    "label_value",
    "scoped_name",
    "service_account_name",
    "version_labels",
]

API_VERSION: Final = "argoproj.io/v1alpha1"
DEFAULT_IMAGE: Final = "ghcr.io/fluxo/fluxo:0.1.0"
MAX_HTTP_WAIT_S: Final = 300
"""The longest synchronous wait the gateway grants (``fluxo.api.common.MAX_WAIT_S``)."""
MAX_INLINE_PAYLOAD_BYTES: Final = 100 * 1024
"""Job inputs above this size are passed by reference (Argo keeps parameters in etcd)."""
HTTP_GRACE_S: Final = 10
CONTAINER_GRACE_S: Final = 60
RESULT_PARAMETER: Final = "fluxo-result"
MANAGED: Final = {"app.kubernetes.io/managed-by": "fluxo"}
ACCOUNT_KEY: Final = "fluxo.dev/account"

Mode = Literal["http", "container"]

_WORKFLOW_PARAMETERS = (
    ("job-id", "The Fluxo job id; packet ids and the exit report use it."),
    ("trace-id", "The job's W3C trace id (32 hex), copied into every packet."),
    ("actor", "The job's actor as JSON: {user: {id}, account: {id}}."),
    ("headers", "The job's packet headers as a JSON object."),
    ("input", "The job's input payload as JSON ({} when it is held by reference)."),
    ("input-headers", "Headers of the first calls: headers, plus fluxo-payload-ref by reference."),
)


class TemplateBuilder:
    """Builds the ``WorkflowTemplate`` of one plan; ``names`` maps task placeholders to names."""

    def __init__(
        self,
        workflow: Workflow,
        plan: Plan,
        gateway: str,
        ref: str,
        mode: Mode,
        image: str,
        token_secret: str,
    ) -> None:
        self.workflow, self.plan, self.gateway, self.ref = workflow, plan, gateway, ref
        self.mode, self.image, self.secret = mode, image, token_secret
        self.calls: dict[str, m.Template] = {}
        self.tries: dict[str, m.Template] = {}
        self.delays: dict[str, m.Template] = {}
        self.names: dict[int, str] = {}

    def workflow_template(self, name: str, service_account: str) -> m.WorkflowTemplate:
        scopes = list(self.plan.scopes())
        for scope in scopes:
            scope.template = dns_name(scope.template)  # 'branch-' + a 63-character step id
            self.name_tasks(scope)
        dags = [self.dag(scope) for scope in scopes]
        templates = [
            *dags,
            *_sorted(self.calls),
            *_sorted(self.tries),
            *_sorted(self.delays),
            self.exit_template(),
        ]
        if len(templates) > MAX_TEMPLATES:
            raise UnsupportedFeatureError(
                f"workflow {self.workflow.metadata.name!r} needs {len(templates)} Argo templates, "
                f"over the limit of {MAX_TEMPLATES}; give steps the same retry and timeout "
                "settings (they share templates) or split the workflow",
                workflow=self.workflow.metadata.name,
            )
        account = self.workflow.metadata.account
        annotations = {
            "fluxo.dev/workflow": self.ref,
            "fluxo.dev/spec-sha256": self.workflow.content_hash(),
        }
        if account is not None:
            annotations[ACCOUNT_KEY] = account  # exact: the engine checks it before an update
        labels = {**version_labels(self.ref), **account_labels(account)}
        if self.workflow.spec.description:
            annotations["workflows.argoproj.io/description"] = self.workflow.spec.description
        return m.WorkflowTemplate(
            api_version=API_VERSION,
            kind="WorkflowTemplate",
            metadata=m.ObjectMeta(name=name, labels={**MANAGED, **labels}, annotations=annotations),
            spec=m.WorkflowSpec(
                entrypoint="main",
                on_exit="report-end",
                service_account_name=service_account,
                arguments=m.Arguments(
                    parameters=[m.Parameter(name=n, description=d) for n, d in _WORKFLOW_PARAMETERS]
                ),
                workflow_metadata=m.WorkflowMetadata(labels=labels),
                templates=templates,
            ),
        )

    def name_tasks(self, scope: Scope) -> None:
        """Step ids become task names; a step on several paths gets ``-from-<previous task>``."""
        counts = Counter(task.step.id for task in scope.tasks)
        used: set[str] = set()
        for task in scope.tasks:
            base = task.step.id if not task.step.id[0].isdigit() else f"s-{task.step.id}"
            if counts[task.step.id] > 1:
                base = f"{base}-from-{task.via.name if task.via else 'start'}"
            name, n = dns_name(base), 2
            while name in used:
                name, n = dns_name(f"{base}-{n}"), n + 1
            used.add(name)
            task.name = self.names[task.uid] = name
        if len(scope.tasks) > MAX_DAG_TASKS:
            raise UnsupportedFeatureError(
                f"workflow {self.workflow.metadata.name!r} needs {len(scope.tasks)} tasks in "
                f"DAG {scope.template!r}, over Argo's limit of {MAX_DAG_TASKS} (a step reached "
                "over several paths counts once per path); split the workflow into workflows "
                "called as services",
                workflow=self.workflow.metadata.name,
            )
        if not scope.tasks:
            raise UnsupportedFeatureError(
                f"workflow {self.workflow.metadata.name!r} has nothing to run in "
                f"{scope.template!r} on Argo (only switches and joins); add a step",
                workflow=self.workflow.metadata.name,
            )

    def dag(self, scope: Scope) -> m.Template:
        tasks = [self.task(scope, task) for task in scope.tasks]
        outputs: list[m.Parameter] = []
        if scope.split is not None:
            if scope.join_edges:
                value = "'null'"
                for fired, payload in reversed(scope.join_edges):
                    as_json = render(lift(lambda e: f"toJson({e})", payload))
                    value = f"({render(fired)}) ? ({as_json}) : ({value})"
                outputs.append(_output("payload", value))
            if scope.results:
                outputs.append(_output("results", f"toJson({_results(scope)})"))
        elif scope.results:
            outputs.append(_output("result", f"toJson({_results(scope)})", RESULT_PARAMETER))
        inputs = None
        if scope.split is not None:
            names = [
                "payload",
                "suffix",
                *(["from"] if scope.came_from else []),
                *(["origin"] if scope.origin else []),
            ]
            inputs = m.Inputs(parameters=[m.Parameter(name=n) for n in names])
        return m.Template(
            name=scope.template,
            inputs=inputs,
            dag=m.DAGTemplate(tasks=tasks),
            outputs=m.Outputs(parameters=outputs) if outputs else None,
        )

    def task(self, scope: Scope, task: Task) -> m.DAGTask:
        suffix = "{{inputs.parameters.suffix}}" if scope.split is not None else ""
        args: dict[str, str] = {}
        with_param = None
        step = task.step
        if task.kind == "delay":
            template = self.delay_template(step.seconds)
        elif task.kind == "split":
            if task.items is None or task.branch is None:
                raise UnsupportedFeatureError(f"internal: split task {step.id!r} has no branch")
            template = task.branch.template
            # `.i` is `[i]` in a packet id, `_i` is `~i` (fluxo_core.ir.step_keys)
            if task.outputs_of is None:
                items = lift(
                    lambda e: f"toJson(map({e}, {{ {{'k': toJson(#index), 'p': toJson(#)}} }}))",
                    task.items,
                )
                args = {"payload": "{{item.p}}", "suffix": suffix + ".{{item.k}}"}
            else:
                # A call's packets: a level (`[i]`, from `<key>~i`) only when there are several.
                # No ternary (see _argo_expr): the level is picked from a list by the count.
                several = "[min(len(o), 2) - 1]"
                items = lift(
                    lambda e: (
                        f"toJson(let o = {e}; map(o, {{ {{"
                        f"'f': ['', '_' + toJson(#index)]{several}, "
                        f"'k': ['', '.' + toJson(#index)]{several}, "
                        "'p': toJson(#)} }))"
                    ),
                    task.items,
                )
                args = {
                    "payload": "{{item.p}}",
                    "suffix": suffix + "{{item.k}}",
                    "from": key_in_id(task.outputs_of.key) + "{{item.f}}",
                }
            if task.branch.origin:  # the split's own origin, which the branch's keys inherit
                args["origin"] = key_in_id(task.origin)
            with_param = expr_tag(items)
        else:
            template = self.call_template(step, task.kind)
            if task.guarded:
                template = self.try_template(template)
            payload = task.payload
            if isinstance(step, ServiceStep) and step.with_:
                # The call gets the input with `with` set; the task's payload (what on_error
                # hands on) stays the step's input. Not the bare input: it is no longer passed
                # by reference.
                payload = with_params(payload, step.static_params)
            first = isinstance(payload, Leaf) and payload.is_input
            args = {
                "step-id": step.id,
                # The step engine's key (`enrich[2]`, `notify<priority`), spelled as packet ids
                # allow: the key is the middle of the call's packet id.
                "key": key_in_id(task.key),
                "payload": json_text(payload),
                "headers": "{{workflow.parameters.%s}}" % ("input-headers" if first else "headers"),
            }
            if task.kind == "transform":
                args["ops"] = static_json(
                    [
                        op.model_dump(mode="json", by_alias=True, exclude_unset=True)
                        for op in step.ops
                    ]
                )
            else:
                args["service"] = step.service if isinstance(step, ServiceStep) else step.workflow
        return m.DAGTask(
            name=task.ref,
            template=template,
            depends=task.depends,
            when=expr_tag(task.when) if task.when is not None else None,
            with_param=with_param,
            arguments=m.Arguments(
                parameters=[m.Parameter(name=k, value=v) for k, v in args.items()]
            )
            if args
            else None,
        )

    def call_template(self, step: Any, kind: str) -> str:
        retry: RetrySpec | None = None if isinstance(step, TransformStep) else step.retry
        timeout = None if isinstance(step, TransformStep) else step.timeout_s
        wait = math.ceil(timeout) if timeout is not None else None
        container = self.mode == "container" or (wait is not None and wait > MAX_HTTP_WAIT_S)
        strategy = _retry_strategy(retry)
        parts = ["run" if container else "call"]
        if kind == "transform":
            parts.append("transform")
        if wait is not None:
            parts.append(f"t{wait}s")
        if retry is not None:
            parts.append(f"r{retry.max_attempts}")
        if strategy is not None and retry is not None:
            parts += [_duration(retry.backoff_s)]
            parts += [f"x{_factor(retry.factor)}", _duration(retry.backoff_max_s)]
        name = "-".join(parts)
        if name not in self.calls:
            self.calls[name] = self.build_call(
                name, kind, wait, container, strategy, step_retries=retry is not None
            )
        return name

    def build_call(
        self,
        name: str,
        kind: str,
        wait: int | None,
        container: bool,
        retry: m.RetryStrategy | None,
        *,
        step_retries: bool,
    ) -> m.Template:
        service = "transform" if kind == "transform" else "{{inputs.parameters.service}}"
        payload = "{{inputs.parameters.payload}}"
        if kind == "transform":
            payload = '{"input":{{inputs.parameters.payload}},"ops":{{inputs.parameters.ops}}}'
        body = _packet_body(self.ref, payload, retries=retry is not None, step_retries=step_retries)
        inputs = [
            "step-id",
            "key",
            "payload",
            "headers",
            "ops" if kind == "transform" else "service",
        ]
        template = m.Template(
            name=name,
            inputs=m.Inputs(parameters=[m.Parameter(name=n) for n in inputs]),
            retry_strategy=retry,
        )
        if container:
            args = [service, "--gateway", self.gateway, "--packet", body]
            if wait is not None:
                args += ["--wait", str(wait)]
                template.active_deadline_seconds = m.IntOrString(wait + CONTAINER_GRACE_S)
            template.container = m.Container(
                image=self.image,
                command=["fluxo", "call"],
                args=args,
                env=[
                    m.EnvVar(
                        name="FLUXO_AUTHORIZATION",
                        value_from=m.EnvVarSource(
                            secret_key_ref=m.SecretKeySelector(
                                name=self.secret, key="authorization"
                            )
                        ),
                    )
                ],
            )
            return template
        wait_s = wait if wait is not None else MAX_HTTP_WAIT_S
        template.http = m.HTTP(
            url=f"{self.gateway}/v1/services/{service}/calls?wait={wait_s}",
            method="POST",
            headers=auth_headers(self.secret),
            body=body,
            success_condition="response.statusCode == 200 && "
            "fromJSON(response.body).status == 'succeeded'",
            timeout_seconds=wait_s + HTTP_GRACE_S,
        )
        return template

    def try_template(self, call: str) -> str:
        """The DAG around call template ``call`` that succeeds whatever the call did."""
        name = dns_name(f"try-{call}")
        if name not in self.tries:
            inputs = self.calls[call].inputs
            names = [p.name for p in inputs.parameters or ()] if inputs is not None else []
            status = "tasks.call.status"
            self.tries[name] = m.Template(
                name=name,
                inputs=m.Inputs(parameters=[m.Parameter(name=n) for n in names]),
                dag=m.DAGTemplate(
                    tasks=[
                        m.DAGTask(
                            name="call",
                            template=call,
                            continue_on=m.ContinueOn(failed=True, error=True),
                            arguments=m.Arguments(
                                parameters=[
                                    m.Parameter(name=n, value=f"{{{{inputs.parameters.{n}}}}}")
                                    for n in names
                                ]
                            ),
                        )
                    ]
                ),
                outputs=m.Outputs(
                    parameters=[
                        _output("status", status),
                        _output(
                            "result",
                            f"{status} == 'Succeeded' ? tasks.call.outputs.result : 'null'",
                        ),
                        _output("error", f"{status} == 'Succeeded' ? 'null' : toJson({_ERROR})"),
                    ]
                ),
            )
        return name

    def delay_template(self, seconds: float) -> str:
        duration = _duration(seconds)
        name = f"delay-{duration}"
        self.delays.setdefault(
            name, m.Template(name=name, suspend=m.SuspendTemplate(duration=duration))
        )
        return name

    def exit_template(self) -> m.Template:
        body = static_json(
            {
                "engine": "argo",
                "event": "finished",
                "run": "@RUN@",
                "status": "@STATUS@",
                "workflow": self.ref,
            }
        )
        body = body.replace("@RUN@", "{{workflow.name}}").replace("@STATUS@", "{{workflow.status}}")
        return m.Template(
            name="report-end",
            http=m.HTTP(
                url=f"{self.gateway}/v1/jobs/{{{{workflow.parameters.job-id}}}}/engine-events",
                method="POST",
                headers=auth_headers(self.secret),
                body=body,
                timeout_seconds=30,
            ),
            retry_strategy=m.RetryStrategy(
                limit=m.IntOrString(5),
                retry_policy="Always",
                backoff=m.Backoff(duration="5s", factor=m.IntOrString(2), cap="60s"),
            ),
        )


_JSON_OBJECT = literal(r"^\s*\{")
_GENERIC_ERROR = literal(
    {"code": "call_failed", "message": "the call failed on Argo without an answer from Fluxo"}
)
_ERROR = (
    # The error of a failed call: the `error` of the call record (or of the gateway's refusal)
    # its response holds, else (no response, or not Fluxo's JSON) a generic one. Never fails.
    "(let body = get(get(tasks.call, 'outputs'), 'result'); "
    f"let e = (type(body) == 'string' && body matches {_JSON_OBJECT}) "
    "? get(fromJSON(body), 'error') : nil; "
    f"type(e) == 'map' ? e : {_GENERIC_ERROR})"
)


def _results(scope: Scope) -> str:
    """The job's results gathered in a scope: one list (a split's ``many`` contributes a list)."""
    parts = []
    for fired, value, many in scope.results:
        items = value if many else lift(lambda v: f"[{v}]", value)
        parts.append(render(lift(lambda f, v: f"(({f}) ? {v} : [])", fired, items)))
    return parts[0] if len(parts) == 1 else f"concat({', '.join(parts)})"


def _output(name: str, expression: str, global_name: str | None = None) -> m.Parameter:
    return m.Parameter(
        name=name, value_from=m.ValueFrom(expression=expression), global_name=global_name
    )


def _packet_body(ref: str, payload: str, *, retries: bool, step_retries: bool) -> str:
    """The call packet's JSON, with Argo tags.

    ``step_retries``: the step declares ``retry``, so Argo retries it (each attempt a new call,
    its ``{{retries}}`` in the id) and the packet caps the service's own retries at one attempt
    (``fluxo-max-attempts``), or both would retry.
    """
    attempt = "{{retries}}" if retries else "0"
    headers = "{{inputs.parameters.headers}}"
    if step_retries:
        headers = expr_tag(
            Leaf(
                "toJson(sprig.set(fromJSON(inputs.parameters.headers), "
                f"{literal(MAX_ATTEMPTS_HEADER)}, '1'))"
            )
        )
    body = json.dumps(
        {
            "actor": "@ACTOR@",
            "headers": "@HEADERS@",
            "id": "{{workflow.parameters.job-id}}:{{inputs.parameters.key}}:" + attempt,
            "job_id": "{{workflow.parameters.job-id}}",
            "payload": "@PAYLOAD@",
            "step_id": "{{inputs.parameters.step-id}}",
            "trace_id": "{{workflow.parameters.trace-id}}",
            "workflow": ref,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return (
        body.replace('"@ACTOR@"', "{{workflow.parameters.actor}}")
        .replace('"@HEADERS@"', headers)
        .replace('"@PAYLOAD@"', payload)
    )


def auth_headers(secret: str) -> list[m.V1alpha1HTTPHeader]:
    return [
        m.V1alpha1HTTPHeader(
            name="Authorization",
            value_from=m.HTTPHeaderSource(
                secret_key_ref=m.SecretKeySelector(name=secret, key="authorization")
            ),
        ),
        m.V1alpha1HTTPHeader(name="Content-Type", value="application/json"),
    ]


def _retry_strategy(retry: RetrySpec | None) -> m.RetryStrategy | None:
    if retry is None or retry.max_attempts <= 1:
        return None
    return m.RetryStrategy(
        limit=m.IntOrString(retry.max_attempts - 1),
        retry_policy="Always",
        backoff=m.Backoff(
            duration=_duration(retry.backoff_s),
            # Argo multiplies by an integer factor: a fractional one is rounded.
            factor=m.IntOrString(_factor(retry.factor)),
            cap=_duration(retry.backoff_max_s),
        ),
    )


def _factor(factor: float) -> int:
    return max(1, round(factor))


def _duration(seconds: float) -> str:
    """A Go duration: ``30s``, or ``1500ms`` below a whole second."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def version_labels(ref: str) -> dict[str, str]:
    name, _, version = ref.partition("@")
    return {"fluxo.dev/workflow": name, "fluxo.dev/version": label_value(version)}


def account_labels(account: str | None) -> dict[str, str]:
    """``fluxo.dev/account`` for the objects of an account's workflow (none without one)."""
    return {} if account is None else {ACCOUNT_KEY: label_value(account)}


def label_value(value: str) -> str:
    if re.match(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$", value):
        return value
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def is_label(name: str) -> bool:
    return (
        len(name) <= MAX_NAME_LENGTH
        and re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name) is not None
    )


def dns_name(text: str, *, limit: int = MAX_NAME_LENGTH) -> str:
    """A DNS-1123 label of at most ``limit`` characters; a changed or cut text keeps a hash of
    itself."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if clean == text and len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[: limit - 9].rstrip('-')}-{digest}"


def scoped_name(account: str | None, text: str, *, limit: int = MAX_NAME_LENGTH) -> str:
    """The engine-side name of ``text`` (e.g. ``order-intake-v3``) for ``account``: a DNS-1123
    label of at most ``limit`` characters.

    Without an account, :func:`dns_name`. With one, ``<account label>-<text>-<hash>``, the hash
    of the exact account and text, the readable part cut to fit: one Argo namespace holds every
    account's templates, and ``acme`` + ``b-c`` must not meet ``acme-b`` + ``c``.
    """
    if account is None:
        return dns_name(text, limit=limit)
    readable = re.sub(r"[^a-z0-9-]+", "-", f"{account_label(account)}-{text}".lower()).strip("-")
    tag = digest(account, text)
    return f"{readable[: limit - len(tag) - 1].rstrip('-')}-{tag}"


def gateway_secret_name(account: str | None) -> str:
    """The Secret holding the engine token of ``account``'s workflows (key ``authorization``,
    value ``Bearer <token>``): ``fluxo-gateway-<account label>``; ``fluxo-gateway`` without an
    account. An engine token acts only for its own account, so each account has its own."""
    return "fluxo-gateway" if account is None else f"fluxo-gateway-{account_label(account)}"


def service_account_name(account: str | None) -> str:
    """The service account ``account``'s workflows run as: ``fluxo-argo-<account label>``
    (``fluxo-argo`` without an account). It may read that account's Secret and no other."""
    return "fluxo-argo" if account is None else f"fluxo-argo-{account_label(account)}"


def _sorted(templates: Mapping[str, m.Template]) -> list[m.Template]:
    return [templates[k] for k in sorted(templates)]
