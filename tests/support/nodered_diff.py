"""The differential test's machinery: the same flow on a real Node-RED and on the step engine.

For one example flow and one of its ``inject`` nodes:

* :func:`inject_msg` computes the message the inject sends (timestamps pinned, so both sides see
  the same input) and :func:`inject_props` the ``__user_inject_props__`` that make Node-RED's
  ``POST /inject/:id`` send exactly that;
* :func:`observable_flow` rewrites the deployable flow so every ``debug`` node reports what
  reaches it (``msg.payload``) to a capture URL (a ``function`` node that builds the request,
  under the debug node's id, plus an ``http request`` node): this works with the editor (and its
  ``/comms`` websocket) disabled; repeating and on-deploy injects are made manual;
* :func:`trigger_workflow` cuts the imported workflow down to what that inject starts;
* :func:`step_captures` reads a finished step-engine job's steps back into "what reached each
  debug node", from each step's node and its wires in the source.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from fluxo_core.ir import Workflow
from nodered_semantics.http_in import HTTP_ENDPOINT
from translators.nodered import NodeRedImport, Trigger

__all__ = [
    "PINNED_TIMESTAMP",
    "Unobservable",
    "canonical",
    "debug_targets",
    "inject_msg",
    "inject_props",
    "observable_flow",
    "step_captures",
    "trigger_workflow",
]

PINNED_TIMESTAMP = 1_700_000_000_000  # what an inject of type "date" sends, on both sides
_TYPED = frozenset({"str", "string", "num", "bool", "json", "date"})


class Unobservable(Exception):  # noqa: N818 (a test outcome, not an error of the product)
    """The flow cannot be compared: its input or its outputs cannot be pinned down."""


def _props(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The inject's properties as the runtime reads them (payload/topic filled from the node)."""
    raw = node.get("props")
    if not isinstance(raw, list):
        raw = [{"p": "payload"}, {"p": "topic", "vt": "str"}]
    props = []
    for prop in raw:
        p = dict(prop)
        if p.get("p") == "payload" and "v" not in p:
            p["v"], p["vt"] = node.get("payload", ""), node.get("payloadType", "date")
        elif p.get("p") == "topic" and p.get("vt", "str") == "str" and "v" not in p:
            p["v"] = node.get("topic", "")
        props.append(p)
    return props


def _value(prop: Mapping[str, Any]) -> Any:
    vt, v = prop.get("vt", "str"), prop.get("v", "")
    if vt not in _TYPED:
        raise Unobservable(f"inject property {prop.get('p')!r} of type {vt!r} is not pinned")
    if vt == "date":
        return PINNED_TIMESTAMP
    if vt == "num":
        number = float(v)
        return int(number) if number.is_integer() else number
    if vt == "bool":
        return v is True or v == "true"
    if vt == "json":
        return json.loads(v) if isinstance(v, str) else v
    return "" if v is None else str(v)


def inject_msg(node: Mapping[str, Any]) -> dict[str, Any]:
    """The message the inject node sends (without ``_msgid``)."""
    msg: dict[str, Any] = {}
    for prop in _props(node):
        if prop.get("p"):
            msg[str(prop["p"])] = _value(prop)
    return msg


def inject_props(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``__user_inject_props__`` for ``POST /inject/:id``: the node's own, timestamps pinned."""
    out = []
    for prop in _props(node):
        if prop.get("vt") == "date":
            out.append({"p": prop["p"], "v": str(PINNED_TIMESTAMP), "vt": "num"})
        else:
            out.append(prop)
    return out


def observable_flow(nodes: Iterable[Mapping[str, Any]], capture_url: str) -> list[dict[str, Any]]:
    """The flow with each debug node posting ``{debug, value, type}`` to ``capture_url``."""
    out: list[dict[str, Any]] = []
    for raw in nodes:
        node = copy.deepcopy(dict(raw))
        if node.get("type") == "inject":
            node.update(repeat="", crontab="", once=False)
        if node.get("type") != "debug" or node.get("d") is True:
            out.append(node)
            continue
        sender = f"{node['id']}-capture"
        code = (
            "var v = msg.payload;\n"
            "return {url: " + json.dumps(capture_url) + ", method: 'POST',\n"
            "  headers: {'content-type': 'application/json'},\n"
            "  payload: JSON.stringify({debug: " + json.dumps(node["id"]) + ",\n"
            "    type: typeof v, value: v === undefined ? null : v})};"
        )
        out.append(
            {
                "id": node["id"],
                "type": "function",
                "z": node.get("z"),
                "name": f"capture {node.get('name') or node['id']}",
                "func": code,
                "outputs": 1,
                "x": node.get("x", 0),
                "y": node.get("y", 0),
                "wires": [[sender]],
            }
        )
        out.append(
            {
                "id": sender,
                "type": "http request",
                "z": node.get("z"),
                "name": "",
                "method": "use",
                "ret": "txt",
                "paytoqs": "ignore",
                "url": "",
                "tls": "",
                "persist": False,
                "proxy": "",
                "authType": "",
                "senderr": False,
                "headers": [],
                "x": node.get("x", 0),
                "y": node.get("y", 0) + 40,
                "wires": [[]],
            }
        )
    return out


def canonical(value: Any) -> str:
    """A comparable text of a payload: integral floats as integers, keys sorted."""

    def norm(v: Any) -> Any:
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, ensure_ascii=False)


