"""IR -> Argo: golden files, Argo's JSON Schema and CRDs as oracles, and Fluxo's semantic check.

Golden files live in ``tests/golden/argo``; ``FLUXO_REGENERATE=1`` rewrites them. The oracles are
Argo's schema.json and CRDs at a pinned commit, shipped in ``tests/data/argo``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fluxo.api.common import MAX_WAIT_S
from fluxo_core.errors import (
    ConfigError,
    PayloadTooLargeError,
    UnsupportedFeatureError,
    ValidationError,
)
from fluxo_core.ir import (
    ENTRY_HEADER,
    MAX_ATTEMPTS_HEADER,
    Packet,
    Workflow,
    load_workflows_yaml,
    validate_workflow,
)
from tests.support import argo_interpreter, argo_reference
from tests.support.golden import regenerate_requested
from translators import ArgoBundle, CronTrigger, check_argo, to_argo, to_argo_job, to_yaml
from translators import argo as argo_module
from translators.argo import gateway_secret_name, service_account_name, template_name

ROOT = Path(__file__).parents[2]
GOLDEN = ROOT / "tests" / "golden" / "argo"
EXAMPLES = ("order-intake", "invoice-reminder", "lead-enrichment")
GATEWAY = "http://fluxo.fluxo-system.svc:8080"
ARGO_KINDS = ("Workflow", "WorkflowTemplate", "CronWorkflow")
JOB_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


# --- the oracles ---------------------------------------------------------------------------------


@cache
def schema_validator(kind: str) -> jsonschema.Draft202012Validator:
    definitions = argo_reference.schema_definitions()
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}", "definitions": definitions}
    )


def _openapi_to_jsonschema(node: Any) -> Any:
    """A CRD's openAPIV3Schema as JSON Schema: int-or-string and nullable spelled out."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: _openapi_to_jsonschema(value)
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key != "nullable"
    }
    if node.get("x-kubernetes-int-or-string"):
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*kinds, "null"]
    return out


@cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_openapi_to_jsonschema(argo_reference.crd_schema(kind)))


def errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
        for e in validator.iter_errors(document)
    ]


# --- workflows -----------------------------------------------------------------------------------


def wf(name: str, *steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": list(steps), **spec},
    }


def svc(step_id: str, *nxt: str, service: str = "crm", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "service", "service": service, "next": list(nxt), **extra}


def transform(step_id: str, *nxt: str) -> dict[str, Any]:
    ops = [{"op": "set", "path": "seen", "value": True}]
    return {"id": step_id, "kind": "transform", "ops": ops, "next": list(nxt)}


STEP_CASES: dict[str, dict[str, Any]] = {
    "step-service": wf(
        "svc-demo",
        svc(
            "enrich",
            "mail",
            service="crm@2",
            retry={"max_attempts": 4, "backoff_s": 0.5, "factor": 3, "backoff_max_s": 30},
            timeout_s=12.5,
        ),
        svc("mail", service="mailer"),
    ),
    "step-switch": wf(
        "switch-demo",
        {
            "id": "route",
            "kind": "switch",
            "cases": [
                {
                    "when": {
                        "all": [
                            {"path": "total", "op": "gte", "value": 1000},
                            {"path": "total", "op": "lt", "value": 1e6},
                            {"not": {"path": "customer.tier", "op": "eq", "value": "gold"}},
                        ]
                    },
                    "next": ["review"],
                },
                {
                    "when": {
                        "any": [
                            {"path": "customer.tier", "op": "in", "value": ["gold", "silver"]},
                            {"path": "tags", "op": "contains", "value": "vip"},
                            {"path": "code", "op": "regex", "value": "^A-?[0-9]{2,}$"},
                        ]
                    },
                    "next": ["priority"],
                },
                {"when": {"path": "note", "op": "ne", "value": "it's {{odd}}?"}, "next": ["note"]},
                {"when": {"path": "items[0].sku", "op": "exists"}, "next": ["note"]},
                {"when": {"path": 'meta["a.b"]', "op": "not_exists"}, "next": ["note"]},
                {"when": {"path": "score", "op": "gt", "value": 0.5}, "next": ["note"]},
                {"when": {"path": "name", "op": "lte", "value": "m"}, "next": ["note"]},
                {"when": {"path": "void", "op": "eq", "value": None}, "next": ["note"]},
            ],
            "default": ["standard"],
        },
        svc("review", service="manual-review"),
        svc("priority"),
        svc("note"),
        svc("standard"),
    ),
    "step-switch-all": wf(
        "switch-all-demo",
        svc("load", "fan"),
        {
            "id": "fan",
            "kind": "switch",
            "mode": "all",
            "cases": [
                {"when": {"path": "a", "op": "exists"}, "next": ["left", "both"]},
                {"when": {"path": "b", "op": "exists"}, "next": ["right", "both"]},
            ],
        },
        svc("left"),
        svc("right"),
        svc("both"),
    ),
    "step-transform": wf(
        "transform-demo",
        {
            "id": "shape",
            "kind": "transform",
            "ops": [
                {"op": "set", "path": "total", "expr": "$sum(items.(qty * price))"},
                {"op": "move", "from": "customer.mail", "to": "customer.email"},
                {"op": "delete", "path": "internal"},
                {"op": "jsonata", "expr": '{"lines": $map(items, function($v){{"sku": $v.sku}})}'},
            ],
            "next": ["save"],
        },
        svc("save"),
    ),
    "step-split": wf(
        "split-demo",
        {"id": "each", "kind": "split", "path": "orders", "next": ["ship"]},
        svc("ship", service="stock"),
    ),
    "step-join": wf(
        "join-demo",
        svc("load", "each"),
        {"id": "each", "kind": "split", "path": "items", "next": ["reserve"]},
        svc("reserve", "gather", service="stock"),
        {"id": "gather", "kind": "join", "split": "each", "next": ["mail"]},
        svc("mail", service="mailer"),
    ),
    "step-delay": wf(
        "delay-demo",
        svc("order", "wait"),
        {"id": "wait", "kind": "delay", "seconds": 90, "next": ["nudge"]},
        {"id": "nudge", "kind": "delay", "seconds": 1.5, "next": ["remind"]},
        svc("remind", service="mailer"),
    ),
    "step-workflow": wf(
        "workflow-call-demo",
        {
            "id": "sub",
            "kind": "workflow",
            "workflow": "order-intake@3",
            "retry": {"max_attempts": 2},
            "next": ["done"],
        },
        svc("done"),
    ),
    "on-error": wf(
        "on-error-demo",
        svc("fetch", "parse", service="crm", on_error="continue"),
        svc("parse", "save", service="parser", on_error={"goto": "report"}),
        svc("save", service="stock"),
        svc("report", service="mailer"),
    ),
    "paths": wf(
        "paths-demo",
        svc("start", "a", "b"),
        svc("a", "merge"),
        svc("b", "merge"),
        svc("merge", "end"),
        svc("end"),
        output="merge",
    ),
    "nested-split": wf(
        "nested-split-demo",
        {"id": "orders", "kind": "split", "path": "orders", "next": ["lines"]},
        {"id": "lines", "kind": "split", "path": "lines", "next": ["reserve"]},
        svc("reserve", "lines-done", service="stock"),
        {"id": "lines-done", "kind": "join", "split": "lines", "next": ["confirm"]},
        svc("confirm", "orders-done"),
        {"id": "orders-done", "kind": "join", "split": "orders"},
    ),
    "step-with": wf(
        "with-demo",
        svc("label", "charge", service="crm", **{"with": {"source": "web", "note": "a ? {{b}}"}}),
        svc("charge", service="billing", on_error="continue", **{"with": {"currency": "EUR"}}),
    ),
    "long-timeout": wf(
        "long-timeout-demo",
        svc("render", "fast", service="renderer", timeout_s=3600),
        svc("fast", timeout_s=5),
    ),
}

