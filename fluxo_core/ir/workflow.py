"""The workflow IR: the one canonical, engine-neutral description of a user workflow.

A workflow is a Kubernetes-style resource. Its ``spec`` is an ordered list of steps with unique,
DNS-like ids (translators derive their stable node and template ids from them), linked by ``next``
edges; several targets in ``next`` are parallel branches. The same IR runs on every engine
(``step``, ``nodered``, ``argo``); only a ``native`` step ties a workflow to one engine. ::

    apiVersion: fluxo.dev/v1
    kind: Workflow
    metadata: {name: orders, account: acme, labels: {team: shop}}
    spec:
      engine: step
      input_schema: {type: object, required: [items], properties: {items: {type: array}}}
      steps:
        - id: enrich
          kind: service
          service: crm@2                 # name[@version]
          retry: {max_attempts: 3, backoff_s: 1}
          timeout_s: 30
          next: [route]
        - id: route
          kind: switch
          cases:
            - when: {path: total, op: gte, value: 1000}
              next: [review]
          default: [lines]
        - id: review
          kind: service
          service: manual-review
          on_error: {goto: notify}      # or: fail (the default) | continue
        - id: lines
          kind: split                    # one branch per item of payload.items
          path: items
          next: [reserve]
        - id: reserve
          kind: service
          service: stock
          next: [gather]
        - id: gather
          kind: join                     # fan-in: one array payload, in item order
          split: lines
          next: [notify]
        - id: notify
          kind: service
          service: mailer

Field checks (types, unknown fields, patterns) are pydantic's; the cross-node checks (dangling edges,
cycles, unreachable steps, join/split pairing, unknown services, native engines, the input schema) run
in :mod:`fluxo_core.ir.validation` and surface as one :class:`~fluxo_core.errors.IRValidationError`.
Use :func:`fluxo_core.ir.validation.validate_workflow` to get every problem, field and graph, at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Annotated, Any, Final, Literal, get_args

import jsonata
import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    WithJsonSchema,
)

from fluxo_core.errors import IRValidationError

__all__ = [
    "API_VERSION",
    "DEFAULT_ENGINE",
    "ENGINES",
    "EXPRESSION_KEY",
    "SCHEMA_VERSION",
    "STEP_KINDS",
    "AllOf",
    "AnyOf",
    "CompareOp",
    "Comparison",
    "Condition",
    "DelayStep",
    "DeleteOp",
    "EngineName",
    "JoinStep",
    "JsonataCondition",
    "JsonataOp",
    "MoveOp",
    "NativeStep",
    "Not",
    "OnError",
    "OnErrorGoto",
    "RetrySpec",
    "ServiceStep",
    "SetOp",
    "SplitStep",
    "Step",
    "SwitchCase",
    "SwitchStep",
    "TransformOp",
    "TransformStep",
    "Workflow",
    "WorkflowCallStep",
    "WorkflowMetadata",
    "WorkflowSpec",
    "workflow_document",
]

API_VERSION: Final = "fluxo.dev/v1"
SCHEMA_VERSION: Final = "1.0"
"""The IR's own version (like KFP's ``schemaVersion``); bumped when the IR's meaning changes."""

EngineName = Literal["step", "nodered", "argo"]
"""The engines a workflow can name in ``spec.engine``: the one list of engine names. The registry
(:mod:`fluxo_core.engine`) loads each by this name, and configuration and the CLI read it here."""
ENGINES: Final[tuple[EngineName, ...]] = get_args(EngineName)
DEFAULT_ENGINE: Final[EngineName] = "step"
"""Where a workflow without ``spec.engine`` runs; always present in a Fluxo."""
STEP_KINDS: Final = (
    "service",
    "switch",
    "transform",
    "split",
    "join",
    "delay",
    "workflow",
    "native",
)

