"""IR -> Argo Workflows: a pure, deterministic translation built with hera's Argo models.

:func:`to_argo` turns one workflow version into an :class:`ArgoBundle`: a ``WorkflowTemplate``
(``<account>-<name>-v<version>-<hash>``, :func:`template_name`), one ``CronWorkflow`` per cron
trigger, and the RBAC the HTTP agent needs. One namespace may serve several accounts: every name
carries the workflow's ``metadata.account``, and each account's workflows run as its own service
account (``fluxo-argo-<account>``) reading its own engine token from its own Secret
(``fluxo-gateway-<account>``, :func:`gateway_secret_name`), which the operator creates.
:func:`to_argo_job` makes the ``Workflow`` of one job (a ``workflowTemplateRef`` plus the job's
parameters); :func:`to_yaml` writes a bundle as multi-document YAML with sorted keys;
:func:`check_argo` is Fluxo's own semantic check of an Argo document.

Mapping, per IR step kind (see ``_argo_plan`` for how the graph is unfolded into tasks):

=========  ==========================================================================================
service    a task on a shared HTTP template that POSTs the packet to the Fluxo gateway
           (``/v1/services/<service>/calls?wait=N``), so admission, billing and observation pass
           the shared runtime. ``successCondition``: status 200 and call status ``succeeded``; the
           call record becomes ``outputs.result`` and the next task reads the payload from
           ``tasks['x'].outputs.result``. ``retry`` -> ``retryStrategy`` (limit = attempts - 1,
           backoff duration/factor/cap, policy Always); ``timeout_s`` -> the gateway's ``wait`` and
           the request's ``timeoutSeconds`` (a call longer than :data:`MAX_HTTP_WAIT_S`, or
           ``mode="container"``, runs ``fluxo call`` in a container with ``activeDeadlineSeconds``).
           ``with``: its static values are set on the payload argument (the object, or each item
           of an array) with ``sprig.omit``/``sprig.set``; a JSONata value -> unsupported.
           The steps after a service step run in a ``branch-<step>-outputs`` DAG looped
           (``withParam``) over the call's output packets, one branch per packet as on the step
           engine: keys gain ``[i]`` (and name ``<key>~i``) only when there are several; no
           packet ends the path (``on_error: continue`` after a failed call: the input goes on).
           Not so between a split and its join: a call there hands on its one packet.
workflow   the same, calling the service the workflow is published as.
transform  the same, calling the built-in ``transform`` service with ``{"input", "ops"}``.
switch     no task: ``when`` conditions (expr-lang) on the tasks it routes to; ``mode: first``
           negates the earlier cases; ``default`` negates them all. JSONata -> unsupported.
split      a task fanning out with ``withParam`` over a ``branch-<split>`` DAG template.
join       no task: the split's aggregated outputs, in item order, flattened like the step engine.
           A join of a service step's outputs: the call task, then a fan-out over its packets
           (``<step>-outputs``) holding the steps up to the join, gathered the same way.
delay      a ``suspend`` task with ``duration``.
native     unsupported (:class:`~fluxo_core.errors.UnsupportedFeatureError` naming the step).
=========  ==========================================================================================

``on_error``: ``fail`` -> downstream ``depends: x.Succeeded``, and a failed call fails the job.
``continue`` and ``{goto: s}`` guard the call: its task runs ``try-<call template>``, a DAG whose
only task runs the call with ``continueOn: {failed: true, error: true}`` and which outputs the
call's ``status``, ``result`` and ``error``, so the task succeeds whatever the call did. (Argo
fails a DAG when a task skipped or omitted below a failed task ends a branch, so a failed call
must not be visible: a switch after ``continue``, or the normal successor of a ``goto`` step,
would fail the job.) Downstream then ``depends: x.Succeeded`` and routes on ``status`` with
``when``: ``continue`` -> the next steps get the output or (call failed) the input; ``{goto: s}``
-> the next steps run when the call succeeded, ``s`` when it did not, with ``{"error", "input",
"step"}`` (the call record's error, as on the step engine). A failed call of a step without
``on_error`` fails its task and the job. An ``onExit`` HTTP template reports the job's end.

Conditions, payload hand-over and fan-out are Argo expression tags ``{{=...}}`` in expr-lang (the
form of upstream ``examples/conditionals.yaml``; the older govaluate form ``"{{x}} == y"`` cannot
read JSON). A ``when`` tag evaluates to ``true`` or ``false``. ``_argo_expr`` explains the quirks.

Where Argo differs from the step engine: split items must be objects (the step engine wraps
others as ``{"value": item}``); the job result (main DAG output ``result``, global
``fluxo-result``) lists the payloads that reached the output step, or the terminal steps, with
the results of the branches (of a join-less split, of a call's packets) flattened into it.

The gateway contract the emitted documents rely on:

- ``POST /v1/services/{name}/calls?wait=N``: body = packet; packet ids are
  ``<job id>:<step key>:<retry>`` (a repeated id is the same call, so a lost response is safe);
  the step key is the step engine's (``enrich[2]``, ``notify<priority``) in the characters ids
  allow (``enrich.2``, ``notify/priority``: :mod:`fluxo_core.ir.step_keys`).
- A packet whose headers hold ``fluxo-payload-ref: <packet id>`` gets the stored packet's payload
  (job inputs over :data:`MAX_INLINE_PAYLOAD_BYTES` travel this way: see :func:`to_argo_job`).
- ``POST /v1/jobs/{job_id}/engine-events``: ``{"engine": "argo", "event": "finished", ...}``.
- ``POST /v1/workflows/{name}/jobs`` with ``Idempotency-Key``: how a cron trigger starts a job,
  so each firing passes admission and creates the job row like any trigger.
- Secret ``token_secret`` (``fluxo-gateway-<account>``) key ``authorization`` holds the header
  value ``Bearer <engine token of the account>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from hera.workflows import models as m

from fluxo_core.errors import (
    ConfigError,
    PayloadTooLargeError,
    Problem,
    UnsupportedFeatureError,
    ValidationError,
)
from fluxo_core.ir import ENTRY_HEADER, Packet, Workflow
from translators._argo_check import MAX_DAG_TASKS, MAX_NAME_LENGTH, MAX_TEMPLATES, check_argo
from translators._argo_expr import static_json
from translators._argo_plan import plan_workflow
from translators._argo_templates import (
    API_VERSION,
    CONTAINER_GRACE_S,
    DEFAULT_IMAGE,
    HTTP_GRACE_S,
    MANAGED,
    MAX_HTTP_WAIT_S,
    MAX_INLINE_PAYLOAD_BYTES,
    Mode,
    TemplateBuilder,
    account_labels,
    auth_headers,
    dns_name,
    gateway_secret_name,
    is_label,
    label_value,
    scoped_name,
    service_account_name,
    version_labels,
)

__all__ = [
    "CONTAINER_GRACE_S",
    "DEFAULT_IMAGE",
    "HTTP_GRACE_S",
    "MAX_DAG_TASKS",
    "MAX_HTTP_WAIT_S",
    "MAX_INLINE_PAYLOAD_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_TEMPLATES",
    "ArgoBundle",
    "CronTrigger",
    "Mode",
    "check_argo",
    "gateway_secret_name",
    "scoped_name",
    "service_account_name",
    "template_name",
    "to_argo",
    "to_argo_job",
    "to_yaml",
]


@dataclass(frozen=True)
class CronTrigger:
    """A cron trigger to schedule on Argo (a ``CronWorkflow`` that starts Fluxo jobs).

    Attributes:
        name: the trigger's name (DNS-1123 label).
        schedules: cron expressions (5 fields, or ``@hourly``-style macros).
        timezone: an IANA zone such as ``Europe/Berlin``; absent: the controller's.
        input: the job input each firing sends.
        suspend: keep the schedule but do not fire.
        concurrency_policy: Argo's ``Allow``, ``Forbid`` or ``Replace``.
    """

    name: str
    schedules: tuple[str, ...]
    timezone: str | None = None
    input: Mapping[str, Any] | Sequence[Mapping[str, Any]] = field(default_factory=dict)
    suspend: bool = False
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"


@dataclass(frozen=True)
class ArgoBundle:
    """Everything one workflow version needs on Argo, as plain dicts ready to apply.

    Attributes:
        workflow_template: the ``WorkflowTemplate`` (one per workflow version).
        cron_workflows: one ``CronWorkflow`` per cron trigger.
        rbac: ServiceAccount, Role, RoleBinding and the service-account token Secret.
        template_name: the WorkflowTemplate's name, for ``workflowTemplateRef``.
        workflow_ref: ``name@version``.
        input_by_reference: whether a job input may be passed by reference (only calls read it).
        start_step: the step a job begins at (named in errors about the input).
        entries: the other steps a job may begin at, named in its ``fluxo-entry`` header (a
            workflow labelled ``fluxo.dev/entries``, see :data:`fluxo_core.ir.ENTRIES_LABEL`).
        account: the workflow's account (``metadata.account``), whose names the documents carry.
    """

    workflow_template: dict[str, Any]
    cron_workflows: tuple[dict[str, Any], ...]
    rbac: tuple[dict[str, Any], ...]
    template_name: str
    workflow_ref: str
    input_by_reference: bool
    start_step: str
    account: str | None = None
    entries: tuple[str, ...] = ()

    def documents(self) -> list[dict[str, Any]]:
        """Every document, in apply order (RBAC, the template, cron workflows)."""
        return [*self.rbac, self.workflow_template, *self.cron_workflows]


def to_argo(
    workflow: Workflow,
    *,
    gateway_url: str,
    version: str | int,
    mode: Mode = "http",
    image: str = DEFAULT_IMAGE,
    crons: Sequence[CronTrigger] = (),
    service_account: str | None = None,
    token_secret: str | None = None,
) -> ArgoBundle:
    """Translate one workflow version into Argo documents (pure and deterministic).

    Args:
        workflow: a validated workflow.
        gateway_url: the Fluxo gateway as seen from the Argo cluster (``http://fluxo:8080``).
        version: the workflow version being deployed.
        mode: ``http`` (service calls as HTTP templates) or ``container`` (``fluxo call`` pods).
        image: the Fluxo image for container templates.
        crons: cron triggers of the workflow, each a ``CronWorkflow``.
        service_account: the service account the workflows run as (RBAC is emitted for it);
            default ``fluxo-argo-<account>`` (:func:`service_account_name`).
        token_secret: the Secret holding the gateway's ``authorization`` header value, the
            engine token of the workflow's account; default ``fluxo-gateway-<account>``
            (:func:`gateway_secret_name`).

    Every name the documents give Argo carries ``workflow.metadata.account`` (see
    :func:`template_name`): one namespace may hold the workflows of several accounts.

    Raises:
        UnsupportedFeatureError: a step Argo cannot run (native, JSONata switch, ...), naming the
            step, or a workflow beyond Argo's limits (200 tasks per DAG, 200 templates).
        ConfigError: a bad ``gateway_url``, ``service_account`` or ``token_secret``.
        ValidationError: a bad cron trigger.
    """
    gateway = _gateway(gateway_url)
    account = workflow.metadata.account
    runs_as = service_account or service_account_name(account)
    secret = token_secret or gateway_secret_name(account)
    for label, value in (("service_account", runs_as), ("token_secret", secret)):
        if not is_label(value):
            raise ConfigError(f"{label}={value!r} is not a DNS-1123 name (e.g. 'fluxo-argo')")
    name = workflow.metadata.name
    ref = f"{name}@{version}"
    plan = plan_workflow(workflow)
    builder = TemplateBuilder(workflow, plan, gateway, ref, mode, image, secret)
    template = builder.workflow_template(template_name(account, name, version), runs_as)
    rendered = _resolve(template, builder.names)
    bundle = ArgoBundle(
        workflow_template=rendered,
        cron_workflows=tuple(_cron(c, workflow, gateway, runs_as, secret) for c in crons),
        rbac=_rbac(runs_as, secret),
        template_name=rendered["metadata"]["name"],
        workflow_ref=ref,
        input_by_reference="fromJSON(workflow.parameters.input)" not in str(rendered),
        start_step=workflow.spec.start_id,
        account=account,
        entries=tuple(plan.entries),
    )
    for document in (bundle.workflow_template, *bundle.cron_workflows):
        problems = check_argo(document)
        if problems:
            raise UnsupportedFeatureError(
                f"workflow {name!r} cannot be expressed within Argo's rules: "
                + "; ".join(f"{where}: {message}" for where, message in problems[:10]),
                workflow=name,
            )
    return bundle


def to_argo_job(
    bundle: ArgoBundle,
    *,
    job_id: str,
    packet: Packet,
    input_ref: str | None = None,
    rerun: str | None = None,
) -> dict[str, Any]:
    """The ``Workflow`` of one job: the bundle's template plus the job's parameters.

    Args:
        job_id: the Fluxo job id (the Workflow's name derives from it: starting twice conflicts).
        packet: the job's input packet (actor, trace id, headers, payload).
        rerun: set when a stopped job runs again: a Workflow of its own (its name also derives
            from ``rerun``), with the same job id, so its calls keep their packet ids.
        input_ref: the id of the packet stored at the gateway, for inputs over
            :data:`MAX_INLINE_PAYLOAD_BYTES`; the payload then stays out of Argo.

    Raises:
        PayloadTooLargeError: the input is too large to inline and no ``input_ref`` was given.
        UnsupportedFeatureError: ``input_ref`` for a workflow whose start reads the payload in
            Argo (a switch or split): inline the input or start with a service step.
    """
    entry = packet.headers.get(ENTRY_HEADER)
    if entry is not None and entry != bundle.start_step and entry not in bundle.entries:
        # Refused before it runs: the template starts only at its start step or its entries.
        raise ValidationError(
            f"the job's {ENTRY_HEADER} header names {entry!r}, which is not an entry of workflow "
            f"{bundle.workflow_ref} on Argo: name "
            + (
                f"one of {', '.join(repr(e) for e in bundle.entries)}"
                if bundle.entries
                else f"its start step {bundle.start_step!r} or none"
            )
            + " (a job begins at another step on Argo only in a workflow imported from a "
            "Node-RED tab with several triggers), or run the workflow on the step engine",
            problems=[(f"headers.{ENTRY_HEADER}", "not an entry of the workflow")],
        )
    payload = static_json(packet.payload)
    headers = dict(packet.headers)
    input_headers = dict(headers)
    if input_ref is not None:
        if not bundle.input_by_reference:
            raise UnsupportedFeatureError(
                f"workflow {bundle.workflow_ref} reads its input inside Argo (start step "
                f"{bundle.start_step!r}), so the input cannot be passed by reference; send a "
                f"smaller input or start the workflow with a service step",
                step=bundle.start_step,
            )
        payload, input_headers["fluxo-payload-ref"] = "{}", input_ref
    elif len(payload.encode()) > MAX_INLINE_PAYLOAD_BYTES:
        raise PayloadTooLargeError(
            f"the input of job {job_id} is {len(payload.encode())} bytes, over the "
            f"{MAX_INLINE_PAYLOAD_BYTES} an Argo parameter may carry; store the packet at the "
            "gateway and pass its id as input_ref",
            problems=[("input", "too large to inline")],
        )
    values = {
        "job-id": job_id,
        "trace-id": packet.trace_id,
        "actor": static_json(packet.actor.model_dump(mode="json", exclude_none=True)),
        "headers": static_json(headers),
        "input": payload,
        "input-headers": static_json(input_headers),
    }
    labels = {
        **MANAGED,
        **version_labels(bundle.workflow_ref),
        **account_labels(bundle.account),
        "fluxo.dev/job-id": label_value(job_id),
    }
    workflow = m.Workflow(
        api_version=API_VERSION,
        kind="Workflow",
        metadata=m.ObjectMeta(
            name=dns_name(f"{bundle.template_name}-{job_id}" + (f"-{rerun}" if rerun else "")),
            labels=labels,
        ),
        spec=m.WorkflowSpec(
            workflow_template_ref=m.WorkflowTemplateRef(name=bundle.template_name),
            arguments=m.Arguments(
                parameters=[m.Parameter(name=k, value=v) for k, v in values.items()]
            ),
        ),
    )
    return _dump(workflow)


def to_yaml(bundle: ArgoBundle) -> str:
    """The bundle as multi-document YAML, keys sorted (stable for golden files and diffs)."""
    return yaml.safe_dump_all(
        bundle.documents(), sort_keys=True, allow_unicode=True, width=4096, explicit_start=True
    )


# --- cron, RBAC, names ---------------------------------------------------------------------------

_CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z?LW#]+$")


def _cron(
    trigger: CronTrigger, owner: Workflow, gateway: str, service_account: str, secret: str
) -> dict[str, Any]:
    workflow, account = owner.metadata.name, owner.metadata.account
    problems: list[Problem] = []
    if not is_label(trigger.name):
        problems.append(("name", "use lowercase letters, digits and '-' (e.g. 'nightly')"))
    if not trigger.schedules:
        problems.append(("schedules", "add at least one cron expression, e.g. '0 2 * * *'"))
    for i, schedule in enumerate(trigger.schedules):
        fields = schedule.split()
        macro = len(fields) == 1 and fields[0].startswith("@")
        if not macro and (len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields)):
            problems.append((f"schedules[{i}]", f"{schedule!r} is not a 5-field cron expression"))
    if problems:
        raise ValidationError(f"invalid cron trigger {trigger.name!r}", problems=problems)
    body = static_json(
        {
            "headers": {"fluxo-scheduled-time": "@TIME@", "fluxo-trigger": trigger.name},
            "input": trigger.input,
        }
    ).replace("@TIME@", "{{workflow.scheduledTime}}")
    headers = [
        *auth_headers(secret),
        m.V1alpha1HTTPHeader(
            name="Idempotency-Key", value=f"cron:{trigger.name}:{{{{workflow.scheduledTime}}}}"
        ),
    ]
    fire = m.Template(
        name="start-job",
        http=m.HTTP(
            url=f"{gateway}/v1/workflows/{workflow}/jobs",
            method="POST",
            headers=headers,
            body=body,
            success_condition="response.statusCode == 201",
            timeout_seconds=30,
        ),
        retry_strategy=m.RetryStrategy(
            limit=m.IntOrString(3),
            retry_policy="Always",
            backoff=m.Backoff(duration="10s", factor=m.IntOrString(2), cap="120s"),
        ),
    )
    labels = {
        **MANAGED,
        **account_labels(account),
        "fluxo.dev/workflow": workflow,
        "fluxo.dev/trigger": trigger.name,
    }
    cron = m.CronWorkflow(
        api_version=API_VERSION,
        kind="CronWorkflow",
        metadata=m.ObjectMeta(
            name=scoped_name(account, f"{workflow}-{trigger.name}"), labels=labels
        ),
        spec=m.CronWorkflowSpec(
            schedules=list(trigger.schedules),
            timezone=trigger.timezone,
            suspend=trigger.suspend or None,
            concurrency_policy=trigger.concurrency_policy,
            workflow_spec=m.WorkflowSpec(
                entrypoint="start-job", service_account_name=service_account, templates=[fire]
            ),
        ),
    )
    return _dump(cron)


def _rbac(service_account: str, secret: str) -> tuple[dict[str, Any], ...]:
    """What the Argo HTTP agent (and the executor of container templates) may do, no more."""
    meta = {"name": service_account, "labels": dict(MANAGED)}
    rules = [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtasksets"],
            "verbs": ["list", "watch"],
        },
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtasksets/status"],
            "verbs": ["patch"],
        },
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtaskresults"],
            "verbs": ["create", "patch"],
        },
        # The agent reads the gateway token to set the Authorization header.
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]},
    ]
    token = f"{service_account}.service-account-token"
    return (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": service_account,
            },
            "subjects": [{"kind": "ServiceAccount", "name": service_account}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": token,
                "labels": dict(MANAGED),
                "annotations": {"kubernetes.io/service-account.name": service_account},
            },
            "type": "kubernetes.io/service-account-token",
        },
    )


def _gateway(url: str) -> str:
    if not re.match(r"^https?://[^\s/?#{}]+(/[^\s?#{}]*)?$", url):
        raise ConfigError(
            f"gateway_url={url!r} is not an http(s) URL: give the gateway as the Argo cluster "
            "reaches it, e.g. 'http://fluxo.fluxo-system.svc:8080'",
        )
    return url.rstrip("/")


def template_name(account: str | None, name: str, version: str | int) -> str:
    """The ``WorkflowTemplate`` name of workflow ``name`` version ``version`` of ``account``:
    ``<account>-<name>-v<version>-<hash>`` (:func:`~translators._argo_templates.scoped_name`),
    e.g. ``acme-order-intake-v3-4f1c0e9a2b``; ``<name>-v<version>`` without an account."""
    text = str(version).lower()
    clean = re.sub(r"[^a-z0-9-]", "-", text)
    if clean != text:  # keep distinct versions distinct ('1.2' vs '1-2')
        clean = f"{clean}-{hashlib.sha256(str(version).encode()).hexdigest()[:6]}"
    return scoped_name(account, f"{name}-{'' if clean.startswith('v') else 'v'}{clean}")


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


_PLACEHOLDER = re.compile("\x00([0-9]+)\x00")


def _resolve(model: Any, names: Mapping[int, str]) -> dict[str, Any]:
    """The model as a dict, task placeholders replaced by task names."""

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return _PLACEHOLDER.sub(lambda match: names[int(match.group(1))], node)
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    resolved: dict[str, Any] = walk(_dump(model))
    return resolved