CRONS = (
    CronTrigger(name="nightly", schedules=("0 2 * * *",), timezone="Europe/Berlin"),
    CronTrigger(
        name="hourly",
        schedules=("@hourly", "*/15 9-17 * * 1-5"),
        input={"source": "cron", "note": "{{not a tag}}"},
        concurrency_policy="Forbid",
    ),
)


def example(name: str) -> Any:
    return load_workflows_yaml((ROOT / "examples" / f"{name}.yaml").read_text())[0]


def owned(workflow: Workflow, account: str) -> Workflow:
    """The workflow as the control plane stores it: ``metadata.account`` set."""
    metadata = workflow.metadata.model_copy(update={"account": account})
    return workflow.model_copy(update={"metadata": metadata})


def bundle_for(case: str) -> ArgoBundle:
    if case.startswith("example-"):  # as applied by account acme: the names carry the account
        workflow = owned(example(case.removeprefix("example-")), "acme")
        return to_argo(workflow, gateway_url=GATEWAY, version=3)
    if case == "mode-container":
        return to_argo(
            example("order-intake"), gateway_url=GATEWAY, version="v1.2", mode="container"
        )
    crons = CRONS if case == "step-service" else ()
    return to_argo(validate_workflow(STEP_CASES[case]), gateway_url=GATEWAY, version=1, crons=crons)


CASES = [*(f"example-{n}" for n in EXAMPLES), *STEP_CASES, "mode-container"]


def job_document() -> dict[str, Any]:
    packet = Packet.model_validate(
        {
            "id": "input-1",
            "trace_id": TRACE_ID,
            "actor": {"user": {"id": "ann"}, "account": {"id": "acme"}},
            "payload": json.loads((ROOT / "examples" / "order-intake.input.json").read_text()),
            "headers": {"source": "test"},
        }
    )
    return to_argo_job(bundle_for("example-order-intake"), job_id=JOB_ID, packet=packet)


def documents_for(case: str) -> list[dict[str, Any]]:
    return [job_document()] if case == "job" else bundle_for(case).documents()


def all_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for case in [*CASES, "job"]:
        for document in documents_for(case):
            yield case, document


# --- golden files --------------------------------------------------------------------------------


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    if regenerate_requested():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}: run with FLUXO_REGENERATE=1 to create it"
    assert text == path.read_text(), f"{path} differs: review, then FLUXO_REGENERATE=1"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_golden(case, to_yaml(bundle_for(case)))


def test_golden_job() -> None:
    text = yaml.safe_dump(job_document(), sort_keys=True, width=4096, explicit_start=True)
    check_golden("job-order-intake", text)


def test_every_ir_step_kind_has_a_golden_file_or_a_clear_refusal() -> None:
    from fluxo_core.ir import STEP_KINDS

    covered = {step["kind"] for case in STEP_CASES.values() for step in case["spec"]["steps"]}
    assert covered == set(STEP_KINDS) - {"native"}  # native: see test_native_step_is_refused


def test_translation_is_deterministic_across_processes() -> None:
    script = textwrap.dedent(
        """
        from tests.unit.test_argo_translator import CASES, bundle_for
        from translators import to_yaml
        print("\\n".join(to_yaml(bundle_for(c)) for c in CASES))
        """
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    ]
    here = "\n".join(to_yaml(bundle_for(c)) for c in CASES) + "\n"
    assert runs[0] == runs[1] == here


# --- the oracles accept what they should ---------------------------------------------------------


def test_patched_schema_accepts_every_upstream_example() -> None:
    checked = 0
    for path, text in argo_reference.examples():
        for document in yaml.load_all(text, Loader=yaml.CSafeLoader):
            if isinstance(document, dict) and document.get("kind") in argo_reference.CRD_FILES:
                checked += 1
                assert errors(schema_validator(document["kind"]), document) == [], path
                assert errors(crd_validator(document["kind"]), document) == [], path
    assert checked > 200


def test_patched_schema_rejects_misspelt_keys_and_takes_int_or_string() -> None:
    document = copy.deepcopy(bundle_for("step-service").workflow_template)
    template = next(t for t in document["spec"]["templates"] if "retryStrategy" in t)
    assert isinstance(template["retryStrategy"]["limit"], int)  # int-or-string as an int
    assert errors(schema_validator("WorkflowTemplate"), document) == []
    template["retryStrategy"]["limt"] = 3
    assert any("limt" in e for e in errors(schema_validator("WorkflowTemplate"), document))


# --- every emitted document validates ------------------------------------------------------------


RBAC_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"enum": ["v1", "rbac.authorization.k8s.io/v1"]},
        "kind": {"enum": ["ServiceAccount", "Role", "RoleBinding", "Secret"]},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
            },
        },
    },
}


@pytest.mark.parametrize("case", [*CASES, "job"])
def test_documents_validate_against_argo_schema_and_crds(case: str) -> None:
    for document in documents_for(case):
        kind = document["kind"]
        if kind not in ARGO_KINDS:
            assert errors(jsonschema.Draft202012Validator(RBAC_SCHEMA), document) == []
            assert "data" not in document
            assert "stringData" not in document
            continue
        assert errors(schema_validator(kind), document) == [], kind
        assert errors(crd_validator(kind), document) == [], kind
        assert check_argo(document) == [], kind