NAME_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
VERSION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$"
REF_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(@[A-Za-z0-9][A-Za-z0-9._-]{0,49})?$"
ACCOUNT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"
LABEL_KEY_PATTERN: Final = (
    r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN: Final = r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$"
_PATH_PART = r'(?:[^.\[\]]+|\[[0-9]+\]|\["(?:[^"\\]|\\.)*"\])'
PATH_PATTERN: Final = rf'^{_PATH_PART}(?:\.[^.\[\]]+|\[[0-9]+\]|\["(?:[^"\\]|\\.)*"\])*$'

PATTERN_HINTS: Final[dict[str, str]] = {
    NAME_PATTERN: "use lowercase letters, digits and '-', starting and ending with a letter or "
    "digit, at most 63 characters (e.g. 'send-mail')",
    VERSION_PATTERN: "use letters, digits, '.', '_' or '-', at most 50 characters (e.g. '2' or 'v1.3')",
    REF_PATTERN: "write name or name@version, e.g. 'crm' or 'crm@2' (the name in lowercase "
    "letters, digits and '-')",
    ACCOUNT_PATTERN: "use letters, digits and '._:@/-', at most 128 characters",
    LABEL_KEY_PATTERN: "write a label key like 'team' or 'fluxo.dev/team'",
    LABEL_VALUE_PATTERN: "use letters, digits, '.', '_' or '-', at most 63 characters",
    PATH_PATTERN: "write a path like 'customer.email' or 'items[0].sku' (odd keys quoted: [\"a.b\"])",
}
"""What each pattern means, for error messages that say how to fix a value."""

StepId = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Ref = Annotated[str, StringConstraints(pattern=REF_PATTERN)]
FieldPath = Annotated[str, StringConstraints(pattern=PATH_PATTERN)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)]


def _check_jsonata(expr: str) -> str:
    if not expr.strip():
        raise ValueError("the JSONata expression is empty; write one such as 'total > 100'")
    problem = _jsonata_problem(expr)
    if problem is not None:
        raise ValueError(problem)
    return expr


@functools.lru_cache(maxsize=4096)
def _jsonata_problem(expr: str) -> str | None:
    """Why ``expr`` does not parse, or None. Cached: parsing is the slowest part of validating a
    workflow, and a workflow is often validated more than once (an import checks each step,
    then the whole workflow; a stored version is parsed again when loaded)."""
    try:
        jsonata.Jsonata(expr)
    except Exception as exc:  # the parser raises JException, and occasionally plain errors
        where = getattr(exc, "location", None)
        at = f" (at character {where})" if isinstance(where, int) and where > 0 else ""
        return f"invalid JSONata: {exc}{at}; fix the expression"
    return None


JsonataExpr = Annotated[str, AfterValidator(_check_jsonata)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


def _split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


# --- conditions ----------------------------------------------------------------------------------

CompareOp = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists", "not_exists", "regex"
]


class Comparison(_Model):
    """A structured test of one payload field; translatable to Node-RED rules and Argo ``when``.

    Attributes:
        path: the field, e.g. ``customer.tier`` or ``items[0].qty``.
        op: ``eq ne gt gte lt lte in contains exists not_exists regex``.
        value: what to compare with; a list for ``in``, a pattern for ``regex``, absent for
            ``exists`` and ``not_exists``.
    """

    path: FieldPath
    op: CompareOp
    value: Any = None

    @pydantic.model_validator(mode="after")
    def _value_fits_op(self) -> Comparison:
        op, value, given = self.op, self.value, "value" in self.model_fields_set
        if op in ("exists", "not_exists"):
            if given:
                raise ValueError(f"the {op} op takes no value: remove value")
        elif not given:
            raise ValueError(f"the {op} op needs a value: add value: ...")
        elif op == "in" and not isinstance(value, list):
            raise ValueError("the in op needs a list value, e.g. value: [gold, silver]")
        elif op in ("gt", "gte", "lt", "lte") and (
            isinstance(value, bool) or not isinstance(value, int | float | str)
        ):
            raise ValueError(f"the {op} op compares numbers or strings: give value a number")
        elif op == "regex":
            if not isinstance(value, str):
                raise ValueError("the regex op needs a pattern string as value")
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"value is not a valid regular expression: {exc}") from None
        return self


class AllOf(_Model):
    """True when every condition is (``all: [...]``)."""

    all: list[Condition] = Field(min_length=1)


class AnyOf(_Model):
    """True when at least one condition is (``any: [...]``)."""

    any: list[Condition] = Field(min_length=1)


class Not(_Model):
    """True when the condition is false (``not: {...}``)."""

    not_: Condition = Field(alias="not")


