"""The workflow IR: models, cross-node validation, YAML loading, JSON Schema and content hashing."""

from __future__ import annotations

import copy
import json
import textwrap
from typing import Any

import jsonschema
import pytest
import yaml

from fluxo_core.errors import IRValidationError, MalformedRequestError, NotFoundError
from fluxo_core.ir import (
    SCHEMA_VERSION,
    AllOf,
    Comparison,
    JoinStep,
    NativeStep,
    Not,
    OnErrorGoto,
    RetrySpec,
    ServiceStep,
    SplitStep,
    SwitchStep,
    TransformStep,
    Workflow,
    WorkflowCallStep,
    graph_problems,
    json_schema,
    load_workflows_yaml,
    validate_workflow,
)
from fluxo_core.ir import workflow as workflow_module

KNOWN = {"crm", "mailer", "stock", "manual-review", "noop", "billing@1", "billing@2"}


def wf(*steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A workflow document with the given steps."""
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": "orders", "account": "acme"},
        "spec": {"steps": list(steps), **spec},
    }


def svc(step_id: str, *nxt: str, service: str = "crm", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "service", "service": service, "next": list(nxt), **extra}


def problems(doc: Any, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(IRValidationError) as info:
        validate_workflow(doc, **kwargs)
    return info.value.problems


def locations(doc: Any, **kwargs: Any) -> list[str]:
    return [loc for loc, _ in problems(doc, **kwargs)]


DOC_EXAMPLE = textwrap.dedent(
    str(workflow_module.__doc__).split("::", 1)[1].split("\n\nField checks")[0]
)


# --- valid workflows ----------------------------------------------------------------------------


def test_module_docstring_example_is_valid() -> None:
    workflow = validate_workflow(yaml.safe_load(DOC_EXAMPLE), known_services=KNOWN)
    assert workflow.metadata.name == "orders"
    assert workflow.spec.engine == "step"
    assert [s.kind for s in workflow.spec.steps] == [
        "service",
        "switch",
        "service",
        "split",
        "service",
        "join",
        "service",
    ]
    assert workflow.spec.schema_version == SCHEMA_VERSION


def test_linear_workflow_defaults() -> None:
    workflow = validate_workflow(wf(svc("a", "b"), svc("b", service="mailer@3")))
    spec = workflow.spec
    assert spec.start_id == "a"
    assert spec.engine is None
    assert spec.output is None
    first, second = spec.steps
    assert isinstance(first, ServiceStep)
    assert first.next == ["b"]
    assert first.on_error == "fail"
    assert first.retry is None
    assert isinstance(second, ServiceStep)
    assert (second.service_name, second.service_version) == ("mailer", "3")
    assert (first.service_name, first.service_version) == ("crm", None)
    assert set(spec.steps_by_id()) == {"a", "b"}
    assert workflow.ref is None


def test_parallel_branches_and_explicit_start_and_output() -> None:
    doc = wf(
        svc("b", "d"),
        svc("a", "b", "c"),  # two targets: parallel branches
        svc("c", "d"),
        svc("d"),
        start="a",
        output="d",
    )
    workflow = validate_workflow(doc)
    assert workflow.spec.start_id == "a"
    assert workflow.spec.output == "d"
    assert workflow.spec.steps[1].next == ["b", "c"]  # type: ignore[union-attr]


def test_fan_out_fan_in() -> None:
    doc = wf(
        {"id": "lines", "kind": "split", "path": "order.items", "next": ["reserve"]},
        svc("reserve", "gather", service="stock"),
        {"id": "gather", "kind": "join", "split": "lines", "next": ["notify"]},
        svc("notify", service="mailer"),
    )
    steps = validate_workflow(doc, known_services=KNOWN).spec.steps
    assert isinstance(steps[0], SplitStep)
    assert steps[0].path == "order.items"
    assert isinstance(steps[2], JoinStep)
    assert steps[2].split == "lines"


def test_split_without_join_is_allowed() -> None:
    doc = wf({"id": "each", "kind": "split", "next": ["mail"]}, svc("mail", service="mailer"))
    steps = validate_workflow(doc).spec.steps
    assert isinstance(steps[0], SplitStep)
    assert steps[0].path is None  # the payload itself is the array


def test_switch_with_every_condition_form() -> None:
    doc = wf(
        {
            "id": "route",
            "kind": "switch",
            "mode": "all",
            "cases": [
                {"when": {"path": "total", "op": "gte", "value": 1000}, "next": ["big"]},
                {
                    "when": {
                        "all": [
                            {"path": "customer.tier", "op": "in", "value": ["gold", "silver"]},
                            {"not": {"path": "blocked", "op": "exists"}},
                            {"any": [{"path": 'tags["a.b"]', "op": "contains", "value": "vip"}]},
                        ]
                    },
                    "next": ["vip"],
                },
                {
                    "when": {"path": "email", "op": "regex", "value": "@acme\\.com$"},
                    "next": ["vip"],
                },
                {"when": {"jsonata": "$count(items) > 3"}, "next": ["big"]},
            ],
            "default": ["small"],
        },
        svc("big"),
        svc("vip"),
        svc("small"),
    )
    switch = validate_workflow(doc).spec.steps[0]
    assert isinstance(switch, SwitchStep)
    assert switch.mode == "all"
    assert switch.default == ["small"]
    assert isinstance(switch.cases[0].when, Comparison)
    assert switch.cases[0].when.op == "gte"
    combined = switch.cases[1].when
    assert isinstance(combined, AllOf)
    assert isinstance(combined.all[1], Not)
    assert isinstance(combined.all[1].not_, Comparison)
    assert switch.model_dump()["cases"][1]["when"]["all"][1] == {
        "not": {"path": "blocked", "op": "exists", "value": None}
    }


def test_error_handling_fields() -> None:
    doc = wf(
        svc(
            "charge",
            "ship",
            service="billing@2",
            retry={"max_attempts": 4, "backoff_s": 0.5, "backoff_max_s": 1.5},
            timeout_s=30,
            on_error={"goto": "refund"},
        ),
        svc("ship", service="stock", on_error="continue"),
        svc("refund", service="billing"),
    )
    steps = validate_workflow(doc, known_services=KNOWN).spec.steps
    charge = steps[0]
    assert isinstance(charge, ServiceStep)
    assert charge.on_error == OnErrorGoto(goto="refund")
    assert charge.timeout_s == 30.0
    assert charge.retry == RetrySpec(max_attempts=4, backoff_s=0.5, backoff_max_s=1.5)
    assert [charge.retry.delay_before(n) for n in (2, 3, 4, 5)] == [0.5, 1.0, 1.5, 1.5]
    assert steps[1].on_error == "continue"


def test_transform_delay_workflow_and_native_steps() -> None:
    doc = wf(
        {
            "id": "shape",
            "kind": "transform",
            "ops": [
                {"op": "set", "path": "customer.tier", "value": "gold"},
                {"op": "set", "path": "total", "expr": "$sum(items.(qty * price))"},
                {"op": "move", "from": "customer.mail", "to": "customer.email"},
                {"op": "delete", "path": "items[0].internal"},
                {"op": "jsonata", "expr": "{'id': order_id}"},
            ],
            "next": ["wait"],
        },
        {"id": "wait", "kind": "delay", "seconds": 1.5, "next": ["sub"]},
        {"id": "sub", "kind": "workflow", "workflow": "invoicing@4", "next": ["raw"]},
        {"id": "raw", "kind": "native", "engine": "nodered", "config": {"type": "function"}},
        engine="nodered",
    )
    steps = validate_workflow(doc).spec.steps
    assert isinstance(steps[0], TransformStep)
    assert [op.op for op in steps[0].ops] == ["set", "set", "move", "delete", "jsonata"]
    assert steps[0].model_dump()["ops"][2] == {
        "op": "move",
        "from": "customer.mail",
        "to": "customer.email",
    }
    assert isinstance(steps[2], WorkflowCallStep)
    assert (steps[2].workflow_name, steps[2].workflow_version) == ("invoicing", "4")
    assert isinstance(steps[3], NativeStep)
    assert steps[3].config == {"type": "function"}


def test_native_step_without_engine_is_allowed() -> None:
    doc = wf({"id": "raw", "kind": "native", "engine": "argo", "config": {"container": {}}})
    assert validate_workflow(doc).spec.engine is None


def test_known_services_accept_versions_and_names() -> None:
    doc = wf(svc("a", "b", service="billing@1"), svc("b", service="crm@7"))
    validate_workflow(doc, known_services=KNOWN)  # crm is known without versions: any version


def test_validating_a_workflow_instance_checks_known_services() -> None:
    workflow = validate_workflow(wf(svc("a", service="nobody")))
    assert locations(workflow, known_services=KNOWN) == ["spec.steps[0].service"]


# --- graph problems -----------------------------------------------------------------------------


def test_dangling_next_suggests_the_closest_step() -> None:
    doc = wf(svc("pack", "shipp"), svc("ship"))
    assert problems(doc) == [
        ("spec.steps[0].next[0]", "unknown step 'shipp' (did you mean 'ship'?)"),
        (
            "spec.steps[1]",
            "step 'ship' is unreachable from the start step 'pack': route to it with next, "
            "a switch case or on_error.goto, or remove it",
        ),
    ]


def test_dangling_edge_without_close_match_lists_the_steps() -> None:
    assert problems(wf(svc("a", "zzz"))) == [
        ("spec.steps[0].next[0]", "unknown step 'zzz': use one of a"),
    ]


def test_dangling_goto_default_start_and_output() -> None:
    doc = wf(
        {
            "id": "route",
            "kind": "switch",
            "cases": [{"when": {"path": "x", "op": "eq", "value": 1}, "next": ["done"]}],
            "default": ["nowhere"],
        },
        svc("done", on_error={"goto": "dne"}),
        start="rout",
        output="don",
    )
    assert problems(doc) == [
        ("spec.output", "unknown step 'don' (did you mean 'done'?)"),
        ("spec.start", "unknown step 'rout' (did you mean 'route'?)"),
        ("spec.steps[0].default[0]", "unknown step 'nowhere': use one of route, done"),
        ("spec.steps[1].on_error.goto", "unknown step 'dne' (did you mean 'done'?)"),
    ]


def test_duplicate_ids_and_repeated_targets() -> None:
    doc = wf(svc("a", "b", "b"), svc("b"), svc("a"))
    assert problems(doc) == [
        ("spec.steps[0].next[1]", "step 'b' is listed twice: remove the repeat"),
        (
            "spec.steps[2].id",
            "duplicate step id 'a' (also spec.steps[0]): give every step its own id",
        ),
    ]


def test_cycle_is_reported_with_its_path_at_the_back_edge() -> None:
    doc = wf(svc("a", "b"), svc("b", "c"), svc("c", "d", "b"), svc("d"))
    assert problems(doc) == [
        (
            "spec.steps[2].next[1]",
            "cycle b -> c -> b: a workflow must be acyclic; repeat attempts with retry, "
            "repeat over items with split",
        )
    ]


def test_self_loop_and_goto_loop_are_cycles() -> None:
    doc = wf(svc("a", "a", "b"), svc("b", "c"), svc("c", on_error={"goto": "b"}))
    assert problems(doc) == [
        (
            "spec.steps[0].next[0]",
            "cycle a -> a: a workflow must be acyclic; repeat attempts with retry, "
            "repeat over items with split",
        ),
        (
            "spec.steps[2].on_error.goto",
            "cycle b -> c -> b: a workflow must be acyclic; repeat attempts with retry, "
            "repeat over items with split",
        ),
    ]


def test_unreachable_step() -> None:
    doc = wf(svc("a"), svc("orphan", "a"))
    assert problems(doc) == [
        (
            "spec.steps[1]",
            "step 'orphan' is unreachable from the start step 'a': route to it with next, "
            "a switch case or on_error.goto, or remove it",
        )
    ]


def test_a_join_may_gather_the_outputs_of_a_service_step() -> None:
    doc = wf(
        svc("fan", "each"),
        svc("each", "gather"),
        {"id": "gather", "kind": "join", "split": "fan", "next": ["total"]},
        svc("total"),
    )
    workflow = validate_workflow(doc)
    assert workflow.spec.steps_by_id()["gather"].kind == "join"


def test_join_problems() -> None:
    doc = wf(
        {"id": "fan", "kind": "split", "next": ["work", "other"]},
        svc("work", "j1", "j2", "j3"),
        {"id": "j1", "kind": "join", "split": "fan"},
        {"id": "j2", "kind": "join", "split": "fann"},
        {"id": "j3", "kind": "join", "split": "other"},
        {"id": "other", "kind": "join", "split": "fan"},
        {"id": "side", "kind": "split", "next": []},
        {"id": "j4", "kind": "join", "split": "side"},
        start="fan",
    )
    found = dict(problems(doc))
    assert found["spec.steps[3].split"] == "unknown split step 'fann' (did you mean 'fan'?)"
    assert found["spec.steps[4].split"] == (
        "step 'other' is a join step: name the split whose items, or the service step whose "
        "output packets, this join gathers"
    )
    assert found["spec.steps[5].split"] == (
        "split 'fan' is already gathered by join 'j1': a split has at most one join"
    )
    assert found["spec.steps[7].split"] == (
        "join 'j4' is not downstream of split 'side': put it on a path that starts at 'side'"
    )


def test_native_step_on_another_engine() -> None:
    doc = wf({"id": "raw", "kind": "native", "engine": "nodered", "config": {}}, engine="argo")
    assert problems(doc) == [
        (
            "spec.steps[0].engine",
            "a native nodered step cannot run on the 'argo' engine: set "
            "spec.engine: nodered or replace the step with portable steps",
        )
    ]
    # The step engine interprets some Node-RED nodes; its deploy decides per node.
    step = wf({"id": "raw", "kind": "native", "engine": "nodered", "config": {}}, engine="step")
    assert validate_workflow(step).spec.engine == "step"


def test_native_steps_of_two_engines() -> None:
    doc = wf(
        {"id": "a", "kind": "native", "engine": "nodered", "next": ["b"]},
        {"id": "b", "kind": "native", "engine": "argo"},
    )
    assert problems(doc) == [
        (
            "spec.steps[1].engine",
            "this native step needs the argo engine but spec.steps[0] needs nodered: "
            "a workflow runs on one engine",
        )
    ]


def test_unknown_services_and_workflows() -> None:
    doc = wf(
        svc("a", "b", "c", "d", service="mailr"),
        svc("b", service="billing@3"),
        {"id": "c", "kind": "workflow", "workflow": "invoicing"},
        svc("d", service="zzzz"),
    )
    assert problems(doc, known_services=KNOWN) == [
        ("spec.steps[0].service", "unknown service 'mailr' (did you mean 'mailer'?)"),
        (
            "spec.steps[1].service",
            "service 'billing' has no version '3': use one of 1, 2, or drop @3 for the latest",
        ),
        (
            "spec.steps[2].workflow",
            "unknown workflow 'invoicing' (no service of that name): publish the workflow first "
            "or fix the name",
        ),
        (
            "spec.steps[3].service",
            "unknown service 'zzzz': publish the service first or fix the name",
        ),
    ]
    validate_workflow(doc)  # without known_services, names are not checked


def test_invalid_input_schema_is_located_inside_the_schema() -> None:
    doc = wf(
        svc("a"),
        input_schema={"type": "object", "properties": {"age": {"type": "integr"}}, "required": 3},
    )
    assert problems(doc) == [
        (
            "spec.input_schema.properties.age.type",
            "not a valid JSON Schema (draft 2020-12): 'integr' is not valid under any of the given "
            "schemas (did you mean 'integer'?)",
        ),
        (
            "spec.input_schema.required",
            "not a valid JSON Schema (draft 2020-12): 3 is not of type 'array'",
        ),
    ]


def test_graph_problems_alone_tolerate_garbage() -> None:
    assert graph_problems(None) == []
    assert graph_problems({"spec": {"steps": "nope"}}) == []
    assert graph_problems({"spec": {"steps": [1, {"id": 5}, {"id": "a", "next": [7, "b"]}]}}) == [
        ("spec.steps[2].next[1]", "unknown step 'b': use one of a"),
    ]


def test_direct_model_validation_runs_the_graph_checks() -> None:
    with pytest.raises(IRValidationError) as info:
        Workflow.model_validate(wf(svc("a", "nope")))
    assert info.value.problems[0][0] == "spec.steps[0].next[0]"
    with pytest.raises(IRValidationError):
        Workflow.model_validate(wf(svc("a", service="x")), context={"known_services": ["crm"]})
    assert Workflow.model_validate(wf(svc("a"))).spec.start_id == "a"


# --- field problems -----------------------------------------------------------------------------


def test_wrong_field_names_suggest_the_right_one() -> None:
    doc = wf(svc("a", nxt=["b"], retyr={"max_attempts": 2}), svc("b"))
    doc["metadata"]["lables"] = {}
    found = problems(doc)
    assert ("metadata.lables", "unknown field 'lables' (did you mean 'labels'?)") in found
    assert ("spec.steps[0].nxt", "unknown field 'nxt' (did you mean 'next'?)") in found
    assert ("spec.steps[0].retyr", "unknown field 'retyr' (did you mean 'retry'?)") in found


def test_wrong_field_without_close_match_lists_the_allowed_fields() -> None:
    found = dict(problems(wf({"id": "w", "kind": "delay", "seconds": 1, "colour": "red"})))
    assert found["spec.steps[0].colour"] == (
        "unknown field 'colour': remove it; allowed here: id, name, on_error, next, kind, seconds"
    )


def test_fields_that_belong_to_other_step_kinds() -> None:
    doc = wf(
        {
            "id": "route",
            "kind": "switch",
            "cases": [{"when": {"path": "x", "op": "exists"}, "next": ["t"]}],
            "next": ["t"],
            "retry": {},
        },
        {"id": "t", "kind": "transform", "ops": [{"op": "delete", "path": "x"}], "service": "crm"},
    )
    found = dict(problems(doc))
    assert found["spec.steps[0].next"] == (
        "unknown field 'next': a switch routes with cases[].next and default: move the targets there"
    )
    assert found["spec.steps[0].retry"] == (
        "unknown field 'retry': only service, workflow and native steps take retry and timeout_s"
    )
    assert found["spec.steps[1].service"] == (
        "unknown field 'service': a transform step has none; for a service step set kind: service"
    )


def test_unknown_and_missing_kind() -> None:
    doc = wf(
        {"id": "a", "kind": "servce", "service": "crm", "next": ["b"]},
        {"id": "b", "service": "crm"},
    )
    found = problems(doc)
    assert found[0] == (
        "spec.steps[0].kind",
        "unknown kind 'servce' (did you mean 'service'?); use one of service, switch, transform, "
        "split, join, delay, workflow, native",
    )
    assert found[1] == (
        "spec.steps[1].kind",
        "required field 'kind' is missing: set it to one of service, switch, transform, split, "
        "join, delay, workflow, native",
    )


def test_value_problems_name_the_fix() -> None:
    doc = wf(svc("Bad_Id", service="CRM", on_error="retry", timeout_s=0))
    doc["apiVersion"] = "fluxo.dev/v2"
    doc["kind"] = "Workflo"
    found = dict(problems(doc))
    assert found["apiVersion"] == (
        "'fluxo.dev/v2' is not allowed here (did you mean 'fluxo.dev/v1'?); use one of fluxo.dev/v1"
    )
    assert found["kind"].startswith("'Workflo' is not allowed here (did you mean 'Workflow'?)")
    assert found["spec.steps[0].id"] == (
        "'Bad_Id' is not valid here: use lowercase letters, digits and '-', starting and ending "
        "with a letter or digit, at most 63 characters (e.g. 'send-mail')"
    )
    assert found["spec.steps[0].service"].startswith("'CRM' is not valid here: write name or")
    assert found["spec.steps[0].on_error"] == (
        "'retry' is not allowed here; use one of fail, continue or {goto: <step id>}"
    )
    assert found["spec.steps[0].timeout_s"] == "Input should be greater than 0"


def test_condition_and_op_rules() -> None:
    def case(when: Any) -> dict[str, Any]:
        return {"when": when, "next": ["end"]}

    doc = wf(
        {
            "id": "route",
            "kind": "switch",
            "cases": [
                case({"path": "x", "op": "eqq", "value": 1}),
                case({"path": "x", "op": "eq"}),
                case({"path": "x", "op": "exists", "value": True}),
                case({"path": "x", "op": "in", "value": "gold"}),
                case({"path": "x", "op": "gt", "value": [1]}),
                case({"path": "x", "op": "regex", "value": "("}),
                case({"any": [{"jsonata": "a +"}]}),
                case(5),
                case({"path": "a..b", "op": "exists"}),
            ],
        },
        {
            "id": "end",
            "kind": "transform",
            "ops": [
                {"op": "set", "path": "a", "value": 1, "expr": "b"},
                {"op": "set", "path": "a"},
                {"op": "mov", "from": "a", "to": "b"},
            ],
        },
    )
    found = dict(problems(doc))
    at = "spec.steps[0].cases"
    assert found[f"{at}[0].when.op"].startswith("'eqq' is not allowed here (did you mean 'eq'?)")
    assert found[f"{at}[1].when"] == "the eq op needs a value: add value: ..."
    assert found[f"{at}[2].when"] == "the exists op takes no value: remove value"
    assert found[f"{at}[3].when"] == "the in op needs a list value, e.g. value: [gold, silver]"
    assert found[f"{at}[4].when"] == "the gt op compares numbers or strings: give value a number"
    assert found[f"{at}[5].when"].startswith("value is not a valid regular expression")
    assert found[f"{at}[6].when.any[0].jsonata"].startswith("invalid JSONata: ")
    assert found[f"{at}[7].when"].startswith("a condition is an object: {path, op, value}")
    assert found[f"{at}[8].when.path"].startswith("'a..b' is not valid here: write a path like")
    ops = "spec.steps[1].ops"
    assert found[f"{ops}[0]"] == "a set op takes either value or expr (exactly one)"
    assert found[f"{ops}[1]"] == "a set op takes either value or expr (exactly one)"
    assert found[f"{ops}[2].op"] == (
        "unknown op 'mov' (did you mean 'move'?); use one of set, move, delete, jsonata"
    )


def test_retry_backoff_bounds() -> None:
    found = dict(
        problems(wf(svc("a", retry={"max_attempts": 0, "backoff_s": 5, "backoff_max_s": 1})))
    )
    assert found["spec.steps[0].retry.max_attempts"] == "Input should be greater than or equal to 1"
    found = dict(problems(wf(svc("a", retry={"backoff_s": 5, "backoff_max_s": 1}))))
    assert found["spec.steps[0].retry"] == "backoff_max_s is below backoff_s: raise backoff_max_s"


def test_not_a_mapping_and_empty_steps() -> None:
    assert problems([1, 2]) == [
        (
            "",
            "a workflow document is a mapping with apiVersion, kind, metadata and spec, not a list",
        )
    ]
    assert problems(wf()) == [
        ("spec.steps", "List should have at least 1 item after validation, not 0")
    ]


def test_field_and_graph_problems_are_reported_together() -> None:
    doc = wf(
        svc("a", "shipp", "c"),
        svc("ship", nxt=[]),
        {"id": "c", "kind": "delay"},
        svc("a"),
        engine="nodred",
    )
    assert locations(doc, known_services={"crm"}) == [
        "spec.engine",
        "spec.steps[0].next[0]",
        "spec.steps[1]",
        "spec.steps[1].nxt",
        "spec.steps[2].seconds",
        "spec.steps[3].id",
    ]


def test_error_carries_code_and_every_problem() -> None:
    with pytest.raises(IRValidationError) as info:
        validate_workflow(wf(svc("a", "b", "c")))
    err = info.value
    assert err.code == "invalid_workflow"
    assert err.http_status == 422
    assert err.context == {"workflow": "orders"}
    body = err.to_dict()
    assert body["problems"] == [
        {"location": "spec.steps[0].next[0]", "message": "unknown step 'b': use one of a"},
        {"location": "spec.steps[0].next[1]", "message": "unknown step 'c': use one of a"},
    ]
    assert "spec.steps[0].next[1]: unknown step 'c'" in str(err)


# --- YAML ---------------------------------------------------------------------------------------

YAML_TWO = """\
apiVersion: fluxo.dev/v1
kind: Workflow
metadata: {name: first}
spec:
  steps:
    - {id: go, kind: workflow, workflow: second}
---
---
apiVersion: fluxo.dev/v1
kind: Workflow
metadata:
  name: second
spec:
  steps:
    - id: pack
      kind: service
      service: stock
      next: [shipp]
    - id: ship
      kind: service
      service: mailer
      timout_s: 3
"""


def test_yaml_documents_are_located_by_index_and_line() -> None:
    with pytest.raises(IRValidationError) as info:
        load_workflows_yaml(YAML_TWO, known_services=KNOWN)
    assert info.value.problems == [
        ("doc[2].spec.steps[0].next[0]", "unknown step 'shipp' (did you mean 'ship'?) (line 18)"),
        (
            "doc[2].spec.steps[1]",
            "step 'ship' is unreachable from the start step 'pack': route to it with next, a "
            "switch case or on_error.goto, or remove it (line 19)",
        ),
        (
            "doc[2].spec.steps[1].timout_s",
            "unknown field 'timout_s' (did you mean 'timeout_s'?) (line 22)",
        ),
    ]


def test_yaml_valid_documents_load_and_may_call_each_other() -> None:
    fixed = YAML_TWO.replace("[shipp]", "[ship]").replace("timout_s", "timeout_s")
    workflows = load_workflows_yaml(fixed, known_services=KNOWN)  # 'second' is known from the text
    assert [w.metadata.name for w in workflows] == ["first", "second"]
    assert load_workflows_yaml("") == []
    assert load_workflows_yaml("---\n---\n") == []


def test_yaml_repeated_names_and_non_mapping_documents() -> None:
    one = (
        "apiVersion: fluxo.dev/v1\nkind: Workflow\nmetadata: {name: a}\n"
        "spec: {steps: [{id: s, kind: delay, seconds: 1}]}\n"
    )
    with pytest.raises(IRValidationError) as info:
        load_workflows_yaml(f"{one}---\n- just a list\n---\n{one}")
    assert info.value.problems == [
        (
            "doc[1]",
            "a workflow document is a mapping with apiVersion, kind, metadata and spec, not a "
            "list (line 6)",
        ),
        (
            "doc[2].metadata.name",
            "workflow 'a' is also defined in doc[0]: rename one or remove the repeat (line 10)",
        ),
    ]


def test_yaml_syntax_error() -> None:
    with pytest.raises(MalformedRequestError) as info:
        load_workflows_yaml("apiVersion: fluxo.dev/v1\n---\nspec: [unclosed\n")
    ((location, message),) = info.value.problems
    assert location == "doc[1]"
    assert message.startswith("YAML syntax error at line 4, column 1:")


# --- with: parameters of a service step -----------------------------------------------------------


def test_service_step_with_takes_static_values_and_jsonata_expressions() -> None:
    params = {
        "ops": [{"op": "set", "path": "note", "value": None}],
        "total": {"jsonata": "qty * price"},
        "label": "x",
        "nothing": None,
        "nested": {"kept": {"as": "data", "jsonata": "with a sibling: static"}},
    }
    workflow = validate_workflow(wf(svc("a", **{"with": params})))
    (step,) = workflow.spec.steps
    assert isinstance(step, ServiceStep)
    assert step.with_ == params
    dumped = workflow.model_dump(mode="json", exclude_none=True)["spec"]["steps"][0]
    assert dumped["with"] == params  # null values and the key spelled `with` survive a dump
    assert validate_workflow(workflow.model_dump(mode="json")).spec.steps[0] == step
    # No with: nothing in the canonical form, so existing workflows keep their hash.
    plain = validate_workflow(wf(svc("a")))
    assert plain.content_hash() == validate_workflow(wf(svc("a") | {"with": {}})).content_hash()
    assert workflow.content_hash() != plain.content_hash()


def test_with_refuses_unknown_expression_forms_at_their_location() -> None:
    found = problems(
        wf(
            svc(
                "a",
                **{
                    "with": {
                        "n": {"jsonata": 5},
                        "m": {"jsonata": "x", "default": 1},
                        "k": {"jsonata": "1 +"},
                        "deep": {"a": [{"jsonata": "x"}]},
                        "": 1,
                    }
                },
            )
        )
    )
    assert found == [
        ("spec.steps[0].with.", "a parameter name is empty: write the payload field it sets"),
        (
            "spec.steps[0].with.deep",
            "an expression at a[0] is not evaluated: only a parameter's whole value may be "
            "{jsonata: ...}; build the object in one expression, e.g. {jsonata: \"{'a': x}\"}",
        ),
        (
            "spec.steps[0].with.k",
            "invalid JSONata: Unexpected end of expression (at character 3); fix the expression",
        ),
        (
            "spec.steps[0].with.m",
            "an expression is {jsonata: '<expression>'} alone, but this one also has 'default': "
            "remove them, or compute the whole value in the expression",
        ),
        (
            "spec.steps[0].with.n",
            "jsonata must be an expression string such as 'total * 2', not int",
        ),
    ]


def test_with_on_a_step_that_is_not_a_service_step_says_where_it_belongs() -> None:
    step = {"id": "t", "kind": "transform", "ops": [{"op": "delete", "path": "a"}], "with": {}}
    assert problems(wf(step)) == [
        (
            "spec.steps[0].with",
            "unknown field 'with': only service steps take with (parameters of the service call)",
        )
    ]


def test_json_schema_of_with_matches_the_model() -> None:
    validator = jsonschema.Draft202012Validator(json_schema("workflow"))
    good = wf(svc("a", **{"with": {"ops": [], "n": {"jsonata": "n + 1"}, "s": "x"}}))
    validator.validate(good)
    for bad in ({"n": {"jsonata": 5}}, {"n": {"jsonata": "x", "y": 1}}, {"": 1}):
        doc = wf(svc("a", **{"with": bad}))
        assert list(validator.iter_errors(doc)), bad
        assert problems(doc), bad


# --- JSON Schema ----------------------------------------------------------------------------------


def test_json_schema_export_validates_examples() -> None:
    schema = json_schema("workflow")
    assert schema["$id"] == "https://fluxo.dev/schemas/workflow.json"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load(DOC_EXAMPLE)
    validator.validate(example)
    broken = copy.deepcopy(example)
    broken["spec"]["steps"][0]["nxt"] = ["route"]
    broken["spec"]["steps"][1]["cases"][0]["when"]["op"] = "eqq"
    paths = {tuple(e.absolute_path) for e in validator.iter_errors(broken)}
    assert paths == {("spec", "steps", 0), ("spec", "steps", 1)}
    with pytest.raises(NotFoundError):
        json_schema("nope")


def test_json_schema_is_json_and_names_every_step_kind() -> None:
    schema = json.loads(json.dumps(json_schema("workflow")))
    step_refs = schema["$defs"]["WorkflowSpec"]["properties"]["steps"]["items"]
    assert set(step_refs["discriminator"]["mapping"]) == {
        "service",
        "switch",
        "transform",
        "split",
        "join",
        "delay",
        "workflow",
        "native",
    }


# --- content hash -------------------------------------------------------------------------------


def test_content_hash_is_stable_under_key_order_metadata_and_spelled_out_defaults() -> None:
    base = validate_workflow(yaml.safe_load(DOC_EXAMPLE))
    reordered = yaml.safe_load(DOC_EXAMPLE)
    reordered["spec"] = dict(reversed(list(reordered["spec"].items())))
    reordered["spec"]["steps"] = [
        dict(reversed(list(s.items()))) for s in reordered["spec"]["steps"]
    ]
    reordered["metadata"]["labels"] = {"team": "other"}
    reordered["spec"]["steps"][0]["on_error"] = "fail"  # the default, spelled out
    reordered["spec"]["schema_version"] = SCHEMA_VERSION
    again = validate_workflow(reordered)
    assert again.content_hash() == base.content_hash()
    assert len(base.content_hash()) == 64
    assert base.content_hash() == base.model_copy().content_hash()


def test_content_hash_changes_with_the_spec() -> None:
    base = validate_workflow(yaml.safe_load(DOC_EXAMPLE)).content_hash()
    changed = yaml.safe_load(DOC_EXAMPLE)
    changed["spec"]["steps"][1]["cases"][0]["when"]["value"] = 999
    assert validate_workflow(changed).content_hash() != base
    changed = yaml.safe_load(DOC_EXAMPLE)
    changed["spec"]["steps"][0]["retry"]["max_attempts"] = 4
    assert validate_workflow(changed).content_hash() != base


def test_version_and_ref() -> None:
    doc = wf(svc("a"))
    doc["metadata"].update(version="3", resourceVersion="17", generation=2, uid="u-1")
    workflow = validate_workflow(doc)
    assert workflow.ref == "orders@3"
    assert workflow.metadata.resource_version == "17"
    assert workflow.model_dump()["metadata"]["resourceVersion"] == "17"
