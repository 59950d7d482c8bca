"""Subflow properties (env): resolved per instance as Node-RED does, carried by each copy of a
subflow's nodes, and accepted by the step engine's checks for the names they provide.

The differential test (tests/integration/nodered/test_differential.py, ``subflow-env.json``)
compares whole flows with a real Node-RED; these cases pin the rules on their own."""

from __future__ import annotations

from typing import Any

from engines.step import step_runnable
from nodered_semantics.support import SUBFLOW_ENV, node_problem
from nodered_semantics.typed_values import subflow_env_values
from translators.nodered import from_nodered


def _env(name: str, kind: str, value: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "value": value}


DEFINITION = {
    "id": "sf",
    "type": "subflow",
    "name": "greeter",
    "env": [
        _env("GREETING", "str", "hello"),
        _env("FACTOR", "num", "2"),
        _env("LOUD", "bool", "false"),
        _env("CONF", "json", '{"unit": "kg"}'),
        _env("ALIAS", "env", "GREETING"),
        _env("LABEL", "env", "${GREETING}-${NR_SUBFLOW_NAME}"),
        _env("OUTER", "env", "OUTER"),
    ],
}


def test_the_instance_overrides_its_subflows_properties_by_name() -> None:
    instance = {"id": "i1", "name": "custom", "env": [_env("GREETING", "str", "hi")]}
    values = subflow_env_values(DEFINITION, instance, {"OUTER": "around"})
    assert values == {
        "GREETING": "hi",
        "FACTOR": 2,
        "LOUD": False,
        "CONF": {"unit": "kg"},
        "ALIAS": "hi",  # env properties read this instance's values, after them
        "LABEL": "hi-custom",
        "OUTER": "around",  # naming itself: the variable of the same name around the instance
    }


def test_a_property_only_node_red_knows_is_left_out() -> None:
    # OUTER names itself and nothing around the instance sets it: Node-RED would read its
    # settings or process environment, which the import cannot know.
    values = subflow_env_values(DEFINITION, {"id": "i1", "name": "n"}, {})
    assert "OUTER" not in values
    unknown = {"id": "sf", "env": [_env("HOME_DIR", "env", "${HOME}/x")]}
    assert subflow_env_values(unknown, {"id": "i"}, {}) == {}


def test_the_checks_accept_the_variables_a_node_is_given() -> None:
    change = {
        "id": "c",
        "type": "change",
        "rules": [{"t": "set", "p": "payload", "pt": "msg", "to": "$env('RATE') * 2", "tot": "jsonata"}],
    }  # fmt: skip
    assert "RATE" in str(node_problem(change))
    assert node_problem({**change, SUBFLOW_ENV: {"RATE": 2}}) is None
    switch = {"id": "s", "type": "switch", "property": "LOUD", "propertyType": "env",
              "rules": [{"t": "true"}], "outputs": 1}  # fmt: skip
    assert "LOUD" in str(node_problem(switch))
    assert node_problem({**switch, SUBFLOW_ENV: {"LOUD": True}}) is None


def _flow(instances: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    definition = {
        "id": "sf", "type": "subflow", "name": "rate",
        "in": [{"x": 0, "y": 0, "wires": [{"id": "f"}]}],
        "out": [{"x": 0, "y": 0, "wires": [{"id": "f", "port": 0}]}],
        "env": [_env("RATE", "num", "1")],
    }  # fmt: skip
    fn = {"id": "f", "type": "function", "z": "sf", "func": code, "outputs": 1,
          "x": 0, "y": 0, "wires": [[]]}  # fmt: skip
    tab = {"id": "t", "type": "tab", "label": "T"}
    inject = {"id": "in", "type": "inject", "z": "t", "x": 0, "y": 0,
              "wires": [[i["id"] for i in instances]]}  # fmt: skip
    return [definition, fn, tab, inject, *instances]


def test_each_instances_copy_carries_its_own_env() -> None:
    instances = [
        {"id": "a", "type": "subflow:sf", "z": "t", "name": "a", "x": 0, "y": 0, "wires": [[]]},
        {"id": "b", "type": "subflow:sf", "z": "t", "name": "b", "x": 0, "y": 0, "wires": [[]],
         "env": [_env("RATE", "num", "3")]},
    ]  # fmt: skip
    imp = from_nodered(_flow(instances, "msg.payload = env.get('RATE'); return msg;"))
    sub, tab = imp.workflows
    assert all(step_runnable(w, imp.triggers)[0] for w in imp.workflows)
    copies = sorted(
        (s.config[SUBFLOW_ENV]["NR_SUBFLOW_NAME"], s.config[SUBFLOW_ENV]["RATE"])
        for s in tab.spec.steps
        if s.kind == "native"
    )
    assert copies == [("a", 1), ("b", 3)]
    # the subflow's own workflow: its nodes see the subflow's values (an instance setting none)
    (own,) = [s for s in sub.spec.steps if s.kind == "native"]
    assert own.config[SUBFLOW_ENV] == {"RATE": 1}


def test_an_instance_with_a_property_node_red_alone_evaluates_is_not_copied() -> None:
    instance = {"id": "a", "type": "subflow:sf", "z": "t", "x": 0, "y": 0, "wires": [[]],
                "env": [_env("RATE", "cred", "")]}  # fmt: skip
    imp = from_nodered(_flow([instance], "return msg;"))
    tab = imp.workflows[1]
    (step,) = tab.spec.steps
    assert (step.kind, step.config.get("id")) == ("native", "a")
    entry = imp.report.get("a")
    assert "'cred'" in entry.reason