def _max_items(node: Any, key: str) -> list[int]:
    """The maxItems of every array property called ``key`` in a CRD schema."""
    found: list[int] = []
    if isinstance(node, dict):
        for name, value in (node.get("properties") or {}).items():
            if name == key and isinstance(value, dict) and "maxItems" in value:
                found.append(value["maxItems"])
        for value in node.values():
            found += _max_items(value, key)
    elif isinstance(node, list):
        for value in node:
            found += _max_items(value, key)
    return found


def test_limits_agree_with_the_crds() -> None:
    schema = argo_reference.crd_schema("WorkflowTemplate")
    assert min(_max_items(schema, "templates")) == argo_module.MAX_TEMPLATES == 200
    assert min(_max_items(schema, "tasks")) == argo_module.MAX_DAG_TASKS == 200
    name_limits = re.findall(
        r"maxLength: (\d+)\n\s+pattern: \^\[a-zA-Z0-9\]",
        argo_reference.crd_text("WorkflowTemplate"),
    )
    assert name_limits
    assert all(int(n) >= argo_module.MAX_NAME_LENGTH for n in name_limits)


def test_names_are_short_dns_labels() -> None:
    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for _case, document in all_documents():
        if document["kind"] not in ARGO_KINDS:
            continue
        spec = document["spec"].get("workflowSpec", document["spec"])
        names = [document["metadata"]["name"]]
        for template in spec.get("templates", []):
            names.append(template["name"])
            names += [t["name"] for t in template.get("dag", {}).get("tasks", [])]
        for name in names:
            assert len(name) <= 63, name
            assert label.match(name), name


# --- what the documents mean ---------------------------------------------------------------------


def substitute(text: str, values: dict[str, str]) -> str:
    """Argo's tag substitution (simple tags and ``{{=expr}}``); an unknown tag fails the test."""
    return argo_interpreter.substitute(text, values)


CALL_VALUES = {
    "workflow.parameters.job-id": JOB_ID,
    "workflow.parameters.trace-id": TRACE_ID,
    "workflow.parameters.actor": '{"account":{"id":"acme"},"user":{"id":"ann"}}',
    "inputs.parameters.headers": '{"source":"test"}',
    "inputs.parameters.key": "reserve.3",
    "inputs.parameters.step-id": "reserve",
    "inputs.parameters.payload": '{"sku":"A-1","qty":2}',
    "inputs.parameters.ops": '[{"op":"delete","path":"qty"}]',
    "inputs.parameters.service": "stock",
    "retries": "1",
}


@pytest.mark.parametrize("case", ["example-order-intake", "mode-container", "step-transform"])
def test_call_bodies_are_packets_the_gateway_accepts(case: str) -> None:
    templates = bundle_for(case).workflow_template["spec"]["templates"]
    calls = [t for t in templates if t["name"].startswith(("call", "run"))]
    assert calls
    for template in calls:
        if "http" in template:
            body = template["http"]["body"]
            url = substitute(template["http"]["url"], CALL_VALUES)
            assert url.startswith(f"{GATEWAY}/v1/services/")
            assert "/calls?wait=" in url
            assert template["http"]["timeoutSeconds"] > int(url.rsplit("=", 1)[1])
        else:
            args = template["container"]["args"]
            assert template["container"]["command"] == ["fluxo", "call"]
            body = args[args.index("--packet") + 1]
        packet = Packet.model_validate_json(substitute(body, CALL_VALUES))
        assert packet.job_id == JOB_ID
        assert packet.step_id == "reserve"
        # A step with its own retry caps the service's retries of each of its calls at one.
        step_retries = re.search(r"-r[0-9]+", template["name"]) is not None
        cap = {MAX_ATTEMPTS_HEADER: "1"} if step_retries else {}
        assert packet.headers == {"source": "test", **cap}
        assert packet.id.startswith(f"{JOB_ID}:reserve.3:")
        expected = "transform-demo@1" if case == "step-transform" else "order-intake@"
        assert packet.workflow is not None
        assert packet.workflow.startswith(expected)
        if "transform" in template["name"]:
            assert packet.payload == {
                "input": {"sku": "A-1", "qty": 2},
                "ops": [{"op": "delete", "path": "qty"}],
            }


def test_transform_ops_travel_unchanged() -> None:
    workflow = validate_workflow(STEP_CASES["step-transform"])
    task = next(
        t
        for t in bundle_for("step-transform").workflow_template["spec"]["templates"][0]["dag"][
            "tasks"
        ]
        if t["name"] == "shape"
    )
    ops = next(p["value"] for p in task["arguments"]["parameters"] if p["name"] == "ops")
    assert "{{" not in ops  # a '{{' in a JSONata expression must not open an Argo tag
    expected = [
        op.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for op in workflow.spec.steps[0].ops
    ]
    assert json.loads(ops) == expected


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


_EXPR_TAG = re.compile(r"\{\{=(.*?)\}\}", re.DOTALL)
_GUARD = re.compile(
    r"^(tasks\['[a-z0-9-]+'\]\.status == '[A-Za-z]+'"
    r"|\(tasks\['([a-z0-9-]+)'\]\.status == 'Succeeded' && "
    r"tasks\['\2'\]\.outputs\.parameters\.status [!=]= 'Succeeded'\)"
    r"|type\([^?]+\) == 'array') $"  # with: an object or each item of an array
)


def test_expression_tags_survive_argos_ternary_rule() -> None:
    """Argo evaluates the text before a tag's first '?' alone when the tag holds '?' and ':'."""
    seen = 0
    for _case, document in all_documents():
        for text in strings(document):
            for expression in _EXPR_TAG.findall(text):
                seen += 1
                assert "{{" not in expression
                if "?" in expression and ":" in expression:
                    guard = expression.split("?", 1)[0]
                    assert _GUARD.match(guard), expression[:200]
    assert seen > 20


