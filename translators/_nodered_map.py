"""Reading a Node-RED flow: the node list, and what one step node becomes in the IR.

Node-RED's message is ``msg``; a Fluxo payload is ``msg.payload``. So a node maps to an IR step
only when it reads and writes ``msg.payload`` alone, with constants or JSONata; anything else
(other msg properties, flow/global context, JavaScript, sequences by count) is kept ``native``,
the whole node as the step's config, with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pydantic

from fluxo_core.errors import Problem, ValidationError
from fluxo_core.ir import DocumentLimits, Step, check_document, parse_json
from nodered_semantics.http_in import HTTP_ENDPOINT
from nodered_semantics.msg_paths import payload_keys
from nodered_semantics.network import NETWORK_IN, NETWORK_OUT
from nodered_semantics.support import node_problem
from nodered_semantics.typed_values import constant_value
from translators._nodered_expr import (
    ELSE,
    change_rule_ops,
    ir_path,
    jsonata_path,
    literal,
    mustache_jsonata,
    switch_rule_condition,
)
from translators._nodered_model import json_copy

__all__ = [
    "FLOW_LIMITS",
    "STRUCTURAL",
    "NodeMapping",
    "is_flow_node",
    "map_node",
    "native_mapping",
    "parse_flow",
    "slug",
]

_STEP_ADAPTER: pydantic.TypeAdapter[Step] = pydantic.TypeAdapter(Step)
STRUCTURAL = frozenset({"tab", "subflow", "group"})
_UNITS = {"milliseconds": 0.001, "seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
CATCHABLE_NATIVE = frozenset({"change", "switch", "template", "json", "range", "sort", "csv"})


FLOW_LIMITS: Final = DocumentLimits(max_bytes=64 * 1024 * 1024, setting="the flow import limit")
"""What a flow may hold: a whole Node-RED installation's flows.json, nested no deeper than any
editor writes (a flow deeper or larger is not one to import; it would only exhaust memory)."""


def parse_flow(data: Any) -> list[dict[str, Any]]:
    """The node list of a flow: a JSON text, a decoded array or the Admin API's ``{flows, rev}``.

    Text is read, and decoded data checked, within :data:`FLOW_LIMITS` (depth, size, values
    JSON can carry), so no flow makes the import fail with anything but a located error.
    """
    owned = isinstance(data, bytes | bytearray | str)  # decoded here: no caller shares it
    if owned:
        data = parse_json(
            bytes(data) if isinstance(data, bytearray) else data, limits=FLOW_LIMITS, where="flow"
        )
    else:
        check_document(data, limits=FLOW_LIMITS, where="flow")
    if isinstance(data, Mapping) and isinstance(data.get("flows"), list):
        data = data["flows"]
    if not isinstance(data, list):
        raise ValidationError(
            "a Node-RED flow is a JSON array of nodes (or {flows: [...]}): export the flow "
            "from the editor's menu, or read flows.json",
            problems=[("flow", f"got {type(data).__name__}")],
        )
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, node in enumerate(data):
        if not isinstance(node, Mapping):
            problems.append((f"flow[{i}]", "a node is a JSON object"))
            continue
        nid, kind = node.get("id"), node.get("type")
        if not isinstance(nid, str) or not nid:
            problems.append((f"flow[{i}].id", "every node needs a string id"))
        elif nid in seen:
            problems.append(
                (
                    f"flow[{i}].id",
                    f"duplicate id {nid!r} (also flow[{seen[nid]}]): Node-RED would "
                    "keep only the last; give each node its own id",
                )
            )
        else:
            seen[nid] = i
        if not isinstance(kind, str) or not kind:
            problems.append((f"flow[{i}].type", "every node needs a string type"))
    if problems:
        raise ValidationError(
            "the flow has malformed nodes: fix them and import again", problems=problems
        )
    return list(data) if owned else [json_copy(node) for node in data]


def is_flow_node(node: Mapping[str, Any]) -> bool:
    """A node on a canvas (it has a position or wires); config nodes have neither."""
    return node.get("type") not in STRUCTURAL and ("wires" in node or "x" in node)


def slug(text: Any, *, limit: int = 63) -> str:
    out = re.sub(r"[^a-z0-9]+", "-", str(text or "").lower()).strip("-")
    return out[:limit].strip("-")


# --- per-node mapping ----------------------------------------------------------------------------


@dataclass
class NodeMapping:
    """What a step node becomes: IR step bodies (no id/next yet), entry first, exit last."""

    kind: str
    steps: list[dict[str, Any]]
    reason: str
    switch_ports: list[int | str] | None = None  # per port: case index or "default"
    join: bool = False


def native_mapping(node: Mapping[str, Any], reason: str) -> NodeMapping:
    return NodeMapping(
        "native",
        [{"kind": "native", "engine": "nodered", "config": json_copy(node)}],
        reason,
    )


def _named(node: Mapping[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    name = node.get("name")
    if isinstance(name, str) and name.strip():
        return {"name": name.strip()[:200], **body}
    return body


def _checked(node: Mapping[str, Any], mapping: NodeMapping) -> NodeMapping:
    """Validate the step bodies on their own; a body the IR refuses keeps the node native."""
    for body in mapping.steps:
        # Validation does not change what it reads: a shallow copy with the fields the probe
        # fills in (targets that exist only once the graph is built) is enough.
        probe = dict(body)
        if isinstance(probe.get("cases"), list):
            probe["cases"] = [
                {**case, "next": ["probe"]} if isinstance(case, dict) else case
                for case in probe["cases"]
            ]
        if probe["kind"] == "join":
            probe["split"] = "probe"
        try:
            _STEP_ADAPTER.validate_python({"id": "probe", **probe})
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"][1:])
            return native_mapping(
                node, f"the IR refuses its {mapping.kind} form ({where}: {first['msg']})"
            )
    return mapping


def _map_change(node: Mapping[str, Any]) -> NodeMapping:
    rules = node.get("rules")
    if not isinstance(rules, list) or not rules:
        return native_mapping(
            node, "an old-format change node (no rules list): open and save it in Node-RED"
        )
    ops: list[dict[str, Any]] = []
    for i, rule in enumerate(rules):
        found = change_rule_ops(rule) if isinstance(rule, Mapping) else "a rule is not an object"
        if isinstance(found, str):
            return native_mapping(node, f"rule {i + 1} is not portable: {found}")
        ops += found
    return NodeMapping(
        "transform", [_named(node, {"kind": "transform", "ops": ops})], "change -> transform"
    )


def _map_switch(node: Mapping[str, Any]) -> NodeMapping:
    keys = payload_keys(node.get("property", "payload"), node.get("propertyType", "msg"))
    if keys is None:
        return native_mapping(
            node,
            f"routes on {node.get('propertyType', 'msg')} {node.get('property')!r}: only msg.payload "
            "is a Fluxo payload",
        )
    rules = node.get("rules")
    if not isinstance(rules, list) or not rules:
        return native_mapping(node, "a switch without rules")
    if node.get("repair"):
        return native_mapping(node, "'recreate message sequences' has no IR counterpart")
    conditions: list[Any] = []
    for i, rule in enumerate(rules):
        found = switch_rule_condition(rule, keys) if isinstance(rule, Mapping) else None
        if found is None:
            kind = rule.get("t") if isinstance(rule, Mapping) else rule
            return native_mapping(
                node,
                f"rule {i + 1} ({kind}) is not portable (sequence rules and values "
                "from context or other msg properties stay in Node-RED)",
            )
        if found == ELSE and i != len(rules) - 1:
            return native_mapping(
                node, "an 'otherwise' rule before other rules has no IR counterpart"
            )
        conditions.append(found)
    mode = "all" if node.get("checkall") in (True, "true") else "first"
    cases = [{"when": c, "next": []} for c in conditions if c != ELSE]
    ports: list[int | str] = []
    n = 0
    for c in conditions:
        if c == ELSE:
            ports.append("default")
        else:
            ports.append(n)
            n += 1
    body = _named(node, {"kind": "switch", "mode": mode, "cases": cases, "default": []})
    return NodeMapping("switch", [body], "switch -> switch", switch_ports=ports)


def _map_template(node: Mapping[str, Any]) -> NodeMapping:
    keys = payload_keys(node.get("field", "payload"), node.get("fieldType", "msg"))
    text = node.get("template")
    if keys is None or not isinstance(text, str):
        return native_mapping(node, "writes outside msg.payload")
    output, syntax = node.get("output", "str"), node.get("syntax", "mustache")
    if syntax == "plain":
        if output == "json":
            try:
                value = json.loads(text)
            except ValueError:
                return native_mapping(node, "its JSON output is not valid JSON")
        elif output == "str":
            value = text
        else:
            return native_mapping(node, f"{output} output is parsed by Node-RED only")
        if not keys:
            if not isinstance(value, dict):
                return native_mapping(
                    node, "it makes the payload a string: a Fluxo payload is an object"
                )
            ops = [{"op": "jsonata", "expr": literal(value)}]
        else:
            ops = [{"op": "set", "path": ir_path(keys), "value": value}]
        return NodeMapping(
            "transform", [_named(node, {"kind": "transform", "ops": ops})], "template -> transform"
        )
    if syntax != "mustache" or output != "str":
        return native_mapping(node, f"a {syntax} template with {output} output stays in Node-RED")
    if not keys:
        return native_mapping(node, "it makes the payload a string: a Fluxo payload is an object")
    expr = mustache_jsonata(text)
    if expr is None:
        return native_mapping(
            node,
            "the template uses sections, partials or values outside msg.payload: only plain "
            "{{payload.x}} variables map to JSONata",
        )
    ops = [{"op": "set", "path": ir_path(keys), "expr": expr}]
    return NodeMapping(
        "transform",
        [_named(node, {"kind": "transform", "ops": ops})],
        "template -> transform (JSONata)",
    )


def _map_json(node: Mapping[str, Any]) -> NodeMapping:
    keys = payload_keys(node.get("property") or "payload")
    action = node.get("action") or ""
    if keys is None:
        return native_mapping(node, "converts a property outside msg.payload")
    if not keys and action == "obj":
        ops: list[dict[str, Any]] = [{"op": "jsonata", "expr": "$"}]
        reason = "json -> transform: a Fluxo payload is always an object already"
    elif keys and action == "str":
        pretty = ", true" if node.get("pretty") else ""
        ops = [
            {"op": "set", "path": ir_path(keys), "expr": f"$string({jsonata_path(keys)}{pretty})"}
        ]
        reason = "json -> transform ($string)"
    else:
        return native_mapping(
            node, "parsing JSON text or turning the payload into a string has no IR counterpart"
        )
    return NodeMapping("transform", [_named(node, {"kind": "transform", "ops": ops})], reason)


def _map_split(node: Mapping[str, Any]) -> NodeMapping:
    # Node-RED's split chooses what to do by the payload's type when the message arrives (a
    # string by its separator, an array by items or chunks, an object by keys), which the IR's
    # split (arrays only) cannot know at import. Kept as the node: the step engine runs it as
    # Node-RED does, with msg.parts for the join after it.
    return native_mapping(
        node,
        "splits by the payload's type at run time (string, array, object), which the IR's split "
        "(arrays only) cannot: kept as the node",
    )


def _map_join(node: Mapping[str, Any]) -> NodeMapping:
    if node.get("mode", "auto") != "auto":
        return native_mapping(
            node,
            f"a {node.get('mode')} join (by count, key or reduce) is kept as the node: the step "
            "engine gives it a job's messages together",
        )
    return NodeMapping(
        "join", [_named(node, {"kind": "join", "split": "?"})], "join -> join", join=True
    )


def _map_delay(node: Mapping[str, Any]) -> NodeMapping:
    if node.get("pauseType", "delay") != "delay":
        return native_mapping(
            node,
            f"{node.get('pauseType')} (rate limit, random or msg.delay) is kept as the node, "
            "whose queue and timers the step engine keeps (nodered_semantics.timed)",
        )
    ok, amount = constant_value(node.get("timeout", "5"), "num")
    unit = _UNITS.get(str(node.get("timeoutUnits", "seconds")))
    if not ok or unit is None or amount is None or amount <= 0:
        return native_mapping(node, "its delay is not a positive constant")
    seconds = float(amount) * unit
    return NodeMapping(
        "delay", [_named(node, {"kind": "delay", "seconds": seconds})], "delay -> delay"
    )


def _map_http_request(node: Mapping[str, Any]) -> NodeMapping:
    # Kept as the node whatever its URL: the step engine runs a native http request as a call
    # of the http service and sends Node-RED's message on (payload = the body, statusCode,
    # headers, responseUrl), which an IR http step ({status, headers, json|text}) does not.
    problem = node_problem(node)
    if problem is not None:
        return native_mapping(node, f"{problem}: runs only on Node-RED")
    endpoint = node.get(HTTP_ENDPOINT)
    if isinstance(endpoint, Mapping) and "id" in endpoint:
        return native_mapping(
            node,
            f"calls its flow's own http in {endpoint['id']} ({str(endpoint.get('method')).upper()} "
            f"{endpoint.get('url')}): the step engine answers it in the job, with a copy of the "
            "endpoint's nodes, and sends the http response's answer on as Node-RED's message",
        )
    if node.get("method") == "use":
        source = "takes its method from msg.method"
    elif not node.get("url"):
        source = "takes its URL from msg.url"
    else:
        source = "a fixed URL"
    return native_mapping(
        node,
        f"{source}: kept as the node, which the step engine runs as a call of the http service, "
        "sending Node-RED's message on (payload = the body, statusCode, headers, responseUrl)",
    )


def _map_subflow_instance(node: Mapping[str, Any], subflows: Mapping[str, str]) -> NodeMapping:
    target = subflows.get(str(node["type"]).removeprefix("subflow:"))
    if target is None:
        return native_mapping(node, "its subflow definition is not in the file")
    if node.get("env"):
        return native_mapping(
            node, "it sets subflow properties (env), which a workflow call cannot pass"
        )
    body = _named(node, {"kind": "workflow", "workflow": target})
    return NodeMapping(
        "workflow", [body], f"subflow instance -> call of workflow {target!r} (the subflow)"
    )


def map_node(
    node: Mapping[str, Any], subflows: Mapping[str, str], catch: str | None = None
) -> NodeMapping:
    """The IR form of one step node (native when there is no faithful one).

    ``catch``: the catch node whose scope holds this node. A node the ``nodered-node`` service
    runs stays native then, so its failure reaches the catch as Node-RED reports it (the
    node's id, type, name and message), which a mapped step's failure cannot say.
    """
    kind = str(node["type"])
    if catch is not None and kind in CATCHABLE_NATIVE and node_problem(node) is None:
        return native_mapping(
            node,
            f"in the scope of catch {catch}: kept native so that its failure reaches the catch "
            "as Node-RED reports it",
        )
    if kind == "catch":
        return native_mapping(
            node, "a catch: entered by the failures of the steps in its scope (on_error: goto)"
        )
    mappers = {
        "change": _map_change,
        "switch": _map_switch,
        "template": _map_template,
        "json": _map_json,
        "split": _map_split,
        "join": _map_join,
        "delay": _map_delay,
        "http request": _map_http_request,
    }
    if kind in mappers:
        return _checked(node, mappers[kind](node))
    if kind.startswith("subflow:"):
        return _checked(node, _map_subflow_instance(node, subflows))
    if kind == "function":
        return native_mapping(node, "JavaScript: runs only on Node-RED")
    if kind in NETWORK_IN | NETWORK_OUT:
        return native_mapping(
            node,
            f"a network node: {kind} runs on Node-RED; on the step engine too when its peer is "
            "an in or out node of the same flow (no socket: its message starts a job at the "
            "in node)",
        )
    return native_mapping(node, f"no portable equivalent: {kind} runs only on Node-RED")
