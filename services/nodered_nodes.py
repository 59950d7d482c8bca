"""The ``nodered-node`` built-in service: one Node-RED node run on one message.

The step engine runs a flow imported from Node-RED by calling this service for every node the
importer kept ``native`` (its whole configuration travels in the call), so such a node is
admitted, metered and observed like any service call. Payload in and out::

    in:  {"node": <the node as Node-RED stores it>, "msg": {"payload": ..., "topic": ..., ...},
          "env": {NAME: value, ...}?, "context": {"node": {...}, "flow": {...}, "global": {...}}?}
    out: one packet per message sent, {"port": <output port, 0-based>, "msg": {...}}
         (no packet at all when the node sends nothing)

Node types (:data:`SUPPORTED_TYPES`), each as its Node-RED 4 implementation behaves:

* ``function``: JavaScript in a QuickJS sandbox with time and memory limits, see
  :mod:`services.nodered_function`;
* ``template``: mustache (mustache.js semantics: HTML escaping, sections, dotted names; values
  printed as JavaScript prints them) or plain text, into any ``msg`` property, output as a
  string or parsed as JSON or YAML;
* ``json``: JSON text <-> object in both directions (``action``, ``property``, ``pretty``, and
  ``msg.schema`` validation);
* ``csv`` (legacy mode, the default): text with a header line or column names into objects
  (one message per row, or one array), and objects or arrays into CSV text;
* ``change`` (set/change/delete/move of msg properties), ``switch`` (every rule but the
  sequence ones), ``range`` and ``sort`` (of an array in the message): see
  :mod:`services.nodered_rules`.

Context (``flow``/``global``) lives for the call only; ``env`` holds the node's ``NR_*``
variables plus what the caller passes, never the worker's environment. What depends on earlier
messages (csv headers sent ``once``, csv sequences joined across messages, RFC 4180 mode,
flow/global context in rules, switch and sort on message sequences) is refused with a
:class:`ServiceError` naming the node, as is any other node type: :func:`node_problem` tells a
caller beforehand whether a node can run here.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import chevron.tokenizer
import jsonschema
import yaml

from fluxo_core.errors import ServiceError
from fluxo_core.ir.paths import PathKey, parse_path
from service_runtime.sdk import Outputs, Service
from services.nodered_function import (
    FunctionLimits,
    FunctionSandbox,
    function_reads_context,
    run_function,
)
from services.nodered_rules import (
    RULE_TYPES,
    UNDEFINED,
    js_string,
    rules_problem,
    run_rule_node,
)

__all__ = [
    "NODERED_NODE_SCHEMA",
    "NODERED_NODE_SERVICE",
    "SUPPORTED_TYPES",
    "js_string",
    "node_problem",
    "nodered_node_service",
    "run_node",
]

NODERED_NODE_SERVICE = "nodered-node"
SUPPORTED_TYPES = frozenset({"function", "template", "json", "csv"}) | RULE_TYPES
_MISSING: Any = UNDEFINED

NODERED_NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["node", "msg"],
    "properties": {
        "node": {"type": "object", "required": ["id", "type"]},
        "msg": {"type": "object"},
        "env": {"type": "object"},
        "context": {"type": "object"},
    },
}


def node_problem(node: Mapping[str, Any]) -> str | None:
    """Why this service cannot run ``node`` faithfully, or None when it can.

    A static check of the configuration, so an engine can refuse a flow before its first job
    instead of failing at the node. "Faithfully" excludes what depends on earlier messages:
    Node-RED keeps that state in the running node, a call of this service starts afresh.
    """
    kind = str(node.get("type", ""))
    if kind not in SUPPORTED_TYPES:
        return f"the {kind!r} node type runs only on Node-RED (supported: {_supported()})"
    if kind in RULE_TYPES:
        return rules_problem(node)
    if kind == "function":
        if not isinstance(node.get("func"), str):
            return "it has no code (func)"
        libs = node.get("libs")
        if isinstance(libs, list) and libs:
            return "it loads external modules (libs), which only Node-RED can provide"
        code = "\n".join(str(node.get(k) or "") for k in ("func", "initialize"))
        if function_reads_context(code):
            return (
                "it reads node/flow/global context, which Node-RED keeps between messages; "
                "the step engine keeps context for one message only"
            )
        if re.search(r"\bsetInterval\s*\(", code):
            return "it uses setInterval, which never lets a call end"
        if re.search(r"\brequire\s*\(", code):
            return "it calls require(), which needs Node.js modules"
    if kind == "template":
        text = str(node.get("template") or "")
        if node.get("fieldType", "msg") != "msg":
            return "it writes its result to flow/global context, which outlives the message"
        if re.search(r"\{\{\{?\s*(flow|global)(\[\w*\])?\.", text):
            return "it reads flow/global context, which Node-RED keeps between messages"
    if kind == "csv":
        if node.get("spec") == "rfc":
            return "RFC 4180 mode of the csv node is not supported on the step engine yet"
        if node.get("hdrout") == "once":
            return (
                "it sends the column header once per deployment, which depends on earlier messages"
            )
    return None


def run_node(
    node: Mapping[str, Any],
    msg: Mapping[str, Any],
    *,
    env: Mapping[str, Any] | None = None,
    context: Mapping[str, Mapping[str, Any]] | None = None,
    limits: FunctionLimits | None = None,
    sandbox: FunctionSandbox | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """Run ``node`` on a copy of ``msg``; the messages it sends, as ``(port, msg)`` pairs.

    ``sandbox``: run function bodies in its child processes (what the service does); without
    one they run in this process.

    Raises:
        ServiceError: (not retryable) the node type is not supported, its configuration is
            unusable, or it failed on this message; the message names the node.
    """
    kind = str(node.get("type", ""))
    message = copy.deepcopy(dict(msg))
    if kind == "function":
        run = sandbox.run if sandbox is not None else run_function
        return run(node, message, limits=limits, env=env, context=context).outputs
    if kind == "template":
        return _template(node, message, env or {}, context or {})
    if kind == "json":
        return _json(node, message)
    if kind == "csv":
        return _csv(node, message)
    if kind in RULE_TYPES:
        return run_rule_node(node, message, env or {}, _fail)
    raise ServiceError(
        f"{_label(node)}: the {kind!r} node type runs only on Node-RED (the step engine "
        f"supports {_supported()}); set spec.engine: nodered for this workflow",
        retryable=False,
        node=str(node.get("id", "?")),
        type=kind,
    )


def nodered_node_service(*, limits: FunctionLimits | None = None) -> Service:
    """The ``nodered-node`` built-in service (see the module docstring for its payload).

    Function bodies run in a :class:`FunctionSandbox`'s child processes: a body that crashes
    QuickJS fails its call instead of the worker.
    """
    sandbox = FunctionSandbox()

    def handle(payload: Any) -> Outputs | None:
        calls = payload if isinstance(payload, list) else [payload]
        out = Outputs()
        for call in calls:
            node, msg = call["node"], call["msg"]
            env = call.get("env") if isinstance(call.get("env"), Mapping) else None
            context = call.get("context") if isinstance(call.get("context"), Mapping) else None
            sent_messages = run_node(
                node, msg, env=env, context=context, limits=limits, sandbox=sandbox
            )
            for port, sent in sent_messages:
                out.append({"port": port, "msg": sent})
        return out or None

    return Service(
        name=NODERED_NODE_SERVICE,
        version="1",
        handler=handle,
        description=f"Run one Node-RED node ({_supported()}) on one message.",
        input_schema=NODERED_NODE_SCHEMA,
        # Not inline: a function body may run for its whole CPU budget.
        inline=False,
    )


# --- shared helpers ------------------------------------------------------------------------------


def _supported() -> str:
    return ", ".join(sorted(SUPPORTED_TYPES))


def _label(node: Mapping[str, Any]) -> str:
    name = node.get("name")
    shown = f" ({name})" if isinstance(name, str) and name else ""
    return f"{node.get('type', 'node')} node {node.get('id', '?')!s}{shown}"


def _fail(node: Mapping[str, Any], what: str) -> ServiceError:
    return ServiceError(f"{_label(node)}: {what}", retryable=False, node=str(node.get("id", "?")))


def _path(node: Mapping[str, Any], text: Any) -> tuple[PathKey, ...]:
    raw = str(text or "payload").strip()
    if raw.startswith("msg."):
        raw = raw[4:]
    try:
        return tuple(parse_path(raw.replace("['", '["').replace("']", '"]')))
    except Exception as exc:  # parse_path raises ValueError-like errors for odd paths
        raise _fail(node, f"cannot read the property {text!r}: {exc}") from exc


def _get(msg: Any, path: tuple[PathKey, ...]) -> Any:
    value = msg
    for key in path:
        if isinstance(key, int) and isinstance(value, list) and 0 <= key < len(value):
            value = value[key]
        elif isinstance(value, dict) and str(key) in value:
            value = value[str(key)]
        else:
            return _MISSING
    return value


def _set(msg: dict[str, Any], path: tuple[PathKey, ...], value: Any) -> None:
    """``RED.util.setMessageProperty`` with ``createMissing``."""
    target: Any = msg
    for key, following in itertools.pairwise(path):
        nxt = target[key] if _has(target, key) else None
        if not isinstance(nxt, dict | list):
            nxt = [] if isinstance(following, int) else {}
            _put(target, key, nxt)
        target = nxt
    _put(target, path[-1], value)


def _has(target: Any, key: PathKey) -> bool:
    if isinstance(target, list):
        return isinstance(key, int) and 0 <= key < len(target)
    return isinstance(target, dict) and key in target


def _put(target: Any, key: PathKey, value: Any) -> None:
    if isinstance(target, list) and isinstance(key, int):
        while len(target) <= key:
            target.append(None)
        target[key] = value
    elif isinstance(target, dict):
        target[str(key)] = value


def js_json(value: Any, indent: int = 0) -> str:
    """``JSON.stringify(value, null, indent)``: integral floats print as integers, as in JS."""
    return json.dumps(
        _js_numbers(value),
        ensure_ascii=False,
        indent=indent or None,
        separators=(",", ": ") if indent else (",", ":"),
    )


def _js_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


# --- template ------------------------------------------------------------------------------------

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "/": "&#x2F;"}
_HTML.update({"`": "&#x60;", "=": "&#x3D;"})
_HTML_RE = re.compile(r"[&<>\"'`=/]")
_JSON_ESCAPES = [("\\", "\\\\"), ("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r"), ("\f", "\\f")]
_JSON_ESCAPES.append(("\b", "\\b"))


def _template(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    env: Mapping[str, Any],
    context: Mapping[str, Mapping[str, Any]],
) -> list[tuple[int, dict[str, Any]]]:
    if node.get("fieldType", "msg") not in ("msg", "flow", "global"):
        raise _fail(node, f"fieldType {node.get('fieldType')!r} is not msg, flow or global")
    text = node.get("template")
    if (text == "" or text is None) and "template" in msg:
        text = msg["template"]
    text = "" if text is None else str(text)
    output = node.get("output") or "str"
    if (node.get("syntax") or "mustache") == "mustache":
        scope = _Scope(msg, env, node, context, escape_json=output == "json")
        try:
            tree = _parse_mustache(text)
        except chevron.tokenizer.ChevronError as exc:
            raise _fail(node, f"the template is not valid mustache: {exc}") from exc
        value: Any = _render(tree, [msg], scope)
    else:
        value = text
    try:
        if output == "json":
            value = json.loads(value)
        elif output == "yaml":
            value = yaml.safe_load(value)
    except (ValueError, yaml.YAMLError) as exc:
        raise _fail(node, f"the result is not valid {output}: {exc}") from exc
    if node.get("fieldType", "msg") == "msg":
        _set(msg, _path(node, node.get("field") or "payload"), value)
    return [(0, msg)]


class _Scope:
    """What a name in a template resolves to: the message first, then env, flow and global."""

    def __init__(
        self,
        msg: dict[str, Any],
        env: Mapping[str, Any],
        node: Mapping[str, Any],
        context: Mapping[str, Mapping[str, Any]],
        *,
        escape_json: bool,
    ) -> None:
        self.env = {
            "NR_NODE_ID": node.get("id"),
            "NR_NODE_NAME": node.get("name") or "",
            "NR_FLOW_ID": node.get("z") or "",
            **env,
        }
        self.context = context
        self.escape_json = escape_json

    def lookup(self, name: str, stack: list[Any]) -> Any:
        value = _mustache_lookup(name, stack)
        if value is not _MISSING:
            if self.escape_json and isinstance(value, str):
                for raw, escaped in _JSON_ESCAPES:
                    value = value.replace(raw, escaped)
            return value
        if name.startswith("env."):
            return self.env.get(name[4:], _MISSING)
        found = re.match(r"^(flow|global)(\[\w*\])?\.(.+)", name)
        if found:
            store = self.context.get(found.group(1)) or {}
            return store.get(found.group(3), _MISSING)
        return ""


def _mustache_lookup(name: str, stack: list[Any]) -> Any:
    """mustache.js ``Context.lookup``: the innermost context that has the whole dotted name."""
    if name == ".":
        return stack[-1]
    parts = name.split(".")
    for view in reversed(stack):
        value, hit = view, False
        for i, part in enumerate(parts):
            if value is None or value is _MISSING:
                break
            if i == len(parts) - 1:
                hit = _js_has(value, part)
            value = _js_get(value, part)
        if hit:
            return value
    return _MISSING


def _js_has(value: Any, key: str) -> bool:
    if isinstance(value, dict):
        return key in value
    if isinstance(value, list | str):
        return key == "length" or (key.isdigit() and int(key) < len(value))
    return False


def _js_get(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return value.get(key, _MISSING)
    if isinstance(value, list | str):
        if key == "length":
            return len(value)
        if key.isdigit() and int(key) < len(value):
            return value[int(key)]
    return _MISSING


def _parse_mustache(text: str) -> list[Any]:
    """chevron's tokens as a tree: ``(kind, key)`` leaves, ``(kind, key, children)`` sections."""
    root: list[Any] = []
    stack: list[tuple[str, str, list[Any]]] = []
    current = root
    for kind, key in chevron.tokenizer.tokenize(text):
        if kind in ("section", "inverted section"):
            children: list[Any] = []
            current.append((kind, key, children))
            stack.append((kind, key, current))
            current = children
        elif kind == "end":
            if not stack:
                raise chevron.tokenizer.ChevronError(f"unopened section {key!r}")
            current = stack.pop()[2]
        elif kind in ("literal", "variable", "no escape"):
            current.append((kind, key))
        # comments, partials (none exist) and delimiter changes render nothing
    return root