def test_switch_conditions_map_to_when() -> None:
    tasks = {
        t["name"]: t
        for t in bundle_for("step-switch").workflow_template["spec"]["templates"][0]["dag"]["tasks"]
    }
    assert set(tasks) == {"review", "priority", "note", "standard"}
    assert all("depends" not in t for t in tasks.values())  # the switch is the start
    review = tasks["review"]["when"]
    assert "get(p, 'total') >= 1000" in review
    assert "!(get(get(p, 'customer'), 'tier') == 'gold')" in review
    assert "\\u003f" in tasks["note"]["when"]  # the '?' of a literal is escaped
    assert "\\u007b\\u007bodd\\u007d\\u007d" in tasks["note"]["when"]
    assert "matches '^A-\\u003f[0-9]\\u007b2,\\u007d$'" in tasks["priority"]["when"]
    # first match wins: later cases and the default negate the earlier ones
    assert tasks["standard"]["when"].count("!(") >= 8


def _templates(case: str) -> dict[str, Any]:
    return {t["name"]: t for t in bundle_for(case).workflow_template["spec"]["templates"]}


def _dag_tasks(template: dict[str, Any]) -> dict[str, Any]:
    return {t["name"]: t for t in template["dag"]["tasks"]}


def _args(task: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p["value"] for p in task["arguments"]["parameters"]}


def test_split_join_and_results() -> None:
    templates = _templates("step-join")
    # The steps after the call `load` run once per output packet of its call.
    top = _dag_tasks(templates["main"])
    assert set(top) == {"load", "load-outputs"}
    assert top["load-outputs"]["template"] == "branch-load-outputs"
    main = _dag_tasks(templates["branch-load-outputs"])
    assert main["each"]["template"] == "branch-each"
    assert main["each"]["withParam"].startswith("{{=toJson(map(get(")
    assert main["mail"]["depends"] == "(each.Succeeded || each.Skipped)"
    branch = templates["branch-each"]
    assert [p["name"] for p in branch["outputs"]["parameters"]] == ["payload"]
    keys = [
        p["value"]
        for t in branch["dag"]["tasks"]
        for p in t["arguments"]["parameters"]
        if p["name"] == "key"
    ]
    assert keys == ["reserve{{inputs.parameters.suffix}}"]
    result = templates["main"]["outputs"]["parameters"][0]
    assert result["globalName"] == "fluxo-result"
    assert "tasks['load-outputs']" in result["valueFrom"]["expression"]
    (results,) = templates["branch-load-outputs"]["outputs"]["parameters"]
    assert results["name"] == "results"
    assert "tasks['mail']" in results["valueFrom"]["expression"]


def test_on_error_continue_and_goto() -> None:
    templates = _templates("on-error")
    main = _dag_tasks(templates["main"])
    after_fetch = _dag_tasks(templates["branch-fetch-outputs"])
    after_parse = _dag_tasks(templates["branch-parse-outputs"])
    # A guarded call runs inside try-call, which succeeds whatever the call did ...
    assert main["fetch"]["template"] == after_fetch["parse"]["template"] == "try-call"
    assert after_parse["save"]["template"] == after_fetch["report"]["template"] == "call"
    (inner,) = templates["try-call"]["dag"]["tasks"]
    assert inner["template"] == "call"
    assert inner["continueOn"] == {"failed": True, "error": True}
    assert "depends" not in inner  # Argo rejects continueOn in a DAG that uses depends
    outputs = {
        p["name"]: p["valueFrom"]["expression"]
        for p in templates["try-call"]["outputs"]["parameters"]
    }
    assert outputs["status"] == "tasks.call.status"
    assert "tasks.call.outputs.result" in outputs["result"]
    # ... so no task ever depends on a failed one: routing reads the call's status.
    assert all(
        ".Failed" not in t.get("depends", "") and ".Errored" not in t.get("depends", "")
        for tasks in (main, after_fetch, after_parse)
        for t in tasks.values()
    )
    # continue: the steps after fetch run after any end of its call, once per output packet,
    # or once with the input when the call failed
    fan_out = main["fetch-outputs"]
    assert fan_out["depends"] == "fetch.Succeeded"
    assert "when" not in fan_out
    assert fan_out["withParam"].startswith(
        "{{=(tasks['fetch'].status == 'Succeeded' && "
        "tasks['fetch'].outputs.parameters.status == 'Succeeded') ? "
    )
    assert "map(fromJSON(tasks['fetch'].outputs.parameters.result).result" in fan_out["withParam"]
    assert "let o = [fromJSON(workflow.parameters.input)]" in fan_out["withParam"]
    assert _args(after_fetch["parse"])["payload"] == "{{inputs.parameters.payload}}"
    # goto: the next steps when the call succeeded, the goto target when it did not
    assert after_fetch["parse-outputs"]["depends"] == after_fetch["report"]["depends"]
    assert after_fetch["report"]["depends"] == "parse.Succeeded"
    assert "outputs.parameters.status == 'Succeeded'" in after_fetch["parse-outputs"]["when"]
    assert "outputs.parameters.status != 'Succeeded'" in after_fetch["report"]["when"]
    report = _args(after_fetch["report"])
    assert "'error'" in report["payload"]
    assert "'input'" in report["payload"]
    assert "'step': 'parse'" in report["payload"]
    # the goto target names the failed execution, without a level of its own
    assert report["key"] == "report/parse{{inputs.parameters.suffix}}"


@pytest.mark.parametrize("case", CASES)
def test_only_steps_with_on_error_are_guarded(case: str) -> None:
    """A genuine failure of a step without on_error must still fail the job."""
    workflow = (
        example(case.removeprefix("example-"))
        if case.startswith("example-")
        else example("order-intake")
        if case == "mode-container"
        else validate_workflow(STEP_CASES[case])
    )
    handles = {s.id: s.on_error != "fail" for s in workflow.spec.steps}
    seen = 0
    for template in bundle_for(case).workflow_template["spec"]["templates"]:
        for task in (template.get("dag") or {}).get("tasks") or ():
            args = {
                p["name"]: p.get("value") for p in task.get("arguments", {}).get("parameters", ())
            }
            if "step-id" in args and not template["name"].startswith("try-"):
                seen += 1
                assert task["template"].startswith("try-") == handles[args["step-id"]], task["name"]
    assert seen > 0


