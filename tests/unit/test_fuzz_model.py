"""Property tests: whatever document, packet or flow comes in, the model answers with a result or
a clear FluxoError, never a crash (RecursionError, TypeError, pydantic's own error...)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxo_core.errors import FluxoError
from fluxo_core.ir import (
    Workflow,
    parse_json,
    parse_packet,
    parse_yaml,
    validate_workflow,
    workflow_document,
)
from translators import from_nodered

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
STEP_KINDS = ["service", "switch", "transform", "split", "join", "delay", "workflow", "native", "x"]
step_ids = st.sampled_from(["a", "b", "c", "A", ""])
steps = st.fixed_dictionaries(
    {"id": step_ids, "kind": st.sampled_from(STEP_KINDS)},
    optional={
        "next": st.lists(step_ids, max_size=3),
        "service": st.sampled_from(["echo", "echo@1", "Bad Name", "x@"]),
        "seconds": st.floats(allow_nan=True) | st.integers(),
        "ops": st.lists(
            st.fixed_dictionaries(
                {"op": st.sampled_from(["set", "move", "delete", "jsonata"])},
                optional={
                    "path": st.text(max_size=6),
                    "value": json_like,
                    "expr": st.text(max_size=8),
                },
            ),
            max_size=3,
        ),
        "cases": st.lists(
            st.fixed_dictionaries({"when": json_like, "next": st.lists(step_ids, max_size=2)}),
            max_size=2,
        ),
        "split": step_ids,
        "on_error": st.sampled_from(["fail", "continue", "stop"]) | json_like,
        "retry": json_like,
    },
)
workflows = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["fluxo.dev/v1", "v2"]),
        "kind": st.sampled_from(["Workflow", "Job"]),
        "metadata": st.fixed_dictionaries({"name": st.sampled_from(["w", "W!", ""])}) | json_like,
        "spec": st.fixed_dictionaries(
            {"steps": st.lists(steps, max_size=4)},
            optional={"start": step_ids, "output": step_ids, "input_schema": json_like},
        )
        | json_like,
    }
)


@FUZZ
@given(workflows | json_like)
def test_any_workflow_document_validates_or_is_refused_clearly(data: Any) -> None:
    try:
        workflow = validate_workflow(data, known_services=["echo"])
    except FluxoError:
        return
    # What validates also survives its own round trip.
    assert Workflow.model_validate(workflow_document(workflow)) == workflow


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "actor": st.fixed_dictionaries(
                {
                    "user": st.fixed_dictionaries({"id": st.text(max_size=6)}),
                    "account": st.fixed_dictionaries({"id": st.text(max_size=6)}),
                }
            )
            | json_like,
            "payload": json_like,
        },
        optional={"headers": json_like, "id": json_like, "attempt": json_like},
    )
    | json_like
)
def test_any_packet_parses_or_is_refused_clearly(data: Any) -> None:
    try:
        parse_packet(data)
    except FluxoError:
        return


@FUZZ
@given(json_like)
def test_any_decoded_json_text_parses_or_is_refused_clearly(data: Any) -> None:
    text = json.dumps(data)
    try:
        assert parse_json(text) == json.loads(text)
    except FluxoError:
        return


@FUZZ
@given(st.text(max_size=200))
def test_any_text_parses_as_yaml_and_json_or_is_refused_clearly(text: str) -> None:
    for parse in (parse_json, parse_yaml):
        with contextlib.suppress(FluxoError):
            parse(text)


nodes = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["n1", "n2", "n3", "t1", ""]) | json_like,
        "type": st.sampled_from(
            [
                "tab",
                "inject",
                "change",
                "switch",
                "function",
                "http request",
                "debug",
                "template",
                "json",
                "delay",
                "split",
                "join",
                "link in",
                "x-unknown",
            ]
        )
        | json_like,
    },
    optional={
        "z": st.sampled_from(["t1", "nope"]),
        "wires": st.lists(
            st.lists(st.sampled_from(["n1", "n2", "n3", "zz"]), max_size=2), max_size=3
        )
        | json_like,
        "rules": st.lists(json_like, max_size=3) | json_like,
        "func": st.text(max_size=20),
        "property": json_like,
        "name": json_like,
    },
)


@FUZZ
@given(st.lists(nodes, max_size=6) | json_like)
def test_any_flow_imports_or_is_refused_clearly(flow: Any) -> None:
    try:
        result = from_nodered(flow, name="fuzz")
    except FluxoError:
        return
    assert result.report is not None


@FUZZ
@given(st.text(max_size=300))
def test_any_flow_text_imports_or_is_refused_clearly(text: str) -> None:
    try:
        from_nodered(text, name="fuzz")
    except FluxoError:
        return