def _render(tree: list[Any], stack: list[Any], scope: _Scope) -> str:
    out: list[str] = []
    for token in tree:
        kind, key = token[0], token[1]
        if kind == "literal":
            out.append(key)
            continue
        value = scope.lookup(key, stack)
        if kind in ("variable", "no escape"):
            if value is None or value is _MISSING:
                continue
            shown = js_string(value)
            out.append(
                _HTML_RE.sub(lambda m: _HTML[m.group()], shown) if kind == "variable" else shown
            )
        elif kind == "section":
            if not _truthy(value):
                continue
            if isinstance(value, list):
                out.extend(_render(token[2], [*stack, item], scope) for item in value)
            elif isinstance(value, dict | str | int | float) and not isinstance(value, bool):
                out.append(_render(token[2], [*stack, value], scope))
            else:
                out.append(_render(token[2], stack, scope))
        elif not _truthy(value):  # inverted section
            out.append(_render(token[2], stack, scope))
    return "".join(out)


def _truthy(value: Any) -> bool:
    if value is _MISSING or value is None or value is False or value == "":
        return False
    if isinstance(value, list):
        return bool(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    return True


# --- json ----------------------------------------------------------------------------------------


def _json(node: Mapping[str, Any], msg: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    action = node.get("action") or ""
    path = _path(node, node.get("property") or "payload")
    indent = 4 if node.get("pretty") else 0
    schema = msg.get("schema")
    value = _get(msg, path)
    if value is _MISSING:
        return [(0, msg)]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise _fail(node, f"msg.{_shown(path)} is not JSON: {exc}") from exc
        if action in ("", "obj"):
            _set(msg, path, parsed)
        _validate(node, msg, schema, parsed)
    elif isinstance(value, dict | list | bool | int | float) or value is None:
        _validate(node, msg, schema, value)
        if action in ("", "str"):
            _set(msg, path, js_json(value, indent))
    return [(0, msg)]


def _shown(path: tuple[PathKey, ...]) -> str:
    return ".".join(str(k) for k in path)


def _validate(node: Mapping[str, Any], msg: dict[str, Any], schema: Any, value: Any) -> None:
    if not schema:
        return
    try:
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(value), key=str)
    except jsonschema.SchemaError as exc:
        raise _fail(node, f"msg.schema is not a valid JSON Schema: {exc.message}") from exc
    if errors:
        where = [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors
        ]
        raise _fail(node, "JSON Schema validation failed: " + "; ".join(where[:5]))
    del msg["schema"]


# --- csv (legacy mode) ---------------------------------------------------------------------------

_CSV_NUMBER = re.compile(r"^[-]?(?!E)(?!0\d)\d*\.?\d*(E-?\+?)?\d+$", re.IGNORECASE)


def _unescape(text: str) -> str:
    return text.replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r")


def _clean(columns: str, sep: str) -> list[str]:
    """Column names from a template: split on ``sep`` outside quotes, unquoted, trimmed."""
    pattern = re.escape(sep) + r'(?=(?:(?:[^"]*"){2})*[^"]*$)'
    return [c.replace('"', "").strip() for c in re.split(pattern, columns.strip())]


def _csv(node: Mapping[str, Any], msg: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    if node.get("spec") == "rfc":
        raise _fail(node, "RFC 4180 mode is not supported on the step engine yet; use legacy mode")
    if "payload" not in msg:
        return [] if "reset" in msg else [(0, msg)]
    payload = msg["payload"]
    if isinstance(payload, dict | list):
        return _csv_out(node, msg)
    if isinstance(payload, str):
        return _csv_in(node, msg)
    return []  # Node-RED warns "csv_js" and sends nothing


def _csv_out(node: Mapping[str, Any], msg: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    sep = _unescape(str(node.get("sep") or ","))
    ret = _unescape(str(node.get("ret") or "\n"))
    quo = '"'
    hdrout = node.get("hdrout") or "none"
    hdrout = (
        {False: "none", True: "all"}.get(hdrout, hdrout) if isinstance(hdrout, bool) else hdrout
    )
    if hdrout == "once":
        raise _fail(node, "a header sent once per deployment depends on earlier messages")
    template = _clean(str(node.get("temp") or ""), ",")
    payload = msg["payload"]
    rows: list[Any] = payload if isinstance(payload, list) else [payload]
    msg["payload"] = rows
    lines: list[str] = []

    def no_template() -> bool:
        return len(template) == 1 and template[0] == ""

    if hdrout != "none":
        if no_template():
            if "columns" in msg:
                template = _clean(str(msg["columns"] or ""), ",")
            elif rows and isinstance(rows[0], dict):
                template = list(rows[0].keys())
            else:
                template = []
        lines.append(sep.join(f'"{v}"' if sep in v else v for v in template))

    def quoted(text: str, *, newline: bool) -> str:
        if quo in text:
            return quo + text.replace('"', '""') + quo
        if sep in text or (newline and "\n" in text):
            return quo + text + quo
        return text

    s = 0
    while s < len(rows):
        row = rows[s]
        if isinstance(row, list) or not isinstance(row, dict):
            if not isinstance(row, dict | list):
                rows = [rows]
                row = rows[s]
            lines.append(
                sep.join(quoted("" if v is None else js_string(v), newline=True) for v in row)
            )
        else:
            if no_template() and "columns" in msg:
                template = _clean(str(msg["columns"] or ""), ",")
            if no_template():
                first = rows[0] if isinstance(rows[0], dict) else {}
                cells = []
                for key in first:
                    if (
                        key in row
                        and not isinstance(row[key], dict | list)
                        and row[key] is not None
                    ):
                        text = js_string(row[key])
                        if quo in text:
                            cells.append(quo + text.replace('"', '""') + quo)
                        elif sep in text or "\n" in key:
                            cells.append(quo + text + quo)
                        else:
                            cells.append(text)
                lines.append(sep.join(cells))
            else:
                cells = []
                for column in template:
                    if column == "":
                        cells.append("")
                        continue
                    value = row.get(column, _MISSING)
                    text = "" if value is _MISSING else _ensure_string(value)
                    cells.append(quoted(text, newline=True))
                lines.append(sep.join(cells))
        s += 1
    msg["payload"] = ret.join(lines) + ret
    msg["columns"] = ",".join(f'"{v}"' if "," in v else v for v in template)
    return [(0, msg)] if msg["payload"] != "" else []


def _ensure_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list) or value is None:
        return js_json(value)
    return js_string(value)


def _csv_in(node: Mapping[str, Any], msg: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    sep = _unescape(str(node.get("sep") or ","))
    quo = '"'
    multi = node.get("multi") or "one"
    hdrin = node.get("hdrin") is True
    skip = int(node.get("skip") or 0)
    parse_numbers = node.get("strings", True) is not False
    keep_empty = bool(node.get("include_empty_strings"))
    keep_null = bool(node.get("include_null_values"))
    template = _clean(str(node.get("temp") or ""), ",")
    good = not (len(template) == 1 and template[0] == "")
    parts = msg.get("parts") if isinstance(msg.get("parts"), dict) else None
    line: str = msg["payload"]
    newlines = len(re.findall(r"[\r\n]", line))
    if parts is not None and multi != "one" and newlines <= 1:
        raise _fail(
            node,
            "joining a message sequence (msg.parts) into one array needs the earlier "
            "messages, which the step engine does not keep; join the lines before this node",
        )
    first, last, linecount = True, False, 0
    if parts is not None:
        linecount = int(parts.get("index", 0))
        if linecount > skip:
            first = False
        if "count" in parts and linecount + 1 >= parts["count"]:
            last = True
    if parts is not None and multi == "mult" and newlines > 1:
        first = True

    def column(j: int) -> str:
        nonlocal template
        while len(template) <= j:
            template.append("")
        if not good:
            template[j] = f"col{j + 1}"
        return template[j]

    def finish(j: int, value: str | None, row: dict[str, Any]) -> None:
        name = column(j)
        if not name:
            return
        out: Any = value
        if value is not None and parse_numbers and _CSV_NUMBER.match(value.strip()):
            number = float(value.strip())
            out = int(number) if number.is_integer() and abs(number) < 1e21 else number
        if (keep_null and out is None) or (keep_empty and out == "") or out not in (None, ""):
            row[name] = out

    inside = False
    j = 0
    cells: list[str | None] = [""]
    row: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    header = ""
    for i, ch in enumerate(line):
        if first and linecount < skip:
            if ch == "\n":
                linecount += 1
            continue
        if hdrin and first:
            if ch in "\n\r" or len(line) - i == 1:
                if len(line) - i == 1:
                    header += ch
                template = _clean(header, sep)
                good = not (len(template) == 1 and template[0] == "")
                first = False
            else:
                header += ch
            continue
        prev = line[i - 1] if i > 0 else ""
        if ch == quo:
            inside = not inside
            if prev == quo and inside:
                cells[j] = (cells[j] or "") + '"'
        elif ch == sep and not inside:
            value: str | None = cells[j]
            if prev == sep or prev in ("\n",):
                value = None
            finish(j, value, row)
            j += 1
            cells.append(None if i == len(line) - 1 else "")
        elif ch in "\n\r" and not inside:
            value = None if prev == sep else cells[j]
            finish(j, value, row)
            if row:
                rows.append(row)
            j, cells, row, inside = 0, [""], {}, False
        else:
            cells[j] = (cells[j] or "") + ch
    finish(j, cells[j], row)
    if row:
        rows.append(row)
    columns = ",".join(f'"{v}"' if "," in v else v for v in template if v)
    if multi != "one":
        msg["payload"] = rows
        msg["columns"] = columns
        return [(0, msg)]
    sent: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(rows):
        out = copy.deepcopy(msg)
        out["columns"] = columns
        out["payload"] = item
        if parts is None:
            out["parts"] = {"id": msg.get("_msgid"), "index": index, "count": len(rows)}
        else:
            shift = skip + (1 if hdrin else 0)
            out["parts"]["index"] -= shift
            out["parts"]["count"] = out["parts"].get("count", 0) - shift
        if last:
            out["complete"] = True
        sent.append((0, out))
    if parts is not None and last and not rows:
        sent.append((0, {"complete": True}))
    return sent
