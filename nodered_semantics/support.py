"""Which Node-RED nodes run outside Node-RED, on one message, faithfully.

The ``nodered-node`` built-in service (:data:`NODERED_NODE_SERVICE`) runs the node kinds of
:data:`SUPPORTED_TYPES` on one message; the step engine calls it, by name, for every ``native``
step an imported flow kept. :func:`node_problem` is the static check both use: it reads the
node's configuration and says why the node cannot run faithfully, before a flow's first job
instead of at the node. "Faithfully" excludes what depends on earlier messages, which Node-RED
keeps in the running node while a call starts afresh: switch rules on a
message sequence (head, tail, index) or on the previous value, a batch by time; and what a JSON
message cannot carry. A node whose state the caller keeps in its node context
(:func:`nodered_semantics.context.keeps_state`: csv headers sent once, a streaming split, a
batch's held messages, a function's setup run once) is no obstacle. Nodes that act on a whole
sequence (join, batch, a sort of a sequence, a switch recreating sequences:
:func:`is_sequence_node`) get every message of a job at once instead.
Context (``context``/``flow``/``global``) is no obstacle: the caller hands a node the scopes
it uses (:mod:`nodered_semantics.context`) and keeps what it writes.

The configuration readers the nodes share with their checks live here too
(:func:`change_rules`, :func:`switch_rule_values`, :func:`range_numbers`), so a check and a run
read a node alike.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Collection, Mapping
from typing import Any

from nodered_semantics.context import context_problem, context_scopes, keeps_state
from nodered_semantics.events import WATCHER_TYPES, watcher_problem
from nodered_semantics.files import FILE_TYPES, file_node_problem
from nodered_semantics.http_in import HTTP_RESPONSE_TYPE
from nodered_semantics.http_request import HTTP_REQUEST_TYPE, http_request_problem
from nodered_semantics.js import UNDEFINED, is_js_number, is_nan, js_number, js_regex, js_string
from nodered_semantics.jsonata import jsonata_problem
from nodered_semantics.timed import TIMED_TYPES, timed_problem
from nodered_semantics.typed_values import CONTEXT_TYPES, typed_value_problem

__all__ = [
    "NODERED_NODE_SERVICE",
    "PARSER_TYPES",
    "PASSING_TYPES",
    "QUEUE_CONTROLS",
    "REPORTED_PORT",
    "RULE_TYPES",
    "SEQUENCE_TYPES",
    "SUBFLOW_ENV",
    "SUPPORTED_TYPES",
    "UNFINISHED_SEQUENCE",
    "batch_sizes",
    "change_rules",
    "function_reports_errors",
    "is_sequence_node",
    "node_problem",
    "range_numbers",
    "rules_problem",
    "supported_types_text",
    "switch_rule_values",
]

RULE_TYPES = frozenset({"change", "switch", "range", "sort"})

REPORTED_PORT = -1
"""The output "port" of a failure a node reported and went on (``node.error(err, msg)`` in a
function): the packet's msg is ``{message, msg}``; the step engine hands it to the step's catch
(its ``on_error: goto``) and drops it when there is none, as Node-RED only logs it then."""

SUBFLOW_ENV = "fluxo_env"
"""The key of a node's configuration that holds the environment variables of the subflow
instances it runs within (``{name: value}``), as an import that copies a subflow's nodes per
instance resolved them: an engine passes them to the ``nodered-node`` service as ``env``, so
``env.get``, ``$env()`` and ``${NAME}`` see what they see on Node-RED."""

NODERED_NODE_SERVICE = "nodered-node"
"""The name of the built-in service that runs one node on one message."""
PASSING_TYPES = frozenset({"junction", "link out"})
"""Wiring nodes an import keeps as steps where a port of a node with several outputs leads to
them (so the port can be told apart): they pass the message on unchanged."""
SEQUENCE_TYPES = frozenset({"join", "batch"})
"""Nodes that act on the messages of a sequence together, not on one message: the step engine
gathers every message that reaches one in a job and calls the service once with them all
(``{node, messages}``), in the order Node-RED would deliver them. A sort of a message sequence
and a switch that recreates sequences do too (:func:`is_sequence_node`)."""
UNFINISHED_SEQUENCE = "unfinished_sequence"
"""The context key of a sequence node's failure for a group the job left incomplete: not a
failure Node-RED would report (it would wait for more messages), so it reaches no catch node;
the step engine fails the job instead."""
PARSER_TYPES = frozenset({"yaml", "xml", "html"})
"""The parser nodes run on one message like ``json``: :mod:`services.nodered.yaml_node` and its
siblings."""
SUPPORTED_TYPES = (
    frozenset({"function", "template", "json", "csv", "catch", "split"})
    | WATCHER_TYPES
    | {"debug"}
    | PARSER_TYPES
    | RULE_TYPES
    | PASSING_TYPES
    | SEQUENCE_TYPES
    | FILE_TYPES
    | TIMED_TYPES
)


def is_sequence_node(node: Mapping[str, Any]) -> bool:
    """Whether the node takes the messages of a job together (``{node, messages}``): a node of
    :data:`SEQUENCE_TYPES`, a sort of a message sequence, a switch with "recreate message
    sequences" (``repair``), or a csv or split node that keeps state between messages
    (:func:`~nodered_semantics.context.keeps_state`), which must see them in Node-RED's order
    (a header goes with the first row, a remainder with the next piece of text)."""
    kind = node.get("type")
    if kind in SEQUENCE_TYPES:
        return True
    if kind in ("csv", "split"):  # what it keeps depends on the order of its messages
        return keeps_state(node)
    if kind == "sort":
        return node.get("targetType") != "msg"
    return kind == "switch" and bool(node.get("repair"))


def node_problem(node: Mapping[str, Any]) -> str | None:
    """Why the ``nodered-node`` service cannot run ``node`` faithfully, or None when it can.

    A static check of the configuration, so an engine can refuse a flow before its first job
    instead of failing at the node. "Faithfully" excludes what depends on earlier messages:
    Node-RED keeps that state in the running node, a call of this service starts afresh.
    """
    kind = str(node.get("type", ""))
    if kind == HTTP_REQUEST_TYPE:  # not this service's: a call of the http service
        return http_request_problem(node)
    if kind == HTTP_RESPONSE_TYPE:  # the answer to a call of the flow's own http in endpoint
        return None
    if kind not in SUPPORTED_TYPES:
        return f"the {kind!r} node type runs only on Node-RED (supported: {supported_types_text()})"
    if kind in FILE_TYPES:  # on the account's virtual file store (nodered_semantics.files)
        return file_node_problem(node)
    problem = context_problem(node)
    if problem is not None:
        return problem
    if kind != "join" and is_sequence_node(node) and {"flow", "global"} & context_scopes(node):
        return (
            "it reads flow or global context while acting on a message sequence; the step "
            "engine hands such a node its messages without context"
        )
    if kind in TIMED_TYPES:
        return timed_problem(node)
    if kind in RULE_TYPES:
        provided = node.get(SUBFLOW_ENV)
        return rules_problem(node, tuple(provided) if isinstance(provided, Mapping) else ())
    if kind == "link out" and node.get("mode") == "return":
        return "a return link out continues at its link call, which the import wires instead"
    if kind in WATCHER_TYPES:
        return watcher_problem(node)
    if kind == "catch":
        scope = node.get("scope")
        if scope not in (None, "") and not isinstance(scope, list):
            return f"it catches the failures of its {scope!r} (only the tab or listed nodes are)"
    if kind == "function":
        if not isinstance(node.get("func"), str):
            return "it has no code (func)"
        libs = node.get("libs")
        if isinstance(libs, list) and libs:
            return "it loads external modules (libs), which only Node-RED can provide"
        code = "\n".join(str(node.get(k) or "") for k in ("func", "initialize"))
        if re.search(r"\bsetInterval\s*\(", code):
            return "it uses setInterval, which never lets a call end"
        if re.search(r"\brequire\s*\(", code):
            return "it calls require(), which needs Node.js modules"
    if kind == "template" and node.get("fieldType", "msg") not in ("msg", "flow", "global"):
        return f"it writes its result to {node.get('fieldType')!r}, not msg, flow or global"
    if kind == "split":
        return _split_problem(node)
    if kind == "html":
        return _html_problem(node)
    if kind == "join":
        return _join_problem(node)
    if kind == "batch":
        return _batch_problem(node)
    if kind == "csv" and node.get("spec") == "rfc":
        return "RFC 4180 mode of the csv node is not supported on the step engine yet"
    return None


def _split_problem(node: Mapping[str, Any]) -> str | None:
    kind = node.get("spltType") or "str"
    if kind == "bin":
        return "it splits at a Buffer separator, which a JSON message cannot carry"
    if kind not in ("str", "len"):
        return f"its split type {kind!r} is unknown"
    if kind == "len" and not _positive_integer(node.get("splt")):
        return f"its split length {node.get('splt')!r} is not a positive integer"
    if "arraySplt" in node and not _positive_integer(node.get("arraySplt")):
        return f"its array split length {node.get('arraySplt')!r} is not a positive integer"
    return None


_JQUERY_POSITION = re.compile(r":(?:first|last|even|odd|eq|gt|lt|nth)(?:\(\s*\d+\s*\))?\s*$")


def _html_problem(node: Mapping[str, Any]) -> str | None:
    """Whether the html node's own selector (``tag``) can be read as cheerio reads it: CSS
    (soupsieve), with at most one jQuery position filter (``:first``, ``:eq(n)``...) at its
    end. ``msg.select`` is checked when a message brings it."""
    tag = node.get("tag")
    if tag in (None, ""):
        return None
    if not isinstance(tag, str):
        return f"its selector {tag!r} is not a string"
    if re.match(r"^\s*<", tag):
        return f"its selector {tag!r} is HTML, which cheerio would make elements from"
    import soupsieve

    base = _JQUERY_POSITION.sub("", tag).strip() if "," not in tag else tag
    try:
        with warnings.catch_warnings():  # :contains() is cheerio's name for :-soup-contains()
            warnings.simplefilter("ignore", FutureWarning)
            soupsieve.compile(base or "*")
    except soupsieve.SelectorSyntaxError as exc:
        first = str(exc).splitlines()[0]
        return f"its CSS selector {tag!r} is not supported on the step engine: {first}"
    return None


def _positive_integer(value: Any) -> bool:
    """``parseInt(value) >= 1``, as the split node checks its lengths."""
    return bool(re.match(r"\s*\+?0*[1-9]", str(value)))


_JOIN_BUILDS = frozenset({"array", "string", "object", "merged"})


def _join_problem(node: Mapping[str, Any]) -> str | None:
    mode = node.get("mode") or "auto"
    if mode == "reduce":
        problem = jsonata_problem(node.get("reduceExp"))
        if problem is None and node.get("reduceFixup") not in (None, ""):
            problem = jsonata_problem(node.get("reduceFixup"))
        if problem is None:
            problem = typed_value_problem(node.get("reduceInit"), node.get("reduceInitType"))
        return None if problem is None else f"its reduce expressions: {problem}"
    if mode == "auto":
        return None
    if mode != "custom":
        return f"its mode {mode!r} is unknown"
    timeout = js_number(node.get("timeout") or 0)
    if is_nan(timeout) or timeout > 0:
        return (
            f"it sends a group when its timeout ({node.get('timeout')} s) expires, which "
            "depends on when messages arrive; the step engine joins the messages of one job"
        )
    if node.get("accumulate") is True:
        return (
            "it accumulates (keeps the group after sending it), so later jobs would add to "
            "it; the step engine joins the messages of one job"
        )
    build = node.get("build") or "array"
    if build == "buffer" or (build == "string" and node.get("joinerType") == "bin"):
        return "it builds a Buffer, which a JSON message cannot carry"
    if build not in _JOIN_BUILDS:
        return f"its output type {build!r} is unknown"
    return None


def _batch_problem(node: Mapping[str, Any]) -> str | None:
    mode = node.get("mode") or "count"
    if mode == "interval":
        return (
            "it sends its messages every interval, which depends on when they arrive; the step "
            "engine batches the messages of one job by count or by topic only"
        )
    if mode == "concat":
        return None
    if mode != "count":
        return f"its mode {mode!r} is unknown"
    count, overlap = batch_sizes(node)
    if not (is_js_number(count) and count >= 1 and count == int(count)):
        return f"its count {node.get('count')!r} is not a positive integer"
    if is_nan(overlap) or overlap < 0 or overlap != int(overlap):
        return f"its overlap {node.get('overlap')!r} is not a whole number"
    if count <= overlap:
        return f"its count ({count}) is not above its overlap ({overlap}), so it never sends"
    return None


def batch_sizes(node: Mapping[str, Any]) -> tuple[Any, Any]:
    """A count-mode batch's ``count`` and ``overlap`` as the node reads them on start."""
    return js_number(node.get("count") or 1), js_number(node.get("overlap") or 0)


