"""The ``template`` node: mustache (mustache.js semantics: HTML escaping, sections, dotted names;
values printed as JavaScript prints them) or plain text, into any ``msg`` property, output as a
string or parsed as JSON or YAML. ``{{flow.x}}``/``{{global.x}}`` read, and a ``fieldType`` of
``flow``/``global`` writes, the node's :class:`~nodered_semantics.context.ContextView`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import chevron.tokenizer
import yaml

from nodered_semantics.context import ContextView
from nodered_semantics.js import UNDEFINED, JSThrowError, js_string
from services.nodered.common import node_error, property_text, write_property

__all__ = ["run_template"]

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "/": "&#x2F;"}
_HTML.update({"`": "&#x60;", "=": "&#x3D;"})
_HTML_RE = re.compile(r"[&<>\"'`=/]")
_JSON_ESCAPES = [("\\", "\\\\"), ("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r"), ("\f", "\\f")]
_JSON_ESCAPES.append(("\b", "\\b"))


def run_template(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    env: Mapping[str, Any],
    context: ContextView | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    view = context if context is not None else ContextView.of(None)
    if node.get("fieldType", "msg") not in ("msg", "flow", "global"):
        raise node_error(node, f"fieldType {node.get('fieldType')!r} is not msg, flow or global")
    text = node.get("template")
    if (text == "" or text is None) and "template" in msg:
        text = msg["template"]
    text = "" if text is None else str(text)
    output = node.get("output") or "str"
    if (node.get("syntax") or "mustache") == "mustache":
        scope = _Scope(msg, env, node, view, escape_json=output == "json")
        try:
            tree = _parse_mustache(text)
        except chevron.tokenizer.ChevronError as exc:
            raise node_error(node, f"the template is not valid mustache: {exc}") from exc
        value: Any = _render(tree, [msg], scope)
    else:
        value = text
    try:
        if output == "json":
            value = json.loads(value)
        elif output == "yaml":
            value = yaml.safe_load(value)
    except (ValueError, yaml.YAMLError) as exc:
        raise node_error(node, f"the result is not valid {output}: {exc}") from exc
    field_type = node.get("fieldType", "msg")
    if field_type == "msg":
        write_property(node, msg, property_text(node.get("field")), value)
    else:  # the result goes to flow/global context; the message goes on unchanged
        try:
            view.set(str(field_type), str(node.get("field") or ""), value)
        except JSThrowError as exc:
            raise node_error(node, f"cannot set {field_type}.{node.get('field')}: {exc}") from exc
    return [(0, msg)]


class _Scope:
    """What a name in a template resolves to: the message first, then env, flow and global."""

    def __init__(
        self,
        msg: dict[str, Any],
        env: Mapping[str, Any],
        node: Mapping[str, Any],
        context: ContextView,
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
        if value is not UNDEFINED:
            if self.escape_json and isinstance(value, str):
                for raw, escaped in _JSON_ESCAPES:
                    value = value.replace(raw, escaped)
            return value
        if name.startswith("env."):
            return self.env.get(name[4:], UNDEFINED)
        found = re.match(r"^(flow|global)(\[\w*\])?\.(.+)", name)
        if found:
            return self.context.get(found.group(1), found.group(3))
        return ""


def _mustache_lookup(name: str, stack: list[Any]) -> Any:
    """mustache.js ``Context.lookup``: the innermost context that has the whole dotted name."""
    if name == ".":
        return stack[-1]
    parts = name.split(".")
    for view in reversed(stack):
        value, hit = view, False
        for i, part in enumerate(parts):
            if value is None or value is UNDEFINED:
                break
            if i == len(parts) - 1:
                hit = _js_has(value, part)
            value = _js_get(value, part)
        if hit:
            return value
    return UNDEFINED


def _js_has(value: Any, key: str) -> bool:
    if isinstance(value, dict):
        return key in value
    if isinstance(value, list | str):
        return key == "length" or (key.isdigit() and int(key) < len(value))
    return False


def _js_get(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return value.get(key, UNDEFINED)
    if isinstance(value, list | str):
        if key == "length":
            return len(value)
        if key.isdigit() and int(key) < len(value):
            return value[int(key)]
    return UNDEFINED


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
            if value is None or value is UNDEFINED:
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
    if value is UNDEFINED or value is None or value is False or value == "":
        return False
    if isinstance(value, list):
        return bool(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    return True