def test_a_step_on_several_paths_runs_once_per_path() -> None:
    templates = _templates("paths")
    assert list(_dag_tasks(templates["main"])) == ["start", "start-outputs"]
    assert list(_dag_tasks(templates["branch-start-outputs"])) == [
        "a",
        "a-outputs",
        "b",
        "b-outputs",
    ]
    # One task of `merge` per path, each keyed by the output packet it came from, as on the
    # step engine (`merge<a`, `merge[1]<a~1` when `a` answered several packets).
    assert list(_dag_tasks(templates["branch-a-outputs"])) == ["merge", "merge-outputs"]
    assert list(_dag_tasks(templates["branch-b-outputs"])) == ["merge", "merge-outputs"]
    for came_from in ("a", "b"):
        fan_out = _args(_dag_tasks(templates["branch-start-outputs"])[f"{came_from}-outputs"])
        assert fan_out["from"] == came_from + "{{inputs.parameters.suffix}}{{item.f}}"
        assert fan_out["suffix"] == "{{inputs.parameters.suffix}}{{item.k}}"
        merge = _args(_dag_tasks(templates[f"branch-{came_from}-outputs"])["merge"])
        assert merge["key"] == "merge{{inputs.parameters.suffix}}/{{inputs.parameters.from}}"
    assert [p["name"] for p in templates["branch-a-outputs"]["inputs"]["parameters"]] == [
        "payload",
        "suffix",
        "from",
    ]
    assert list(_dag_tasks(templates["branch-merge-outputs"])) == ["end"]


def test_long_calls_run_in_a_container() -> None:
    assert MAX_WAIT_S == argo_module.MAX_HTTP_WAIT_S
    templates = {
        t["name"]: t for t in bundle_for("long-timeout").workflow_template["spec"]["templates"]
    }
    assert templates["run-t3600s"]["activeDeadlineSeconds"] == 3600 + argo_module.CONTAINER_GRACE_S
    assert templates["run-t3600s"]["container"]["image"] == argo_module.DEFAULT_IMAGE
    assert templates["call-t5s"]["http"]["timeoutSeconds"] == 5 + argo_module.HTTP_GRACE_S


def test_retry_and_timeout_map_to_argo() -> None:
    templates = {
        t["name"]: t for t in bundle_for("step-service").workflow_template["spec"]["templates"]
    }
    call = templates["call-t13s-r4-500ms-x3-30s"]
    assert call["retryStrategy"] == {
        "limit": 3,
        "retryPolicy": "Always",
        "backoff": {"duration": "500ms", "factor": 3, "cap": "30s"},
    }
    assert "{{retries}}" in call["http"]["body"]
    assert "{{retries}}" not in templates["call"]["http"]["body"]  # no retryStrategy: no variable


def test_cron_triggers_start_jobs_through_fluxo() -> None:
    bundle = bundle_for("step-service")
    nightly, hourly = bundle.cron_workflows
    assert nightly["metadata"]["name"] == "svc-demo-nightly"
    assert nightly["spec"]["schedules"] == ["0 2 * * *"]
    assert hourly["spec"]["schedules"] == ["@hourly", "*/15 9-17 * * 1-5"]
    fire = hourly["spec"]["workflowSpec"]["templates"][0]["http"]
    assert fire["url"] == f"{GATEWAY}/v1/workflows/svc-demo/jobs"
    key = next(h for h in fire["headers"] if h["name"] == "Idempotency-Key")
    assert key["value"] == "cron:hourly:{{workflow.scheduledTime}}"
    body = json.loads(fire["body"].replace("{{workflow.scheduledTime}}", "2026-01-01T00:00:00Z"))
    assert body["input"] == {"source": "cron", "note": "{{not a tag}}"}
    with pytest.raises(ValidationError) as info:
        to_argo(
            validate_workflow(STEP_CASES["step-delay"]),
            gateway_url=GATEWAY,
            version=1,
            crons=[CronTrigger(name="Bad_Name", schedules=("every day",))],
        )
    assert {loc for loc, _ in info.value.problems} == {"name", "schedules[0]"}


def test_rbac_lets_the_agent_do_its_work_and_no_more() -> None:
    bundle = bundle_for("example-order-intake")
    kinds = [d["kind"] for d in bundle.rbac]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "Secret"]
    rules = {tuple(r["resources"]): r for r in bundle.rbac[1]["rules"]}
    assert rules[("workflowtasksets",)]["verbs"] == ["list", "watch"]
    assert rules[("workflowtasksets/status",)]["verbs"] == ["patch"]
    # The account's own engine token, and no other account's.
    assert rules[("secrets",)]["verbs"] == ["get"]
    assert rules[("secrets",)]["resourceNames"] == ["fluxo-gateway-acme"]
    assert {d["metadata"]["name"] for d in bundle.rbac[:3]} == {"fluxo-argo-acme"}
    assert bundle.rbac[2]["subjects"] == [{"kind": "ServiceAccount", "name": "fluxo-argo-acme"}]
    secret = bundle.rbac[3]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "fluxo-argo-acme"
    }
    assert bundle.workflow_template["spec"]["serviceAccountName"] == "fluxo-argo-acme"


def test_exit_handler_reports_the_end() -> None:
    spec = bundle_for("example-order-intake").workflow_template["spec"]
    assert spec["onExit"] == "report-end"
    report = next(t for t in spec["templates"] if t["name"] == "report-end")["http"]
    assert report["url"] == f"{GATEWAY}/v1/jobs/{{{{workflow.parameters.job-id}}}}/engine-events"
    assert '"status":"{{workflow.status}}"' in report["body"]


# --- jobs ----------------------------------------------------------------------------------------


def _packet(payload: Any) -> Packet:
    return Packet.model_validate(
        {
            "trace_id": TRACE_ID,
            "actor": {"user": {"id": "ann"}, "account": {"id": "acme"}},
            "payload": payload,
        }
    )


def test_job_workflow_carries_the_job() -> None:
    job = job_document()
    template = template_name("acme", "order-intake", 3)
    assert job["spec"]["workflowTemplateRef"] == {"name": template}
    assert job["metadata"]["labels"]["fluxo.dev/account"] == "acme"
    params = {p["name"]: p["value"] for p in job["spec"]["arguments"]["parameters"]}
    assert params["job-id"] == JOB_ID
    assert params["trace-id"] == TRACE_ID
    assert json.loads(params["actor"]) == {"user": {"id": "ann"}, "account": {"id": "acme"}}
    assert json.loads(params["input"])["customer"]["email"]
    assert params["input-headers"] == params["headers"] == '{"source":"test"}'
    assert is_dns_label(job["metadata"]["name"])
    assert job["metadata"]["name"].startswith(template[:20])
    again = to_argo_job(bundle_for("example-order-intake"), job_id="1" * 32, packet=_packet({}))
    assert again["metadata"]["name"] != job["metadata"]["name"]


