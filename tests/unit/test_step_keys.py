"""Step keys: one spelling on every engine (fluxo_core.ir.step_keys)."""

from __future__ import annotations

import pytest

from fluxo_core.ir import key_from_id, key_in_id, merging_steps, validate_workflow


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