def _walk(
    imp: NodeRedImport, targets: Iterable[str], calls: tuple[str, ...]
) -> list[tuple[str, tuple[str, ...]]]:
    """The nodes a wire to ``targets`` reaches within the link calls and subflow instances
    ``calls`` (outermost first), through junctions, links, link calls and their returns, and
    subflow instances (in through the subflow's input); wiring nodes are not listed."""
    by_id = {str(n["id"]): n for n in imp.source.nodes}
    found: list[tuple[str, tuple[str, ...]]] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(t, calls) for t in targets]
    while todo:
        nid, within = todo.pop(0)
        if (nid, within) in seen or nid not in by_id:
            continue
        seen.add((nid, within))
        node = by_id[nid]
        if node.get("d") is True:
            continue
        kind = str(node.get("type"))
        if kind == "junction" or kind == "link in":
            todo += [(t, within) for port in node.get("wires") or [] for t in port]
        elif kind == "link out" and node.get("mode", "link") == "link":
            todo += [(t, within) for t in node.get("links") or []]
        elif kind == "link out":  # a return: on at the wires of the innermost link call
            inner = [i for i, c in enumerate(within) if by_id[c].get("type") == "link call"]
            if inner:
                caller = by_id[within[inner[-1]]]
                todo += [
                    (t, within[: inner[-1]]) for port in caller.get("wires") or [] for t in port
                ]
        elif kind == "link call" and node.get("linkType", "static") == "static":
            todo += [(t, (*within, nid)) for t in node.get("links") or []]
        elif kind.startswith("subflow:"):
            definition = by_id.get(kind.removeprefix("subflow:"), {})
            for port in definition.get("in") or []:
                todo += [(str(w["id"]), (*within, nid)) for w in port.get("wires") or []]
            for i, port in enumerate(definition.get("out") or []):
                if any(w.get("id") == definition.get("id") for w in port.get("wires") or []):
                    wires = node.get("wires") or []
                    todo += [(t, within) for t in (wires[i] if i < len(wires) else [])]
        else:
            found.append((nid, within))
    return found


def subflow_output_wires(
    imp: NodeRedImport, node: Mapping[str, Any], port: int, calls: tuple[str, ...]
) -> list[tuple[list[str], tuple[str, ...]]]:
    """Where a node inside a subflow instance (the innermost of ``calls``) sends its output
    ``port`` besides its wires: the instance's wires of the subflow outputs it feeds (and, when
    that instance feeds the outputs of a subflow around it, that one's), each with the calls
    its targets are within."""
    by_id = {str(n["id"]): n for n in imp.source.nodes}
    z = str(node.get("z") or "")
    inner = [i for i, c in enumerate(calls) if by_id[c].get("type") == f"subflow:{z}"]
    if not inner:
        return []
    instance = by_id[calls[inner[-1]]]
    outer = calls[: inner[-1]]
    wires = instance.get("wires") or []
    found: list[tuple[list[str], tuple[str, ...]]] = []
    for i, out in enumerate(by_id[z].get("out") or []):
        for w in out.get("wires") or []:
            if w.get("id") == node.get("id") and int(w.get("port") or 0) == port:
                found.append((list(wires[i]) if i < len(wires) else [], outer))
                found += subflow_output_wires(imp, instance, i, outer)
    return found


def debug_targets(
    imp: NodeRedImport, targets: Iterable[str], calls: tuple[str, ...] = ()
) -> list[str]:
    """The enabled debug nodes a wire to ``targets`` reaches (see :func:`_walk`)."""
    by_id = {str(n["id"]): n for n in imp.source.nodes}
    return [nid for nid, _ in _walk(imp, targets, calls) if by_id[nid].get("type") == "debug"]


def step_nodes_reached(
    imp: NodeRedImport, targets: Iterable[str], calls: tuple[str, ...] = ()
) -> set[str]:
    """The nodes a wire to ``targets`` reaches that are no mere wiring (see :func:`_walk`)."""
    return {nid for nid, _ in _walk(imp, targets, calls)}