def test_a_rerun_of_a_job_is_a_workflow_of_its_own_with_the_same_job_id() -> None:
    """A resumed job runs again under another Workflow name; its calls keep their packet ids,
    which derive from the job id, so the gateway answers its finished steps once."""
    bundle = bundle_for("example-order-intake")
    first = to_argo_job(bundle, job_id=JOB_ID, packet=_packet({}))
    rerun = to_argo_job(bundle, job_id=JOB_ID, packet=_packet({}), rerun="r1")

    def params(document: dict[str, Any]) -> dict[str, Any]:
        return {p["name"]: p["value"] for p in document["spec"]["arguments"]["parameters"]}

    assert rerun["metadata"]["name"] != first["metadata"]["name"]
    assert is_dns_label(rerun["metadata"]["name"])
    assert params(rerun) == params(first)
    assert rerun["metadata"]["labels"] == first["metadata"]["labels"]


def test_large_inputs_travel_by_reference() -> None:
    bundle = bundle_for("example-order-intake")
    assert bundle.input_by_reference  # the first step is a call: the gateway resolves the reference
    big = _packet({"blob": "x" * (argo_module.MAX_INLINE_PAYLOAD_BYTES + 1)})
    with pytest.raises(PayloadTooLargeError):
        to_argo_job(bundle, job_id=JOB_ID, packet=big)
    job = to_argo_job(bundle, job_id=JOB_ID, packet=big, input_ref="stored-1")
    params = {p["name"]: p["value"] for p in job["spec"]["arguments"]["parameters"]}
    assert params["input"] == "{}"
    assert json.loads(params["input-headers"]) == {"fluxo-payload-ref": "stored-1"}
    switch_first = bundle_for("step-switch")
    assert not switch_first.input_by_reference
    with pytest.raises(UnsupportedFeatureError) as info:
        to_argo_job(switch_first, job_id=JOB_ID, packet=big, input_ref="stored-1")
    assert info.value.context["step"] == "route"


def test_with_sets_static_parameters_on_the_call_payload_only() -> None:
    templates = _templates("step-with")
    tasks = _dag_tasks(templates["main"])
    label = _args(tasks["label"])
    # The input is no longer the bare payload: no reference headers, and the literal is escaped.
    assert label["headers"] == "{{workflow.parameters.headers}}"
    assert label["payload"].startswith("{{=type(fromJSON(workflow.parameters.input)) == 'array' ? ")
    assert "sprig.set(sprig.omit(#), 'source', 'web')" in label["payload"]
    assert "'a \\u003f \\u007b\\u007bb\\u007d\\u007d'" in label["payload"]
    assert not bundle_for("step-with").input_by_reference
    charge = _args(_dag_tasks(templates["branch-label-outputs"])["charge"])
    assert "'currency', 'EUR'" in charge["payload"]


def test_a_jsonata_parameter_is_refused_naming_the_step_and_the_engine() -> None:
    workflow = validate_workflow(
        wf("with-jsonata", svc("label", **{"with": {"a": 1, "total": {"jsonata": "qty * 2"}}}))
    )
    with pytest.raises(UnsupportedFeatureError) as info:
        to_argo(workflow, gateway_url=GATEWAY, version=1)
    assert info.value.message == (
        "step 'label' of workflow 'with-jsonata': with.total is a JSONata expression, which "
        "cannot run on the argo engine (its templates evaluate expr-lang); give it a static "
        "value, compute the field in a transform step before this one, or run the workflow on "
        "the step or nodered engine"
    )
    assert info.value.context["step"] == "label"
    assert info.value.context["engine"] == "argo"


# --- what cannot be expressed --------------------------------------------------------------------


def test_native_step_is_refused_naming_the_step() -> None:
    workflow = validate_workflow(
        wf(
            "native-demo",
            svc("a", "fn"),
            {"id": "fn", "kind": "native", "engine": "nodered", "config": {"type": "function"}},
        )
    )
    with pytest.raises(UnsupportedFeatureError) as info:
        to_argo(workflow, gateway_url=GATEWAY, version=1)
    assert "'fn'" in info.value.message
    assert "native nodered" in info.value.message
    assert info.value.context["step"] == "fn"


def test_jsonata_switch_is_refused_naming_the_step() -> None:
    workflow = validate_workflow(
        wf(
            "jsonata-demo",
            {
                "id": "pick",
                "kind": "switch",
                "cases": [{"when": {"jsonata": "total > 5"}, "next": ["a"]}],
            },
            svc("a"),
        )
    )
    with pytest.raises(UnsupportedFeatureError) as info:
        to_argo(workflow, gateway_url=GATEWAY, version=1)
    assert "'pick'" in info.value.message
    assert "JSONata" in info.value.message
    assert info.value.context["step"] == "pick"


@pytest.mark.parametrize(
    ("steps", "step"),
    [
        (
            [
                {
                    "id": "pick",
                    "kind": "switch",
                    "cases": [
                        {"when": {"path": "a", "op": "regex", "value": "^(?=x)"}, "next": ["a"]}
                    ],
                },
                svc("a"),
            ],
            "pick",
        ),
        ([svc("a", "w"), {"id": "w", "kind": "delay", "seconds": 1, "on_error": "continue"}], "w"),
    ],
)
def test_other_refusals_name_the_step(steps: list[dict[str, Any]], step: str) -> None:
    with pytest.raises(UnsupportedFeatureError) as info:
        to_argo(validate_workflow(wf("refused", *steps)), gateway_url=GATEWAY, version=1)
    assert info.value.context["step"] == step
    assert f"'{step}'" in info.value.message


def test_bad_arguments_are_config_errors() -> None:
    workflow = validate_workflow(STEP_CASES["step-delay"])
    with pytest.raises(ConfigError):
        to_argo(workflow, gateway_url="fluxo:8080", version=1)
    with pytest.raises(ConfigError):
        to_argo(workflow, gateway_url=GATEWAY, version=1, service_account="Not_A_Name")


def _chain(count: int) -> Any:
    steps = [svc(f"s{i}", *([f"s{i + 1}"] if i + 1 < count else [])) for i in range(count)]
    return validate_workflow(wf("chain", *steps))


def _transforms(count: int) -> Any:
    """A service step, then ``count - 1`` transforms in a row (one DAG: a transform answers one
    packet, so nothing after it fans out)."""
    steps = [
        {
            "id": f"s{i}",
            "kind": "transform",
            "ops": [{"op": "set", "path": "n", "value": i}],
            "next": [f"s{i + 1}"] if i + 1 < count else [],
        }
        for i in range(1, count)
    ]
    return validate_workflow(wf("chain", svc("s0", "s1"), *steps))


