"""Step keys: one spelling on every engine (fluxo_core.ir.step_keys)."""

from __future__ import annotations

from typing import Any

import pytest

from fluxo_core.ir import (
    Workflow,
    key_from_id,
    key_in_id,
    key_origin,
    merging_steps,
    validate_workflow,
)
from services.nodered.function import run_function
from translators import _nodered_js as js
from translators._argo_plan import ORIGIN, SUFFIX, plan_workflow


@pytest.mark.parametrize(
    ("key", "in_id"),
    [
        ("notify", "notify"),
        ("enrich[2]", "enrich.2"),
        ("notify[0]<priority[0]", "notify.0/priority.0"),
        ("rescue<doomed[1][3]", "rescue/doomed.1.3"),
        ("each[1]<fan~1", "each.1/fan_1"),
        ("mail<ship~0<pack", "mail/ship_0/pack"),
    ],
)
def test_a_key_reads_back_from_its_packet_id_spelling(key: str, in_id: str) -> None:
    assert key_in_id(key) == in_id
    assert key_from_id(in_id) == key


def _service(step_id: str, *nxt: str, **extra: object) -> dict[str, object]:
    return {"id": step_id, "kind": "service", "service": "echo", "next": list(nxt), **extra}


def test_merging_steps_have_several_predecessors_and_are_not_joins() -> None:
    workflow = validate_workflow(
        {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Workflow",
            "metadata": {"name": "keys"},
            "spec": {
                "steps": [
                    _service("start", "route", on_error={"goto": "rescue"}),
                    {
                        "id": "route",
                        "kind": "switch",
                        "mode": "all",
                        # the same target in two cases is one predecessor
                        "cases": [
                            {"when": {"path": "a", "op": "eq", "value": 1}, "next": ["a", "b"]},
                            {"when": {"path": "b", "op": "eq", "value": 1}, "next": ["a"]},
                        ],
                        "default": ["each"],
                    },
                    _service("a", "notify"),
                    _service("b", "notify"),
                    _service("notify"),
                    {"id": "each", "kind": "split", "path": "items", "next": ["x", "y"]},
                    _service("x", "gather"),
                    _service("y", "gather"),
                    {"id": "gather", "kind": "join", "split": "each", "next": []},
                    _service("rescue"),  # a goto's target only: no predecessor
                ]
            },
        }
    )
    assert merging_steps(workflow.spec.steps) == {"notify"}


@pytest.mark.parametrize(
    ("key", "origin"),
    [
        ("notify", ""),
        ("enrich[2]", ""),
        ("d<b", "<b"),
        ("e[0]<d<b", "<d<b"),
        ("each[1]<fan~1", "<fan~1"),
        ("rescue<doomed[1]", "<doomed[1]"),
    ],
)
def test_a_keys_origin_is_its_part_from_its_first_merge(key: str, origin: str) -> None:
    assert key_origin(key) == origin


@pytest.mark.parametrize("key", ["e<b", "x[1]<b", "g<e<b~1", "h[0][2]<f[0]<c", "gather<b~0"])
def test_keys_with_an_origin_read_back_from_their_packet_id_spelling(key: str) -> None:
    assert key_from_id(key_in_id(key)) == key


# --- the rule on the translators (the step engine's own runs in tests/conformance) ------------


def _workflow(*steps: dict[str, object]) -> Workflow:
    return validate_workflow(
        {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Workflow",
            "metadata": {"name": "merged"},
            "spec": {"steps": list(steps)},
        }
    )


def _transform(step_id: str, *nxt: str) -> dict[str, object]:
    ops = [{"op": "set", "path": step_id, "value": True}]
    return {"id": step_id, "kind": "transform", "ops": ops, "next": list(nxt)}


def _diamond(*after: dict[str, object]) -> list[dict[str, object]]:
    """start -> a -> (b, c) -> d: transforms, so that Argo keeps them in its main DAG."""
    return [
        _transform("start", "a"),
        _transform("a", "b", "c"),
        _transform("b", "d"),
        _transform("c", "d"),
        *after,
    ]


