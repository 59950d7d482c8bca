"""Rendering one IR step as Node-RED nodes (shared by generated and merged flows).

Each renderer returns the step's nodes (a chain, left to right, plus helper nodes drawn below it)
and its ways out (:class:`Out`): a port and the steps it leads to, or the end of the message.
Wiring them (and the job bookkeeping of generated flows) is the caller's job.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.ir import (
    MAX_ATTEMPTS_HEADER,
    DelayStep,
    JoinStep,
    NativeStep,
    OnErrorGoto,
    ServiceStep,
    SplitStep,
    Step,
    SwitchStep,
    TransformStep,
    Workflow,
    WorkflowCallStep,
    merging_steps,
)
from translators import _nodered_js as js
from translators._nodered_expr import change_rules, condition_jsonata, ir_path_keys, with_jsonata
from translators._nodered_model import NodeRedOptions, json_copy

__all__ = [
    "COLUMN",
    "ROW",
    "X0",
    "Y0",
    "Ids",
    "Out",
    "RenderContext",
    "Rendered",
    "catch_node",
    "change_node",
    "delay_node",
    "function_node",
    "http_request_node",
    "label",
    "ordered",
    "render_step",
    "successors",
]

COLUMN = 190  # px between the nodes of a chain
ROW = 90  # px between steps in a column
X0, Y0 = 140, 80


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# --- node builders -------------------------------------------------------------------------------


def function_node(nid: str, name: str, code: str, outputs: int = 1) -> dict[str, Any]:
    return {
        "id": nid,
        "type": "function",
        "name": name,
        "func": code,
        "outputs": outputs,
        "timeout": 0,
        "noerr": 0,
        "initialize": "",
        "finalize": "",
        "libs": [],
    }


def change_node(nid: str, name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": nid, "type": "change", "name": name, "rules": rules}


def catch_node(
    nid: str, name: str, scope: list[str] | None, *, uncaught: bool = False
) -> dict[str, Any]:
    return {"id": nid, "type": "catch", "name": name, "scope": scope, "uncaught": uncaught}


def http_request_node(nid: str, name: str, url: str) -> dict[str, Any]:
    return {
        "id": nid,
        "type": "http request",
        "name": name,
        "method": "POST",
        "ret": "obj",
        "paytoqs": "ignore",
        "url": url,
        "tls": "",
        "persist": False,
        "proxy": "",
        "insecureHTTPParser": False,
        "authType": "",
        "senderr": False,
        "headers": [],
    }


def delay_node(nid: str, name: str, seconds: float | None) -> dict[str, Any]:
    return {
        "id": nid,
        "type": "delay",
        "name": name,
        "pauseType": "delay" if seconds is not None else "delayv",
        "timeout": _seconds(seconds) if seconds is not None else "1",
        "timeoutUnits": "seconds",
        "rate": "1",
        "nbRateUnits": "1",
        "rateUnits": "second",
        "randomFirst": "1",
        "randomLast": "5",
        "randomUnits": "seconds",
        "drop": False,
        "allowrate": False,
        "outputs": 1,
    }


# --- rendering one step --------------------------------------------------------------------------


@dataclass
class Out:
    """One way out of a step: a port and where it leads."""

    node: str
    port: int
    steps: list[str]
    end: str | None = None  # "result" or "discard" when the message ends here
    routed: bool = False  # the step's output leaves here (recorded when it is spec.output)
    raw: list[str] = field(default_factory=list)  # node ids (a split's empty path to its join)


@dataclass
class Rendered:
    nodes: list[dict[str, Any]]  # the chain, left to right; "_below" nodes go under it
    outs: list[Out]
    exit: str = ""  # the last node (a join's gather function)

    @property
    def entry(self) -> str:
        return str(self.nodes[0]["id"])


Ids = Callable[[str], str]


@dataclass
class RenderContext:
    workflow: Workflow
    options: NodeRedOptions
    bookkeeping: bool  # count tokens and report (generated flows); off inside imported flows

    @property
    def steps(self) -> dict[str, Step]:
        return self.workflow.spec.steps_by_id()

    @cached_property
    def merging(self) -> set[str]:
        """Steps whose keys name the execution a message came from (``notify<priority``)."""
        return merging_steps(self.workflow.spec.steps)

    @property
    def joined_steps(self) -> set[str]:
        """The steps on a path from a split (or a gathered service step) to its join, after it
        (their items are paired by the join)."""
        steps = self.steps
        inside: set[str] = set()
        for join in steps.values():
            if isinstance(join, JoinStep):
                after = _reach(steps, join.split) - {join.split, join.id}
                inside |= {s for s in after if join.id in _reach(steps, s)}
        return inside

    def join_of(self, split: str) -> str | None:
        return next(
            (
                s.id
                for s in self.workflow.spec.steps
                if isinstance(s, JoinStep) and s.split == split
            ),
            None,
        )


def label(step: Step, what: str = "") -> str:
    base = step.name or step.id
    return f"{base}: {what}" if what else base


def _next_out(node: str, step: Step, port: int = 0) -> Out:
    nxt = list(getattr(step, "next", []))
    return Out(node, port, nxt, None if nxt else "result", routed=True)


def _render_call(step: ServiceStep | WorkflowCallStep, ids: Ids, ctx: RenderContext) -> Rendered:
    ref = step.service if isinstance(step, ServiceStep) else step.workflow
    wait = step.timeout_s or ctx.options.call_wait_s
    url = f"{ctx.options.fluxo_url.rstrip('/')}/v1/services/{ref}/calls?wait={_seconds(wait)}"
    retry = step.retry
    attempts = retry.max_attempts if retry else 1
    backoff = (retry.backoff_s, retry.factor, retry.backoff_max_s) if retry else (1.0, 2.0, 300.0)
    on_error = step.on_error if isinstance(step.on_error, str) else "goto"
    join = ctx.join_of(step.id)  # a join gathers this step's output packets
    request = function_node(
        ids("main"),
        label(step, f"call {ref}"),
        js.request_code(
            step.id,
            ref,
            wait,
            ctx.options.token_envs(ctx.workflow.metadata.account),
            # The flow retries the step itself (the result node), each attempt a new call:
            # the service's RetryPolicy must not retry those calls as well.
            {MAX_ATTEMPTS_HEADER: "1"} if retry is not None else None,
            merges=step.id in ctx.merging,
        ),
    )
    http = http_request_node(ids("http"), label(step, "gateway"), url)
    # `with`: a change node sets the parameters on the packet's payload (JSONata, per item), after
    # the request node has kept the step's input for retries and on_error.
    params = None
    if isinstance(step, ServiceStep) and step.with_:
        subject = "payload.payload"
        expr = with_jsonata(step.static_params, step.param_expressions, subject)
        rule = {"t": "set", "p": subject, "pt": "msg", "to": expr, "tot": "jsonata"}
        params = change_node(ids("with"), label(step, "with"), [rule])
    result = function_node(
        ids("result"),
        label(step, "result"),
        js.result_code(
            step.id,
            attempts=attempts,
            backoff=backoff,
            on_error=on_error,
            inside_join=step.id in ctx.joined_steps,
            gathered=join is not None,
            with_node=params["id"] if params is not None else None,
        ),
        outputs=4,
    )
    result["outputLabels"] = ["next", "retry", "on_error", "no output"]
    chain = [request, *([params] if params is not None else []), http]
    for node, after in itertools.pairwise(chain):
        node["wires"] = [[after["id"]]]
    http["wires"] = [[result["id"]]]
    retry_node = delay_node(ids("retry"), label(step, "retry"), None)
    retry_node["_below"] = 1
    retry_node["wires"] = [[request["id"]]]
    scope = [str(node["id"]) for node in chain[1:]]
    catch = catch_node(ids("catch"), label(step, "unreachable"), scope)
    catch["_below"] = 1
    catch["wires"] = [[result["id"]]]
    goto = [step.on_error.goto] if isinstance(step.on_error, OnErrorGoto) else []
    outs = [
        _next_out(result["id"], step, 0),
        Out(result["id"], 1, [], raw=[retry_node["id"]]),
        Out(result["id"], 2, goto, None if goto else "discard"),
        # No output packet: the message ends, or a join gathers none (it gets [] at once).
        Out(
            result["id"], 3, [], None if join else "discard", raw=[f"@join:{join}"] if join else []
        ),
    ]
    return Rendered([*chain, result, retry_node, catch], outs, result["id"])


def _render_switch(step: SwitchStep, ids: Ids, ctx: RenderContext) -> Rendered:
    rules: list[dict[str, Any]] = [
        {"t": "jsonata_exp", "v": condition_jsonata(case.when), "vt": "jsonata"}
        for case in step.cases
    ]
    rules.append({"t": "else"})
    switch_id = ids("switch") if step.mode == "all" and ctx.bookkeeping else ids("main")
    switch: dict[str, Any] = {
        "id": switch_id,
        "type": "switch",
        "name": label(step),
        "property": "payload",
        "propertyType": "msg",
        "rules": rules,
        "checkall": "true" if step.mode == "all" else "false",
        "repair": False,
        "outputs": len(rules),
    }
    outs = [Out(switch_id, i, list(case.next)) for i, case in enumerate(step.cases)]
    outs.append(
        Out(switch_id, len(step.cases), list(step.default), None if step.default else "discard")
    )
    nodes = [switch]
    if step.mode == "all" and ctx.bookkeeping:
        # the branches a message takes are known only after matching: count them first
        count = "$count([" + ", ".join(f"({r['v']})" for r in rules[:-1]) + "][$])"
        counter = change_node(
            ids("main"),
            label(step, "count branches"),
            [{"t": "set", "p": "fluxo_matches", "pt": "msg", "to": count, "tot": "jsonata"}],
        )
        adjust = function_node(ids("adjust"), label(step, "branches"), js.adjust_code())
        counter["wires"] = [[adjust["id"]]]
        adjust["wires"] = [[switch["id"]]]
        nodes = [counter, adjust, switch]
    return Rendered(nodes, outs, switch_id)


def _render_transform(step: TransformStep, ids: Ids, ctx: RenderContext) -> Rendered:
    node = change_node(ids("main"), label(step), change_rules(step.ops))
    return Rendered([node], [_next_out(node["id"], step)], node["id"])


def _render_delay(step: DelayStep, ids: Ids, ctx: RenderContext) -> Rendered:
    node = delay_node(ids("main"), label(step), step.seconds)
    return Rendered([node], [_next_out(node["id"], step)], node["id"])


def _render_split(step: SplitStep, ids: Ids, ctx: RenderContext) -> Rendered:
    keys = list(ir_path_keys(step.path)) if step.path else []
    code = js.split_code(step.id, keys, merges=step.id in ctx.merging)
    prep = function_node(ids("main"), label(step, "items"), code, outputs=2)
    split_id = ids("split")
    split: dict[str, Any] = {
        "id": split_id,
        "type": "split",
        "name": label(step),
        "splt": "\\n",
        "spltType": "str",
        "arraySplt": 1,
        "arraySpltType": "len",
        "stream": False,
        "addname": "",
        "property": "payload",
    }
    prep["wires"] = [[split_id], []]
    join = ctx.join_of(step.id)
    empty = Out(
        prep["id"], 1, [], None if join else "discard", raw=[f"@join:{join}"] if join else []
    )
    nxt = list(step.next)
    return Rendered(
        [prep, split], [Out(split_id, 0, nxt, None if nxt else "discard"), empty], split_id
    )


def _render_join(step: JoinStep, ids: Ids, ctx: RenderContext) -> Rendered:
    node = {
        "id": ids("main"),
        "type": "join",
        "name": label(step),
        "mode": "auto",
        "build": "object",
        "property": "payload",
        "propertyType": "msg",
        "key": "topic",
        "joiner": "\\n",
        "joinerType": "str",
        "useparts": False,
        "accumulate": False,
        "timeout": "",
        "count": "",
        "reduceRight": False,
        "reduceExp": "",
        "reduceInit": "",
        "reduceInitType": "",
        "reduceFixup": "",
    }
    gather = function_node(ids("gather"), label(step, "gather"), js.join_code(step.id))
    node["wires"] = [[gather["id"]]]
    return Rendered([node, gather], [_next_out(gather["id"], step)], gather["id"])


def _render_native(step: NativeStep, ids: Ids, ctx: RenderContext) -> Rendered:
    if step.engine != "nodered":
        raise UnsupportedFeatureError(
            f"step {step.id!r} is a native {step.engine} step: it cannot run on Node-RED; "
            "replace it with portable steps or run the workflow on its engine",
            step=step.id,
        )
    node = json_copy(step.config)
    node["id"] = ids("main")
    node.setdefault("type", "unknown")
    for key in ("z", "x", "y", "g"):
        node.pop(key, None)
    ports = node.get("wires")
    outs: list[Out] = []
    if isinstance(ports, list) and ports:
        node["wires"] = [[] for _ in ports]
        outs.append(_next_out(node["id"], step))
    elif step.next and node["type"] == "http response":
        raise UnsupportedFeatureError(
            f"native step {step.id!r} answers a call of the flow's own http in endpoint, which "
            "Node-RED makes from the flow itself: export the workflow with its imported source "
            "(unchanged since the import), not as generated nodes",
            step=step.id,
        )
    elif step.next:
        raise UnsupportedFeatureError(
            f"native step {step.id!r} ({node['type']}) has no output port, so it cannot lead to "
            f"{', '.join(step.next)}",
            step=step.id,
        )
    else:
        node["wires"] = []
    return Rendered([node], outs, node["id"])


_RENDERERS: dict[type[Any], Callable[[Any, Ids, RenderContext], Rendered]] = {
    ServiceStep: _render_call,
    WorkflowCallStep: _render_call,
    SwitchStep: _render_switch,
    TransformStep: _render_transform,
    DelayStep: _render_delay,
    SplitStep: _render_split,
    JoinStep: _render_join,
    NativeStep: _render_native,
}


# Steps whose nodes run no function of the flow's own: a generated flow keys their executions
# in a function node in front of them (calls, splits and joins key theirs in their functions).
_KEYED_IN_FRONT = (SwitchStep, TransformStep, DelayStep, NativeStep)


def render_step(step: Step, ids: Ids, ctx: RenderContext) -> Rendered:
    """The nodes of one step, with on_error handling for steps other than calls."""
    rendered = _RENDERERS[type(step)](step, ids, ctx)
    if ctx.bookkeeping and isinstance(step, _KEYED_IN_FRONT):
        code = js.key_code(step.id, merges=step.id in ctx.merging)
        keyer = function_node(ids("key"), label(step, "key"), code)
        keyer["wires"] = [[rendered.entry]]
        rendered = Rendered([keyer, *rendered.nodes], rendered.outs, rendered.exit)
    on_error = step.on_error
    if on_error == "fail" or isinstance(step, ServiceStep | WorkflowCallStep):
        return rendered
    # keep the input, catch the step's errors, route the input on (continue) or to goto
    scope = [str(n["id"]) for n in rendered.nodes if "_below" not in n]
    keep = change_node(
        ids("input"),
        label(step, "keep input"),
        [{"t": "set", "p": "fluxo.input", "pt": "msg", "to": "payload", "tot": "msg", "dc": True}],
    )
    keep["wires"] = [[rendered.entry]]
    action = "goto" if isinstance(on_error, OnErrorGoto) else "continue"
    catch = catch_node(ids("on-error-catch"), label(step, "on error"), scope)
    handler = function_node(
        ids("on-error"), label(step, f"on error {action}"), js.on_error_code(step.id, action)
    )
    catch["wires"] = [[handler["id"]]]
    catch["_below"] = handler["_below"] = 1
    if isinstance(on_error, OnErrorGoto):
        out = Out(handler["id"], 0, [on_error.goto])
    else:
        out = _next_out(handler["id"], step)
    return Rendered([keep, *rendered.nodes, catch, handler], [*rendered.outs, out], rendered.exit)


def _reach(steps: Mapping[str, Step], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in successors(steps[todo.pop()]):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def successors(step: Step) -> list[str]:
    found = list(getattr(step, "next", []))
    if isinstance(step, SwitchStep):
        found = [t for case in step.cases for t in case.next] + list(step.default)
    if isinstance(step.on_error, OnErrorGoto):
        found.append(step.on_error.goto)
    return list(dict.fromkeys(found))


_FIRST = ("id", "type", "z", "g", "name", "label")


def ordered(node: Mapping[str, Any]) -> dict[str, Any]:
    """Keys in Node-RED's usual order: id, type, z first; x, y, wires last."""
    head = {k: node[k] for k in _FIRST if k in node}
    tail = {k: node[k] for k in ("x", "y", "wires") if k in node}
    body = {
        k: v for k, v in node.items() if k not in head and k not in tail and not k.startswith("_")
    }
    return {**head, **body, **tail}