def test_a_200_step_workflow_translates() -> None:
    bundle = to_argo(_transforms(200), gateway_url=GATEWAY, version=1)
    branch = _dag_tasks(bundle.workflow_template["spec"]["templates"][1])
    assert len(branch) == 199
    assert check_argo(bundle.workflow_template) == []
    assert errors(crd_validator("WorkflowTemplate"), bundle.workflow_template) == []


def test_a_long_chain_of_service_steps_nests_one_level_per_step() -> None:
    bundle = to_argo(_chain(100), gateway_url=GATEWAY, version=1)
    dags = [t for t in bundle.workflow_template["spec"]["templates"] if "dag" in t]
    assert len(dags) == 100  # main, then a branch per call with steps after it
    assert check_argo(bundle.workflow_template) == []
    assert errors(crd_validator("WorkflowTemplate"), bundle.workflow_template) == []
    with pytest.raises(UnsupportedFeatureError) as info:
        to_argo(_chain(150), gateway_url=GATEWAY, version=1)
    assert "nests 151 Argo templates, over Argo's limit of 150" in info.value.message


def test_more_than_200_tasks_in_a_dag_is_refused() -> None:
    with pytest.raises(UnsupportedFeatureError) as info:
        to_argo(_transforms(202), gateway_url=GATEWAY, version=1)
    assert "201 tasks" in info.value.message
    assert "200" in info.value.message


def test_long_names_are_cut_with_a_hash() -> None:
    long_id = "a" * 60
    workflow = validate_workflow(
        wf("n" * 60, svc("x", long_id, "y"), svc("y", long_id), svc(long_id), output=long_id)
    )
    bundle = to_argo(workflow, gateway_url=GATEWAY, version="2024.10.01-rc_1")
    name = bundle.workflow_template["metadata"]["name"]
    assert len(name) <= 63
    assert name.startswith("nnnn")
    dags = [t for t in bundle.workflow_template["spec"]["templates"] if "dag" in t]
    assert all(len(t["name"]) <= 63 for t in dags)
    tasks = [[t["name"] for t in dag["dag"]["tasks"]] for dag in dags]
    assert all(len(set(names)) == len(names) for names in tasks)
    assert sum(len(names) for names in tasks) == 6  # x, y, the a-s step twice, 2 fan-outs
    assert all(len(t) <= 63 for names in tasks for t in names)
    assert check_argo(bundle.workflow_template) == []
    split_id = "b" * 63
    workflow = validate_workflow(
        wf("long-split", {"id": split_id, "kind": "split", "next": ["c"]}, svc("c"))
    )
    templates = to_argo(workflow, gateway_url=GATEWAY, version=1).workflow_template["spec"][
        "templates"
    ]
    branch = templates[1]["name"]
    assert branch.startswith("branch-bbb")
    assert len(branch) <= 63
    assert templates[0]["dag"]["tasks"][0]["template"] == branch


# --- check_argo: what the schema cannot see ------------------------------------------------------


def _dag_document(tasks: list[dict[str, Any]], **template: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "hand-made"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "dag": {"tasks": tasks}, **template},
                {"name": "echo", "inputs": {"parameters": [{"name": "msg"}]}, "suspend": {}},
            ],
        },
    }


def _task(name: str, depends: str | None = None, msg: str = "hi", **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "name": name,
        "template": "echo",
        "arguments": {"parameters": [{"name": "msg", "value": msg}]},
        **extra,
    }
    if depends:
        task["depends"] = depends
    return task


def messages(document: dict[str, Any]) -> str:
    return "\n".join(f"{where}: {message}" for where, message in check_argo(document))


def test_check_argo_accepts_a_sound_document() -> None:
    document = _dag_document([_task("a"), _task("b", "a", msg="{{tasks.a.outputs.result}}")])
    assert check_argo(document) == []


def test_check_argo_finds_a_dangling_task_reference() -> None:
    document = _dag_document(
        [
            _task("a"),
            _task("b", "a", msg="{{tasks.ghost.outputs.result}}"),
            _task("c", "a", msg="{{=toJson(tasks['phantom'].outputs.result)}}"),
        ]
    )
    problems = check_argo(document)
    assert ("spec.templates[0].dag.tasks[1].arguments.parameters[0].value") in {
        w for w, _ in problems
    }
    text = messages(document)
    assert "'ghost', which is not in DAG 'main'" in text
    assert "'phantom'" in text


def test_check_argo_finds_a_reference_to_a_task_that_is_not_upstream() -> None:
    document = _dag_document([_task("a"), _task("b", msg="{{tasks.a.outputs.result}}")])
    assert "not upstream of it: add 'a' to its depends" in messages(document)


def test_check_argo_finds_a_cycle() -> None:
    document = _dag_document([_task("a", "c.Succeeded"), _task("b", "a"), _task("c", "b || a")])
    problems = dict(check_argo(document))
    assert problems["spec.templates[0].dag.tasks[1].depends"].startswith(
        "dependency cycle a -> c -> b -> a (each task waits for the next)"
    )
    assert "dependency cycle a -> c -> a" in problems["spec.templates[0].dag.tasks[2].depends"]


def test_check_argo_finds_more_than_200_tasks() -> None:
    document = _dag_document([_task(f"t{i}") for i in range(201)])
    assert "has 201 tasks, over Argo's limit of 200" in messages(document)
    document = _dag_document([_task(f"t{i}") for i in range(200)])
    assert check_argo(document) == []


def test_check_argo_finds_bad_names_and_missing_templates() -> None:
    document = _dag_document([_task("Bad_Name"), _task("x" * 64), _task("ok", template="nowhere")])
    document["spec"]["onExit"] = "exit"
    document["spec"]["templates"][0]["dag"]["tasks"].append(_task("1st", "ok"))
    text = messages(document)
    assert "'Bad_Name' is not a DNS-1123 label" in text
    assert "has 64 characters, over 63" in text
    assert "no template named 'nowhere'" in text
    assert "no template named 'exit'" in text
    assert "may not start with a digit" in text


def test_check_argo_finds_undeclared_parameters_and_unknown_dependencies() -> None:
    document = _dag_document(
        [
            _task("a", msg="{{inputs.parameters.nope}} {{workflow.parameters.missing}}"),
            _task("b", "zz"),
        ]
    )
    text = messages(document)
    assert "input parameter 'nope' is used but not declared" in text
    assert "workflow parameter 'missing' is used but not declared" in text
    assert "depends on unknown task 'zz'" in text