def test_argo_keys_each_unfolded_copy_of_a_step_after_a_merge_apart() -> None:
    workflow = _workflow(*_diamond(_transform("d", "e"), _transform("e", "f"), _transform("f")))
    keys = [task.key for task in plan_workflow(workflow).main.tasks]
    assert sorted(keys) == ["a", "b", "c", "d<b", "d<c", "e<b", "e<c", "f<b", "f<c", "start"]


def test_argo_passes_the_origin_of_a_split_after_a_merge_to_its_branch() -> None:
    workflow = _workflow(
        *_diamond(
            _transform("d", "each"),
            {"id": "each", "kind": "split", "path": "items", "next": ["x"]},
            _transform("x", "gather"),
            {"id": "gather", "kind": "join", "split": "each", "next": ["y"]},
            _transform("y"),
        )
    )
    plan = plan_workflow(workflow)
    main = {task.key: task for task in plan.main.tasks}
    assert sorted(main) == ["a", "b", "c", "d<b", "d<c", "each<b", "each<c", "start", "y<b", "y<c"]
    assert (main["each<b"].origin, main["each<c"].origin) == ("<b", "<c")
    (branch,) = plan.branches
    assert branch.origin
    assert [task.key for task in branch.tasks] == [f"x{SUFFIX}{ORIGIN}"]


def test_argo_keeps_the_keys_of_a_workflow_without_a_merge() -> None:
    workflow = _workflow(
        _transform("start", "each"),
        {"id": "each", "kind": "split", "path": "items", "next": ["x"]},
        _transform("x"),
    )
    plan = plan_workflow(workflow)
    assert [task.key for task in plan.main.tasks] == ["start", "each"]
    (branch,) = plan.branches
    assert not branch.origin
    assert [task.key for task in branch.tasks] == [f"x{SUFFIX}"]


def _keyed(step: str, msg: dict[str, Any], *, merges: bool = False) -> dict[str, Any]:
    """The message after the generated Node-RED keyer of ``step`` ran on ``msg``."""
    node = {"id": step, "type": "function", "func": js.key_code(step, merges=merges)}
    ((_, out),) = run_function(node, msg).outputs
    return out


def test_the_nodered_keyers_inherit_the_origin_of_a_merged_path() -> None:
    start = _keyed("a", {"payload": {}, "fluxo": {"job_id": "j", "frames": []}})
    ends = []
    for via in ("b", "c"):
        path = _keyed(via, start)
        merged = _keyed("d", path, merges=True)
        after = _keyed("f", _keyed("e", merged))
        ends.append((merged["fluxo"]["key"], after["fluxo"]["key"]))
    assert ends == [("d<b", "f<b"), ("d<c", "f<c")]
    assert _keyed("e", start)["fluxo"]["key"] == "e"  # no merge before it: as before


def test_a_nodered_join_after_a_merge_keys_with_the_origin_of_its_split() -> None:
    split = {"payload": {}, "fluxo": {"job_id": "j", "frames": [], "key": "d<b", "origin": "<b"}}
    split["fluxo"] = _keyed("each", split)["fluxo"]
    assert split["fluxo"]["key"] == "each<b"
    # An item of the split, then a step that merges inside the branch: the join still keys
    # with the split's origin, as the step engine does.
    item = {**split, "parts": {"id": "p", "index": 1, "count": 2}}
    item["fluxo"] = {**split["fluxo"], "via": "split"}
    x = _keyed("x", item)
    assert x["fluxo"]["key"] == "x[1]<b"
    inner = _keyed("m", x, merges=True)
    assert inner["fluxo"]["key"] == "m[1]<x[1]<b"
    join = {"id": "gather", "type": "function", "func": js.join_code("gather")}
    ((_, joined),) = run_function(join, {**inner, "payload": [{}, {}]}).outputs
    assert (joined["fluxo"]["key"], joined["fluxo"]["origin"]) == ("gather<b", "<b")
    assert _keyed("y", joined)["fluxo"]["key"] == "y<b"