def trigger_workflow(imp: NodeRedImport, trigger: Trigger, name: str) -> dict[str, Any]:
    """The trigger's workflow as a document that starts where ``trigger`` does and holds only
    what it starts, for the step engine: at the step it feeds or, when it feeds several, at the
    workflow's start step (which leads to every entry of the tab) leading to those only.

    ``spec.engine`` is dropped (an imported flow with native steps names ``nodered``; the
    installation's default, the step engine, runs it), and steps the start cannot reach are
    removed (the IR refuses unreachable steps).
    """
    workflow = imp.workflow(trigger.workflow)
    start = trigger.start[0] if len(trigger.start) == 1 else workflow.spec.start_id
    doc = workflow.model_dump(mode="json", by_alias=True, exclude_none=True)
    steps = {s["id"]: s for s in doc["spec"]["steps"]}
    if len(trigger.start) > 1:
        entries = steps[start].get("next", [])
        if not set(trigger.start) <= set(entries):
            raise Unobservable(f"trigger {trigger.node_id}: its nodes are not entries of the tab")
        steps[start]["next"] = [e for e in entries if e in trigger.start]
    reach, todo = set(), [start]
    while todo:
        sid = todo.pop()
        if sid in reach or sid not in steps:
            continue
        reach.add(sid)
        step = steps[sid]
        todo += list(step.get("next", []))
        todo += [t for case in step.get("cases", []) for t in case.get("next", [])]
        todo += list(step.get("default", []))
        goto = step.get("on_error")
        if isinstance(goto, dict):
            todo.append(goto["goto"])
    doc["spec"]["steps"] = [s for s in doc["spec"]["steps"] if s["id"] in reach]
    doc["spec"]["start"] = start
    doc["spec"].pop("engine", None)
    if doc["spec"].get("output") not in reach:
        doc["spec"].pop("output", None)
    doc["metadata"] = {"name": name}
    return doc


def step_captures(
    imp: NodeRedImport, imported: str, workflow: Workflow, steps: Iterable[Any]
) -> dict[str, list[str]]:
    """What reached each debug node in a step-engine job: ``{debug id: [canonical payload]}``.

    ``imported`` names the workflow of the import that ``workflow`` (the one the job ran) was cut
    from.

    Raises:
        Unobservable: a switch port that feeds a debug node but no step (the job's record
            does not say whether the message left by it).
    """
    source = imp.source.workflows[imported]
    by_id = {str(n["id"]): n for n in imp.source.nodes}
    plan = {s.id: s for s in workflow.spec.steps}
    imported_plan = {s.id: s for s in source.imported.spec.steps}

    def is_exit(sid: str, nid: str) -> bool:
        """The last step of its node (a node brought in through links has several copies,
        each with its own steps; an http request's first step describes the request to the
        service step that follows)."""
        step = imported_plan.get(sid)
        nxt = getattr(step, "next", None) or []
        return not (
            getattr(step, "kind", None) == "transform"
            and len(nxt) == 1
            and source.step_nodes.get(nxt[0]) == nid
            and getattr(imported_plan.get(nxt[0]), "kind", None) == "service"
        )

    captured: dict[str, list[str]] = {}

    def deliver(
        ports: Iterable[int], node: Mapping[str, Any], payload: Any, calls: tuple[str, ...] = ()
    ) -> None:
        wires = node.get("wires") or []
        for p in ports:
            if p < 0:  # a reported failure goes to a catch, not a wire
                continue
            found = debug_targets(imp, wires[p], calls) if p < len(wires) else []
            for beyond, outer in subflow_output_wires(imp, node, p, calls):
                found += debug_targets(imp, beyond, outer)
            for debug in found:
                captured.setdefault(debug, []).append(canonical(payload))

    for state in steps:
        owner = source.step_nodes.get(state.step_id)
        if owner is None or not is_exit(state.step_id, owner) or state.phase != "succeeded":
            continue
        nid = owner
        node = by_id[nid]
        calls = source.step_calls.get(state.step_id, ())
        step = plan[state.step_id]
        kind = step.kind
        out = state.output
        if kind == "native":
            # A call of the flow's own endpoint: the request's step feeds the endpoint's http
            # in wires (within the call), the http response's step the request's wires.
            config = getattr(step, "config", None) or {}
            if node.get("type") == "http request" and "id" in (config.get(HTTP_ENDPOINT) or {}):
                node, calls = by_id[config[HTTP_ENDPOINT]["id"]], (*calls, nid)
            elif node.get("type") == "http response":
                inner = [i for i, c in enumerate(calls) if by_id[c].get("type") == "http request"]
                if not inner:
                    continue
                node, calls = by_id[calls[inner[-1]]], calls[: inner[-1]]
            for item in out or []:
                deliver([int(item["port"])], node, (item.get("msg") or {}).get("payload"), calls)
        elif kind == "service":
            for payload in out or []:
                deliver(range(len(node.get("wires") or [])), node, payload, calls)
        elif kind == "switch":
            chosen = set((out or {}).get("next", []))
            taken = []
            for p, port in enumerate(node.get("wires") or []):
                reached = step_nodes_reached(imp, port, calls)
                debugs = debug_targets(imp, port, calls)
                for beyond, outer in subflow_output_wires(imp, node, p, calls):
                    reached |= step_nodes_reached(imp, beyond, outer)
                    debugs += debug_targets(imp, beyond, outer)
                steps_of_port = {s for s, n in source.step_nodes.items() if n in reached}
                if steps_of_port & chosen:
                    taken.append(p)
                elif debugs and not steps_of_port:
                    raise Unobservable(f"switch {nid}: a port feeds only debug nodes")
            deliver(taken, node, state.input, calls)
        elif kind == "split":
            items = state.input if isinstance(state.input, list) else []
            for item in items:
                deliver([0], node, item, calls)
        else:  # transform, delay, join: one output on port 0
            deliver([0], node, out, calls)
    return captured