def test_check_argo_refuses_continue_on_in_a_dag_using_depends() -> None:
    continues = {"continueOn": {"failed": True}}
    assert check_argo(_dag_document([_task("a", **continues), _task("b")])) == []
    document = _dag_document([_task("a", **continues), _task("b", "a")])
    assert "uses depends, so continueOn cannot be used in it" in messages(document)


def test_check_argo_checks_cron_workflows() -> None:
    cron = copy.deepcopy(bundle_for("step-service").cron_workflows[0])
    assert check_argo(cron) == []
    cron["spec"]["workflowSpec"]["entrypoint"] = "missing"
    assert "no template named 'missing'" in messages(cron)


# --- tenant boundaries: every name given to Argo carries the account -----------------------------


def is_dns_label(name: str) -> bool:
    return len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) is not None


def names_in(bundle: ArgoBundle) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in bundle.documents()}


def secrets_read_by(document: Any) -> set[str]:
    """Every Secret name a document's ``secretKeyRef``s name."""
    found: set[str] = set()
    if isinstance(document, dict):
        if isinstance(document.get("secretKeyRef"), dict):
            found.add(document["secretKeyRef"]["name"])
        for value in document.values():
            found |= secrets_read_by(value)
    elif isinstance(document, list):
        for value in document:
            found |= secrets_read_by(value)
    return found


def test_two_accounts_workflows_of_one_name_share_no_name_secret_or_service_account() -> None:
    workflow = validate_workflow(STEP_CASES["step-service"])
    acme, globex = (
        to_argo(owned(workflow, account), gateway_url=GATEWAY, version=1, crons=CRONS)
        for account in ("acme", "globex")
    )
    assert not names_in(acme) & names_in(globex)
    for bundle, account in ((acme, "acme"), (globex, "globex")):
        template = bundle.workflow_template
        assert bundle.template_name == template_name(account, "svc-demo", 1)
        assert bundle.template_name.startswith(f"{account}-svc-demo-v1-")
        assert template["metadata"]["annotations"]["fluxo.dev/account"] == account
        assert template["metadata"]["labels"]["fluxo.dev/account"] == account
        assert template["spec"]["workflowMetadata"]["labels"]["fluxo.dev/account"] == account
        runs_as = {template["spec"]["serviceAccountName"]} | {
            c["spec"]["workflowSpec"]["serviceAccountName"] for c in bundle.cron_workflows
        }
        assert runs_as == {service_account_name(account)} == {f"fluxo-argo-{account}"}
        reads = set().union(*(secrets_read_by(d) for d in bundle.documents()))
        assert reads == {gateway_secret_name(account)} == {f"fluxo-gateway-{account}"}
        for document in bundle.documents():
            kind = document["kind"]
            assert is_dns_label(document["metadata"]["name"].removesuffix(".service-account-token"))
            if kind in ARGO_KINDS:
                assert errors(schema_validator(kind), document) == [], kind
                assert errors(crd_validator(kind), document) == [], kind
                assert check_argo(document) == [], kind


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("acme", "b-c", "1"), ("acme-b", "c", "1")),  # the same text, split differently
        (("Acme", "orders", "1"), ("acme", "orders", "1")),  # Kubernetes names are lowercase
        (("acme:eu", "orders", "1"), ("acme-eu", "orders", "1")),
        (("acme", "orders", "1.2"), ("acme", "orders", "1-2")),
        (("x" * 128, "orders", "1"), ("x" * 127 + "y", "orders", "1")),  # cut, then hashed
    ],
)
def test_distinct_accounts_names_and_versions_get_distinct_template_names(
    first: tuple[str, str, str], second: tuple[str, str, str]
) -> None:
    assert template_name(*first) != template_name(*second)
    assert gateway_secret_name(first[0]) != gateway_secret_name(second[0]) or first[0] == second[0]


def test_a_long_account_name_and_version_still_make_short_stable_names() -> None:
    account = "Globex.Corporation:eu-west/" + "division-" * 11  # 128 characters
    name = "n" * 63
    version = "2026.12.03-release-candidate." + "9" * 21  # 50 characters
    workflow = owned(
        validate_workflow({**STEP_CASES["step-delay"], "metadata": {"name": name}}), account
    )
    bundle = to_argo(workflow, gateway_url=GATEWAY, version=version, crons=CRONS[:1])
    again = to_argo(workflow, gateway_url=GATEWAY, version=version, crons=CRONS[:1])
    assert bundle.documents() == again.documents()
    for document in bundle.documents():
        assert is_dns_label(document["metadata"]["name"].removesuffix(".service-account-token"))
        if document["kind"] in ARGO_KINDS:
            assert errors(crd_validator(document["kind"]), document) == []
            assert check_argo(document) == []
    assert bundle.template_name == template_name(account, name, version)
    assert is_dns_label(gateway_secret_name(account))
    assert is_dns_label(service_account_name(account))
    job = to_argo_job(bundle, job_id=JOB_ID, packet=_packet({}))
    assert is_dns_label(job["metadata"]["name"])
    assert errors(schema_validator("Workflow"), job) == []


def test_without_an_account_the_names_stay_as_they_were() -> None:
    bundle = to_argo(validate_workflow(STEP_CASES["step-delay"]), gateway_url=GATEWAY, version=1)
    assert bundle.template_name == "delay-demo-v1"
    assert bundle.workflow_template["spec"]["serviceAccountName"] == "fluxo-argo"
    assert secrets_read_by(bundle.workflow_template) == {"fluxo-gateway"}
    assert "fluxo.dev/account" not in bundle.workflow_template["metadata"]["labels"]


def test_a_job_naming_an_entry_argo_cannot_begin_at_is_refused_before_it_runs() -> None:
    bundle = bundle_for("example-order-intake")
    packet = _packet({}).model_copy(update={"headers": {ENTRY_HEADER: "ship"}})
    with pytest.raises(ValidationError) as info:
        to_argo_job(bundle, job_id=JOB_ID, packet=packet)
    assert "'ship'" in info.value.message
    assert f"its start step {bundle.start_step!r}" in info.value.message
    # naming the start step itself is starting as usual
    named_start = _packet({}).model_copy(update={"headers": {ENTRY_HEADER: bundle.start_step}})
    assert to_argo_job(bundle, job_id=JOB_ID, packet=named_start)["kind"] == "Workflow"