class JsonataCondition(_Model):
    """An escape hatch: a JSONata expression over the payload, true when it yields true.

    Prefer :class:`Comparison`: only structured conditions translate to every engine natively.
    """

    jsonata: JsonataExpr


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return _CONDITION_TAGS.get(type(value))
    if not isinstance(value, dict):
        return None
    return next((key for key in ("all", "any", "not", "jsonata") if key in value), "compare")


Condition = Annotated[
    Annotated[Comparison, Tag("compare")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[Not, Tag("not")]
    | Annotated[JsonataCondition, Tag("jsonata")],
    Discriminator(
        _condition_tag,
        custom_error_type="invalid_condition",
        custom_error_message="a condition is an object: {path, op, value}, {all: [...]}, "
        "{any: [...]}, {not: {...}} or {jsonata: '...'}",
    ),
]
"""One condition: a comparison, ``all``/``any``/``not`` of conditions, or ``jsonata``."""

_CONDITION_TAGS: dict[type[BaseModel], str] = {
    Comparison: "compare",
    AllOf: "all",
    AnyOf: "any",
    Not: "not",
    JsonataCondition: "jsonata",
}

AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


# --- transform ops (the same ops as the built-in ``transform`` service) -------------------------


class SetOp(_Model):
    """Set ``path`` to a constant ``value`` or to the result of the JSONata ``expr`` (exactly one)."""

    op: Literal["set"]
    path: FieldPath
    value: Any = None
    expr: JsonataExpr | None = None

    @pydantic.model_validator(mode="after")
    def _value_or_expr(self) -> SetOp:
        if ("value" in self.model_fields_set) == (self.expr is not None):
            raise ValueError("a set op takes either value or expr (exactly one)")
        return self


class MoveOp(_Model):
    """Move the field at ``from`` to ``to``."""

    op: Literal["move"]
    from_: FieldPath = Field(alias="from")
    to: FieldPath


class DeleteOp(_Model):
    """Delete the field at ``path`` (a missing field is not an error)."""

    op: Literal["delete"]
    path: FieldPath


class JsonataOp(_Model):
    """Replace the whole item with the result of ``expr`` (it must yield an object)."""

    op: Literal["jsonata"]
    expr: JsonataExpr


TransformOp = Annotated[SetOp | MoveOp | DeleteOp | JsonataOp, Field(discriminator="op")]


# --- error handling ------------------------------------------------------------------------------


class RetrySpec(_Model):
    """Retries of a failed step, with exponential backoff.

    Attributes:
        max_attempts: attempts in all, the first included (Argo's ``limit`` is one less).
        backoff_s: the wait before the second attempt.
        factor: each later wait is the previous one times ``factor``.
        backoff_max_s: the longest wait.
    """

    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_s: float = Field(default=1.0, ge=0)
    factor: float = Field(default=2.0, ge=1)
    backoff_max_s: float = Field(default=300.0, ge=0)

    @pydantic.model_validator(mode="after")
    def _max_above_base(self) -> RetrySpec:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError("backoff_max_s is below backoff_s: raise backoff_max_s")
        return self

    def delay_before(self, attempt: int) -> float:
        """The wait in seconds before ``attempt`` (2 for the first retry)."""
        return float(min(self.backoff_s * self.factor ** max(attempt - 2, 0), self.backoff_max_s))


class OnErrorGoto(_Model):
    """On failure, continue at another step (which receives the failed step's input)."""

    goto: StepId


def _on_error_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "action"
    if isinstance(value, dict | OnErrorGoto):
        return "goto"
    return None


OnError = Annotated[
    Annotated[Literal["fail", "continue"], Tag("action")] | Annotated[OnErrorGoto, Tag("goto")],
    Discriminator(
        _on_error_tag,
        custom_error_type="invalid_on_error",
        custom_error_message="on_error must be fail, continue or {goto: <step id>}",
    ),
]
"""``fail`` the job (default), ``continue`` along ``next`` with the input, or ``{goto: step}``."""


# --- steps ---------------------------------------------------------------------------------------


class _StepBase(_Model):
    id: StepId = Field(description="Unique in the workflow; translators derive their ids from it.")
    name: str | None = Field(default=None, max_length=200, description="A display label.")
    on_error: OnError = "fail"


class _FlowStep(_StepBase):
    next: list[StepId] = Field(
        default_factory=list, description="The steps that follow; several run in parallel."
    )


class _CallStep(_FlowStep):
    retry: RetrySpec | None = None
    timeout_s: float | None = Field(default=None, gt=0, description="Per attempt.")


def _check_param(value: Any) -> Any:
    """A ``with`` parameter: a static JSON value, or exactly ``{jsonata: '<expression>'}``."""
    if isinstance(value, dict) and EXPRESSION_KEY in value:
        expr = value[EXPRESSION_KEY]
        if len(value) != 1:
            others = ", ".join(sorted(repr(k) for k in value if k != EXPRESSION_KEY))
            raise ValueError(
                f"an expression is {{jsonata: '<expression>'}} alone, but this one also has "
                f"{others}: remove them, or compute the whole value in the expression"
            )
        if not isinstance(expr, str):
            raise ValueError(
                "jsonata must be an expression string such as 'total * 2', "
                f"not {type(expr).__name__}"
            )
        _check_jsonata(expr)
        return value
    nested = _nested_expression(value, "")
    if nested is not None:
        raise ValueError(
            f"an expression at {nested or 'this value'} is not evaluated: only a parameter's "
            "whole value may be {jsonata: ...}; build the object in one expression, e.g. "
            "{jsonata: \"{'a': x}\"}"
        )
    return value


def _is_expression(value: Any) -> bool:
    return isinstance(value, dict) and list(value) == [EXPRESSION_KEY]


def _nested_expression(value: Any, where: str) -> str | None:
    """The path, inside a static value, of the first ``{jsonata: ...}`` mapping, or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if _is_expression(item):
                return here
            found = _nested_expression(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for n, item in enumerate(value):
            here = f"{where}[{n}]"
            if _is_expression(item):
                return here
            found = _nested_expression(item, here)
            if found is not None:
                return found
    return None


EXPRESSION_KEY: Final = "jsonata"
"""The one expression form of the IR outside conditions and ops: ``{jsonata: '<expression>'}``."""


def _check_param_name(name: str) -> str:
    if not name:
        raise ValueError("a parameter name is empty: write the payload field it sets")
    return name


ParamName = Annotated[
    str,
    StringConstraints(max_length=200),
    AfterValidator(_check_param_name),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200}),
]
ParamValue = Annotated[
    Any,
    AfterValidator(_check_param),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "object",
                    "title": "Expression",
                    "description": "A JSONata expression evaluated on the step's input item.",
                    "properties": {"jsonata": {"type": "string", "minLength": 1}},
                    "required": ["jsonata"],
                    "additionalProperties": False,
                },
                {
                    "title": "Static value",
                    "description": "Any JSON value except an object holding the key jsonata.",
                    "not": {"type": "object", "required": ["jsonata"]},
                },
            ]
        }
    ),
]
"""One ``with`` parameter: a static JSON value or ``{jsonata: '<expression>'}``."""


class ServiceStep(_CallStep):
    """Call a published service by ``name`` or ``name@version`` (no version: the latest).

    Attributes:
        service: the service, ``name`` or ``name@version``.
        with_: parameters (``with:`` in documents) set on what the service receives. The call's
            payload is the step's input with each parameter set as a top-level field: an object
            input gives ``{**input, **parameters}``, an array input has each item so extended
            (items must then be objects); a parameter replaces a field of the same name. A
            value is static JSON, or ``{jsonata: '<expression>'}`` evaluated on the input item
            (``$`` is the item, as in a transform's ``set``; every expression sees the step's
            input, not the other parameters); an expression yielding nothing leaves the field as
            the item has it. The step's input itself is unchanged: ``on_error`` hands it on and a
            retry builds the call from it again. Static values run on every engine; expressions
            on ``step`` and ``nodered`` (Argo refuses them when the workflow is applied).
    """

    kind: Literal["service"]
    service: Ref
    with_: dict[ParamName, ParamValue] = Field(
        default_factory=dict,
        alias="with",
        description="Parameters set on the call's payload (each item): static JSON values, or "
        "{jsonata: '<expression>'} evaluated on the step's input item.",
    )

    @property
    def static_params(self) -> dict[str, Any]:
        """The ``with`` parameters that are static values."""
        return {k: v for k, v in self.with_.items() if not _is_expression(v)}

    @property
    def param_expressions(self) -> dict[str, str]:
        """The ``with`` parameters that are expressions, as their JSONata text."""
        return {k: v[EXPRESSION_KEY] for k, v in self.with_.items() if _is_expression(v)}

    @property
    def service_name(self) -> str:
        return _split_ref(self.service)[0]

    @property
    def service_version(self) -> str | None:
        return _split_ref(self.service)[1]


class WorkflowCallStep(_CallStep):
    """Call another workflow published as a service, by ``name`` or ``name@version``."""

    kind: Literal["workflow"]
    workflow: Ref

    @property
    def workflow_name(self) -> str:
        return _split_ref(self.workflow)[0]

    @property
    def workflow_version(self) -> str | None:
        return _split_ref(self.workflow)[1]


class NativeStep(_CallStep):
    """An engine-specific node kept verbatim from an import; runs only on ``engine``.

    Attributes:
        engine: the engine the node belongs to (``nodered``, ``argo``).
        config: the node as the engine wrote it, untouched (a Node-RED node, an Argo template).
    """

    kind: Literal["native"]
    engine: Name
    config: dict[str, Any] = Field(default_factory=dict)


class SwitchCase(_Model):
    """One branch of a switch: where to go when ``when`` holds."""

    when: Condition
    next: list[StepId] = Field(min_length=1)


class SwitchStep(_StepBase):
    """Route the payload by conditions.

    Attributes:
        cases: tested in order; ``mode: first`` takes the first match, ``all`` every match.
        default: where to go when no case matches (empty: the branch ends here).
    """

    kind: Literal["switch"]
    cases: list[SwitchCase] = Field(min_length=1)
    default: list[StepId] = Field(default_factory=list)
    mode: Literal["first", "all"] = "first"


class TransformStep(_FlowStep):
    """Reshape the payload in place with the ops of the built-in ``transform`` service."""

    kind: Literal["transform"]
    ops: list[TransformOp] = Field(min_length=1)


class SplitStep(_FlowStep):
    """Fan out: run the ``next`` branch once per item of the array at ``path``.

    ``path`` absent means the payload itself (it must be an array). A split needs no join: without
    one, each branch simply runs to its end.
    """

    kind: Literal["split"]
    path: FieldPath | None = None


class JoinStep(_FlowStep):
    """Fan in: wait for every branch of ``split`` and pass on one array, in item order.

    ``split`` names a split step (a branch per item) or a service step (a branch per output
    packet of a 1 -> N call, in the order the service returned them).
    """

    kind: Literal["join"]
    split: StepId = Field(
        description="The split step, or the 1 -> N service step, whose branches this join gathers."
    )


class DelayStep(_FlowStep):
    """Wait ``seconds`` before passing the payload on."""

    kind: Literal["delay"]
    seconds: float = Field(gt=0)


Step = Annotated[
    ServiceStep
    | SwitchStep
    | TransformStep
    | SplitStep
    | JoinStep
    | DelayStep
    | WorkflowCallStep
    | NativeStep,
    Field(discriminator="kind"),
]
"""One step, chosen by its ``kind``."""


# --- the resource --------------------------------------------------------------------------------


class WorkflowMetadata(_Model):
    """Who the workflow is and whose.

    Attributes:
        name: the workflow's name, unique in its account; also its service name when published.
        account: the owning account (set from the caller's credentials when absent).
        labels: free ``key: value`` tags for selection.
        version: assigned by the control plane on apply (from :meth:`Workflow.content_hash`).
        uid, resourceVersion, generation: assigned by the control plane; kept on round trips.
    """

    name: Name
    account: Annotated[str, StringConstraints(pattern=ACCOUNT_PATTERN)] | None = None
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    version: Annotated[str, StringConstraints(pattern=VERSION_PATTERN)] | None = None
    uid: str | None = Field(default=None, max_length=128)
    resource_version: str | None = Field(default=None, alias="resourceVersion", max_length=128)
    generation: int | None = Field(default=None, ge=0)


SOURCE_FILE_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$"
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"


class WorkflowSource(_Model):
    """The file a workflow was imported from, kept so that an export gives it back.

    ``fluxo import nodered`` writes the flow file next to the workflow YAML (a sidecar) and
    names it here; ``fluxo apply`` and ``fluxo validate`` read it and send it inline (``flow``);
    the control plane stores the flow once per account by its digest and keeps only ``file``
    and ``sha256`` in the version, so a changed flow file is a new version.

    Attributes:
        format: the source system (``nodered``).
        file: the sidecar's file name, in the workflow file's folder.
        sha256: the digest of the flow (hex of the sha256 of its canonical JSON); set when the
            flow is read.
        flow: the flow's nodes, in transit only (never stored in the version).
    """

    format: Literal["nodered"] = "nodered"
    file: Annotated[str, StringConstraints(pattern=SOURCE_FILE_PATTERN)]
    sha256: Annotated[str, StringConstraints(pattern=SHA256_PATTERN)] | None = None
    flow: list[dict[str, Any]] | None = None


class WorkflowSpec(_Model):
    """What the workflow does.

    Attributes:
        schema_version: the IR version this document is written in.
        engine: where it runs; absent means the installation's default engine.
        description: free text, shown with the workflow (and on its form).
        input_schema: a JSON Schema (draft 2020-12) of the job input; forms are generated from it.
        start: the first step; defaults to the first step listed.
        steps: the steps, in a stable order; ``id`` is unique.
        output: the step whose output is the job result; absent means the terminal step(s) reached.
        source: the file the workflow was imported from (:class:`WorkflowSource`).
    """

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    engine: EngineName | None = None
    description: str | None = Field(default=None, max_length=2000)
    input_schema: dict[str, Any] | None = None
    start: StepId | None = None
    steps: list[Step] = Field(min_length=1)
    output: StepId | None = None
    source: WorkflowSource | None = None

    @property
    def start_id(self) -> str:
        """The id of the step a job begins at."""
        return self.start or self.steps[0].id

    def steps_by_id(self) -> dict[str, Step]:
        """The steps keyed by id."""
        return {step.id: step for step in self.steps}


class Workflow(_Model):
    """A workflow resource (``apiVersion: fluxo.dev/v1``, ``kind: Workflow``).

    Validating one also runs the cross-node checks; a graph problem raises
    :class:`~fluxo_core.errors.IRValidationError` (field problems raise pydantic's error). Pass
    ``context={"known_services": [...]}`` to check service names too, or use
    :func:`~fluxo_core.ir.validation.validate_workflow`, which reports both kinds together.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "$id": "https://fluxo.dev/schemas/workflow.json",
            "title": "Fluxo workflow",
        },
    )

    api_version: Literal["fluxo.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Workflow"]
    metadata: WorkflowMetadata
    spec: WorkflowSpec

    @pydantic.model_validator(mode="after")
    def _cross_node_checks(self, info: ValidationInfo) -> Workflow:
        # Imported here: validation.py builds on these models, and this hook is its only way back.
        from fluxo_core.ir.validation import graph_problems

        context = info.context if isinstance(info.context, dict) else {}
        problems = graph_problems(self.model_dump(), known_services=context.get("known_services"))
        if problems:
            raise IRValidationError(
                f"invalid workflow {self.metadata.name!r}: fix the problems listed below",
                problems=problems,
                workflow=self.metadata.name,
            )
        return self

    @property
    def ref(self) -> str | None:
        """``name@version`` once the control plane has assigned a version, else None."""
        version = self.metadata.version
        return f"{self.metadata.name}@{version}" if version else None

    def content_hash(self) -> str:
        """The sha256 (hex) of the canonical JSON of ``spec``.

        Canonical: keys sorted, no whitespace, fields left at their defaults omitted. So the hash
        ignores key order, formatting, metadata and spelled-out defaults, and changes with anything
        that changes behaviour: re-applying an unchanged workflow is a no-op, a changed one is a new
        version.
        """
        canonical = json.dumps(
            self.spec.model_dump(mode="json", exclude_defaults=True),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def workflow_document(workflow: Workflow) -> dict[str, Any]:
    """The workflow as a JSON-ready document that validates back to the same workflow.

    Fields are written as they were set, and only those (``exclude_unset``): a ``value: null``
    its author wrote stays (dropping every None, as ``exclude_none`` does, turns
    ``{op: set, path: x, value: null}`` into a set op without a value, which no longer
    validates), and defaults stay implicit.
    """
    return workflow.model_dump(mode="json", by_alias=True, exclude_unset=True)