def supported_types_text() -> str:
    """The supported node kinds, for messages: ``"change, csv, function, ..."``."""
    return ", ".join(sorted(SUPPORTED_TYPES))


# done(err) hands msg to the catch nodes; what the body sends besides is Node-RED's own business.
_DONE_WITH_ERROR = re.compile(r"\bdone\s*\(\s*[^)\s]")


def function_reports_errors(code: str) -> bool:
    """Whether a function body reports a failure with ``done(err)``, which on Node-RED reaches
    the catch nodes while what the body sent still goes on (the step engine fails the step)."""
    return bool(_DONE_WITH_ERROR.search(code))


def rules_problem(node: Mapping[str, Any], env: Collection[str] = ()) -> str | None:
    """Why a change/switch/range/sort node cannot run on one message here, or None (``env``:
    the environment variables the call provides besides the node's own)."""
    kind = node.get("type")
    if kind == "change":
        return _change_problem(node, env)
    if kind == "switch":
        return _switch_problem(node, env)
    if kind == "range":
        return _range_problem(node)
    if kind == "sort":
        return _sort_problem(node, env)
    return f"{kind!r} is not a rule node"


_CHANGE_ACTIONS = frozenset({"set", "change", "delete", "move"})


def change_rules(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The node's rules as Node-RED migrates them on start (old single-rule nodes too)."""
    raw = node.get("rules")
    if not raw:
        action = node.get("action")
        rule: dict[str, Any] = {"t": "set" if action == "replace" else action}
        rule["p"] = node.get("property") or ""
        if rule["t"] in ("set", "move"):
            rule["to"] = node.get("to") or ""
        elif rule["t"] == "change":
            rule["from"] = node.get("from") or ""
            rule["to"] = node.get("to") or ""
            rule["re"] = node.get("reg") is None or node.get("reg")
        raw = [rule]
    rules = []
    for given in raw if isinstance(raw, list) else []:
        rule = dict(given) if isinstance(given, Mapping) else {}
        rule.setdefault("pt", "msg")
        rule["pt"] = rule["pt"] or "msg"
        if rule.get("t") == "change" and rule.get("re"):
            rule["fromt"] = "re"
            del rule["re"]
        if (
            rule.get("t") == "set"
            and not rule.get("tot")
            and str(rule.get("to", "")).startswith("msg.")
        ):
            rule["to"] = str(rule["to"])[4:]
            rule["tot"] = "msg"
        rule["tot"] = rule.get("tot") or "str"
        rule["fromt"] = rule.get("fromt") or "str"
        rules.append(rule)
    return rules


# Message properties that make a delay or trigger node act on the messages it holds: the step
# engine's delay keeps no queue, so a flow that sends them would behave differently.
QUEUE_CONTROLS = frozenset({"reset", "flush"})


def _change_problem(node: Mapping[str, Any], env: Collection[str]) -> str | None:
    rules = change_rules(node)
    if not rules:
        return "it has no rules"
    for n, rule in enumerate(rules, 1):
        action = rule.get("t")
        if action not in _CHANGE_ACTIONS:
            return f"rule {n} has an unknown action {action!r}"
        if rule["pt"] not in ("msg", *CONTEXT_TYPES):
            return f"rule {n} changes a {rule['pt']!r} property, not msg, flow or global"
        if rule["pt"] == "msg" and str(rule.get("p", "")).strip() in QUEUE_CONTROLS:
            return (
                f"rule {n} sets msg.{str(rule.get('p')).strip()}, which controls the queue a "
                "following delay or trigger node keeps across messages"
            )
        if action == "delete":
            continue
        if action == "move":
            if rule["tot"] not in ("msg", *CONTEXT_TYPES):
                return f"rule {n} moves a property into {rule['tot']!r}, not msg, flow or global"
            continue
        problem = typed_value_problem(rule.get("to"), rule["tot"], env)
        if problem is not None:
            return f"rule {n}: {problem}"
        if action == "change":
            fromt = rule["fromt"]
            if fromt == "re":
                try:
                    js_regex(str(rule.get("from", "")))
                except ValueError as exc:
                    return f"rule {n}: its regular expression cannot be reproduced: {exc}"
    return None


_SEQUENCE_RULES = frozenset({"head", "tail", "index"})
_SWITCH_RULES = frozenset(
    {"eq", "neq", "lt", "lte", "gt", "gte", "btwn", "cont", "regex", "true", "false", "null"}
    | {"nnull", "empty", "nempty", "istype", "hask", "jsonata_exp", "else"}
)


def _switch_problem(node: Mapping[str, Any], env: Collection[str]) -> str | None:
    problem = typed_value_problem(node.get("property"), node.get("propertyType") or "msg", env)
    if problem is not None:
        return f"its property: {problem}"
    rules = node.get("rules") or []
    if not isinstance(rules, list):
        return "its rules are not a list"
    for n, rule in enumerate(rules, 1):
        if not isinstance(rule, Mapping):
            return f"rule {n} is not an object"
        t = rule.get("t")
        if t in _SEQUENCE_RULES:
            return (
                f"rule {n} ({t}) selects messages by their place in a sequence, which needs "
                "the other messages of the sequence"
            )
        if t not in _SWITCH_RULES:
            return f"rule {n} has an unknown operator {t!r}"
        for value, kind in ((rule.get("v"), rule.get("vt")), (rule.get("v2"), rule.get("v2t"))):
            if kind == "prev":
                return f"rule {n} compares with the previous message's value"
            problem = typed_value_problem(value, kind, env)
            if problem is not None:
                return f"rule {n}: {problem}"
        if t == "regex" and rule.get("vt") in (None, "str", "num"):
            try:
                js_regex(js_string(rule.get("v")), ignore_case=bool(rule.get("case")))
            except ValueError as exc:
                return f"rule {n}: its regular expression cannot be reproduced: {exc}"
    return None


def switch_rule_values(rule: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    """A rule's v, vt, v2, v2t as the switch node prepares them on start."""
    v, vt = rule.get("v", UNDEFINED), rule.get("vt")
    if not vt:
        vt = "str" if is_nan(js_number(v)) else "num"
    if vt == "num" and not is_nan(js_number(v)):
        v = js_number(v)
    v2, v2t = rule.get("v2", UNDEFINED), rule.get("v2t")
    if v2 is not UNDEFINED:
        if not v2t:
            v2t = "str" if is_nan(js_number(v2)) else "num"
        if v2t == "num":
            v2 = js_number(v2)
    return v, vt, v2, v2t


def range_numbers(node: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    minin, maxin = js_number(node.get("minin", UNDEFINED)), js_number(node.get("maxin", UNDEFINED))
    minout = js_number(node.get("minout", UNDEFINED))
    maxout = js_number(node.get("maxout", UNDEFINED))
    if minin > maxin:
        minin, maxin, minout, maxout = maxin, minin, maxout, minout
    if node.get("round"):
        maxout, minout = math.floor(maxout), math.ceil(minout)
    return minin, maxin, minout, maxout


def _range_problem(node: Mapping[str, Any]) -> str | None:
    for name in ("minin", "maxin", "minout", "maxout"):
        number = js_number(node.get(name, UNDEFINED))
        if is_nan(number) or (isinstance(number, float) and math.isinf(number)):
            return f"its {name} {node.get(name)!r} is not a finite number"
    if js_number(node.get("minin")) == js_number(node.get("maxin")):
        return "its input range is empty (minin = maxin): Node-RED would compute NaN or Infinity"
    return None


def _sort_problem(node: Mapping[str, Any], env: Collection[str]) -> str | None:
    if node.get("targetType") != "msg":
        if node.get("seqKeyType") == "jsonata":
            return jsonata_problem(node.get("seqKey"), env)
        return None
    if node.get("msgKeyType") == "jsonata":
        return jsonata_problem(node.get("msgKey"), env)
    return None
