"""The ``yaml`` node: YAML text <-> object, as Node-RED 4 does it with js-yaml 4.

A string at the node's property is read with ``yaml.load`` (YAML 1.2 core schema plus
timestamps and merge keys: ``yes``/``on`` stay strings, ``0o17`` is octal, ``1e3`` a number, a
date becomes the ISO text a JavaScript ``Date`` is sent as); an object or array is written with
``yaml.dump``'s default layout (two-space indent, block style, a string quoted only when it
would read back as something else, long lines folded at 80 columns). Anything else is dropped
with a warning, as Node-RED drops it.

Reading is bounded: the text goes through Fluxo's bounded YAML composer
(:mod:`fluxo_core.ir.documents`: size, nesting depth, alias count and the size aliases expand
to), and the result must be JSON a message can carry.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

from fluxo_core.errors import FluxoError
from fluxo_core.ir.documents import DEFAULT_LIMITS, DocumentLimits, check_document
from fluxo_core.ir.documents import BoundedLoader as _BoundedDocumentLoader
from nodered_semantics.js import UNDEFINED, js_string
from services.nodered.common import Sent, node_error, property_text, read_property, write_property
from services.nodered.js_text import js_number_text, js_ordered, js_ordered_keys

__all__ = ["YAML_LIMITS", "run_yaml", "yaml_dump", "yaml_load"]

YAML_LIMITS = DocumentLimits(
    max_bytes=DEFAULT_LIMITS.max_bytes,
    max_depth=DEFAULT_LIMITS.max_depth,
    max_nodes=DEFAULT_LIMITS.max_nodes,
    max_aliases=100,
    setting="FLUXO_MAX_PACKET_BYTES",
)
"""What one YAML text a node reads may hold (aliases are few in message data)."""

_T = "tag:yaml.org,2002:"


def run_yaml(node: Mapping[str, Any], msg: dict[str, Any]) -> Sent:
    prop = property_text(node.get("property"))
    value = read_property(node, msg, prop)
    if value is UNDEFINED:
        return [(0, msg)]
    if isinstance(value, str):
        try:
            loaded = yaml_load(value)
        except (ValueError, FluxoError) as exc:
            raise node_error(node, str(exc).splitlines()[0]) from exc
        if loaded is UNDEFINED:  # an empty document: msg.<prop> = undefined, which JSON drops
            write_property(node, msg, prop, None)
            _delete_last(msg, prop)
        else:
            write_property(node, msg, prop, loaded)
        return [(0, msg)]
    if isinstance(value, dict | list) or value is None:  # typeof null is "object": "null\n"
        try:
            text = yaml_dump(value)
        except ValueError as exc:  # Node-RED's "yaml.errors.dropped-error"
            raise node_error(node, "Error: Failed to convert payload") from exc
        write_property(node, msg, prop, text)
        return [(0, msg)]
    # Node-RED warns ("Message dropped: ...") and sends nothing.
    return []


def _delete_last(msg: dict[str, Any], prop: str) -> None:
    if "." not in prop and "[" not in prop:
        msg.pop(prop, None)


# --- load ------------------------------------------------------------------------------------

_INT = re.compile(r"[-+]?(?:0b[01]+|0x[0-9a-fA-F]+|0o[0-7]+|[0-9]+)\Z")
_FLOAT = re.compile(
    r"(?:[-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})\Z")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9][0-9]?)-([0-9][0-9]?)(?:[Tt]|[ \t]+)([0-9][0-9]?):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]*))?(?:[ \t]*(Z|([-+])([0-9][0-9]?)(?::([0-9]{2}))?))?\Z"
)


class _JsYamlLoader(_BoundedDocumentLoader):
    """Fluxo's bounded composer with js-yaml's implicit types (YAML 1.2 core, timestamps,
    merge keys) in place of PyYAML's YAML 1.1 ones; values are built by :func:`_construct`."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}


for _tag, _pattern, _first in (
    ("null", re.compile(r"(?:~|null|Null|NULL|)\Z"), "~nN"),
    ("bool", re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z"), "tTfF"),
    ("int", _INT, "-+0123456789"),
    ("float", _FLOAT, "-+0123456789."),
    ("timestamp", re.compile(f"{_DATE.pattern}|{_TIMESTAMP.pattern}"), "0123456789"),
    ("merge", re.compile(r"<<\Z"), "<"),
):
    _JsYamlLoader.add_implicit_resolver(_T + _tag, _pattern, [*_first])
_JsYamlLoader.add_implicit_resolver(_T + "null", re.compile(r"\Z"), [""])


def yaml_load(text: str, limits: DocumentLimits = YAML_LIMITS) -> Any:
    """``yaml.load(text)`` of js-yaml 4 (one document; UNDEFINED when there is none).

    Raises:
        ValueError: not YAML, several documents, or a value js-yaml would refuse.
        FluxoError: the text passes a bound of ``limits``.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise ValueError(f"the YAML text is {size} bytes, over the limit of {limits.max_bytes}")
    loader = _JsYamlLoader(text, limits, "YAML text")
    try:
        if not loader.check_node():
            return UNDEFINED
        node = loader.get_node()
        if loader.check_node():
            raise ValueError("expected a single document in the stream, but found more")
    except yaml.YAMLError as exc:
        raise ValueError(_yaml_error(exc)) from exc
    finally:
        loader.dispose()
    if node is None:
        return UNDEFINED
    value = js_ordered(_construct(node, {}))
    check_document(value, limits=limits, where="YAML text")
    return value


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    at = f" ({mark.line + 1}:{mark.column + 1})" if mark is not None else ""
    return f"{problem}{at}"


def _construct(node: yaml.Node, done: dict[int, Any]) -> Any:
    known = done.get(id(node))
    if known is not None:
        return known[0]
    if isinstance(node, yaml.ScalarNode):
        value = _scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        items: list[Any] = []
        done[id(node)] = (items,)
        if node.tag not in (_T + "seq", "!"):
            raise ValueError(f"unknown tag !<{node.tag}>")
        items.extend(_construct(child, done) for child in node.value)
        return items
    else:
        if node.tag == _T + "set":
            result: dict[str, Any] = {}
            for key, _ in node.value:
                result[_key(_construct(key, done))] = None
            return result
        if node.tag not in (_T + "map", "!"):
            raise ValueError(f"unknown tag !<{node.tag}>")
        mapping: dict[str, Any] = {}
        done[id(node)] = (mapping,)
        assert isinstance(node, yaml.MappingNode)
        _fill(mapping, node, done)
        return mapping
    done[id(node)] = (value,)
    return value


def _fill(mapping: dict[str, Any], node: yaml.MappingNode, done: dict[int, Any]) -> None:
    """js-yaml's mapping: a merge (``<<``) adds the keys the mapping does not have yet where it
    stands, and a key written after it may replace what it added; any other key twice fails."""
    overridable: set[str] = set()
    for key_node, value_node in node.value:
        if key_node.tag == _T + "merge":
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise ValueError(
                        "cannot merge mappings; the provided source object is unacceptable"
                    )
                for k, v in _construct(source, done).items():
                    if k not in mapping:
                        mapping[k] = v
                        overridable.add(k)
            continue
        key = _key(_construct(key_node, done))
        if key in mapping and key not in overridable:
            mark = key_node.start_mark
            raise ValueError(f"duplicated mapping key ({mark.line + 1}:{mark.column + 1})")
        overridable.discard(key)
        mapping[key] = _construct(value_node, done)


def _key(value: Any) -> str:
    return js_string(value)  # as JavaScript names a property: [1] is "1", {} "[object Object]"


def _scalar(node: yaml.ScalarNode) -> Any:
    text, tag = node.value, node.tag
    if tag == _T + "str" or tag == "!":
        return text
    if tag == _T + "null":
        if text not in ("", "~", "null", "Null", "NULL"):
            raise ValueError(f"cannot resolve a node with !<{tag}> explicit tag")
        return None
    if tag == _T + "bool":
        if text not in ("true", "True", "TRUE", "false", "False", "FALSE"):
            raise ValueError(f"cannot resolve a node with !<{tag}> explicit tag")
        return text in ("true", "True", "TRUE")
    if tag == _T + "int":
        if not _INT.match(text):
            raise ValueError(f"cannot resolve a node with !<{tag}> explicit tag")
        return _int(text)
    if tag == _T + "float":
        if not _FLOAT.match(text):
            raise ValueError(f"cannot resolve a node with !<{tag}> explicit tag")
        return _float(text)
    if tag == _T + "timestamp":
        return _timestamp(text)
    if tag == _T + "merge":
        return text
    raise ValueError(f"unknown tag !<{tag}>")


def _int(text: str) -> int | float:
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    base = {"0b": 2, "0x": 16, "0o": 8}.get(digits[:2], 10)
    number = sign * int(digits[2:] if base != 10 else digits, base)
    # a JavaScript number: exact up to 2**53, a double beyond
    return number if abs(number) <= 2**53 else float(number)


def _float(text: str) -> int | float:
    lower = text.lower()
    sign = -1 if lower.startswith("-") else 1
    bare = lower.lstrip("+-")
    if bare == ".inf":
        return sign * math.inf
    if bare == ".nan":
        return math.nan
    number = sign * float(bare)
    if number.is_integer() and abs(number) <= 2**53 and not (number == 0 and sign < 0):
        return int(number)
    return number


def _timestamp(text: str) -> str:
    """The ``Date`` js-yaml makes, as a message carries it (``toISOString``)."""
    match = _DATE.match(text)
    if match is not None:
        year, month, day = (int(g) for g in match.groups())
        moment = datetime.datetime(year, 1, 1, tzinfo=datetime.UTC)
        moment = _add_months_days(moment, month - 1, day - 1)
        return _iso(moment)
    found = _TIMESTAMP.match(text)
    if found is None:
        raise ValueError("Date resolve error")
    g = found.groups()
    fraction = int((g[6] or "")[:3].ljust(3, "0"))
    moment = datetime.datetime(int(g[0]), 1, 1, tzinfo=datetime.UTC)
    moment = _add_months_days(moment, int(g[1]) - 1, int(g[2]) - 1)
    moment += datetime.timedelta(
        hours=int(g[3]), minutes=int(g[4]), seconds=int(g[5]), milliseconds=fraction
    )
    if g[8]:
        delta = datetime.timedelta(hours=int(g[9]), minutes=int(g[10] or 0))
        moment = moment - delta if g[8] == "+" else moment + delta
    return _iso(moment)


def _add_months_days(moment: datetime.datetime, months: int, days: int) -> datetime.datetime:
    """``Date.UTC``'s overflow: month 13 is January of the next year, day 32 runs on."""
    year = moment.year + months // 12
    return moment.replace(year=year, month=months % 12 + 1) + datetime.timedelta(days=days)


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- dump: js-yaml's dumper with its default options ------------------------------------------

_INDENT = 2
_LINE_WIDTH = 80
_ESCAPES = {
    0x00: "\\0",
    0x07: "\\a",
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0B: "\\v",
    0x0C: "\\f",
    0x0D: "\\r",
    0x1B: "\\e",
    0x22: '\\"',
    0x5C: "\\\\",
    0x85: "\\N",
    0xA0: "\\_",
    0x2028: "\\L",
    0x2029: "\\P",
}
_DEPRECATED_BOOLEANS = frozenset(
    "y Y yes Yes YES on On ON n N no No NO off Off OFF".split()  # noqa: SIM905
)
_BASE60 = re.compile(r"[-+]?[0-9_]+(?::[0-9_]+)+(?:\.[0-9_]*)?\Z")
_FIRST_UNSAFE = frozenset("-?:,[]{}#&*!|=>'\"%@`")
_FLOW_INDICATORS = frozenset(",[]{}")
_PLAIN, _SINGLE, _LITERAL, _FOLDED, _DOUBLE = range(1, 6)


def yaml_dump(value: Any) -> str:
    """``yaml.dump(value)`` of js-yaml 4 with its default options, for JSON data.

    Raises:
        ValueError: a value js-yaml cannot dump.
    """
    return _write(value, 0, block=True, compact=True) + "\n"


def _printable(c: int) -> bool:
    return (
        0x20 <= c <= 0x7E
        or (0xA1 <= c <= 0xD7FF and c not in (0x2028, 0x2029))
        or (0xE000 <= c <= 0xFFFD and c != 0xFEFF)
        or 0x10000 <= c <= 0x10FFFF
    )


def _ns_char_or_white(c: int) -> bool:
    return _printable(c) and c not in (0xFEFF, 0x0D, 0x0A)


def _plain_safe(c: int, prev: int | None, inblock: bool) -> bool:
    own = _ns_char_or_white(c)
    ns = own and c not in (0x20, 0x09)
    safe = own if inblock else own and chr(c) not in _FLOW_INDICATORS
    prev_ns = prev is not None and _ns_char_or_white(prev) and prev not in (0x20, 0x09)
    return (
        (safe and c != 0x23 and not (prev == 0x3A and not ns))
        or (prev_ns and c == 0x23)
        or (prev == 0x3A and ns)
    )


def _plain_first(c: int) -> bool:
    return _printable(c) and c not in (0xFEFF, 0x20, 0x09) and chr(c) not in _FIRST_UNSAFE


def _ambiguous(text: str) -> bool:
    """Whether js-yaml would read the plain text back as something else than a string."""
    return bool(
        text in ("~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE")
        or (_INT.match(text) and math.isfinite(float(_int(text))))
        or (
            _FLOAT.match(text) and (_FLOAT_SPECIAL.match(text) or math.isfinite(_parse_float(text)))
        )
        or _DATE.match(text)
        or _TIMESTAMP.match(text)
        or text == "<<"
    )


_FLOAT_SPECIAL = re.compile(r"(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z")


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _choose_style(text: str, single_line: bool, width: int, inblock: bool) -> int:
    codes = [ord(ch) for ch in text]
    plain = _plain_first(codes[0]) and codes[-1] not in (0x20, 0x09, 0x3A)
    has_break = foldable = False
    previous_break = -1
    prev: int | None = None
    for i, c in enumerate(codes):
        if c == 0x0A and not single_line:
            has_break = True
            foldable = foldable or (
                i - previous_break - 1 > width and text[previous_break + 1] != " "
            )
            previous_break = i
        elif not _printable(c):
            return _DOUBLE
        plain = plain and _plain_safe(c, prev, inblock)
        prev = c
    if not single_line:
        i = len(codes)
        foldable = foldable or (i - previous_break - 1 > width and text[previous_break + 1] != " ")
    if not has_break and not foldable:
        return _PLAIN if plain and not _ambiguous(text) else _SINGLE
    return _FOLDED if foldable else _LITERAL


def _scalar_text(text: str, level: int, iskey: bool, inblock: bool) -> str:
    if text == "":
        return "''"
    if text in _DEPRECATED_BOOLEANS or _BASE60.match(text):
        return f"'{text}'"
    indent = _INDENT * max(1, level)
    width = max(min(_LINE_WIDTH, 40), _LINE_WIDTH - indent)
    style = _choose_style(text, iskey, width, inblock)
    if style == _PLAIN:
        return text
    if style == _SINGLE:
        return "'" + text.replace("'", "''") + "'"
    if style == _LITERAL:
        return "|" + _block_header(text) + _drop_ending_newline(_indent_string(text, indent))
    if style == _FOLDED:
        folded = _fold_string(text, width)
        return ">" + _block_header(text) + _drop_ending_newline(_indent_string(folded, indent))
    return '"' + _escape(text) + '"'


def _block_header(text: str) -> str:
    indicator = str(_INDENT) if re.match(r"\n* ", text) else ""
    clip = text.endswith("\n")
    keep = clip and (text[-2:-1] == "\n" or text == "\n")
    return indicator + ("+" if keep else "" if clip else "-") + "\n"


def _drop_ending_newline(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def _indent_string(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line not in ("", "\n") else line for line in text.splitlines(True))


def _fold_string(text: str, width: int) -> str:
    first = text.find("\n")
    first = len(text) if first == -1 else first
    result = _fold_line(text[:first], width)
    prev_more = text[:1] in ("\n", " ")
    for match in re.finditer(r"(\n+)([^\n]*)", text[first:]):
        prefix, line = match.group(1), match.group(2)
        more = line[:1] == " "
        result += prefix + ("\n" if not prev_more and not more and line != "" else "")
        result += _fold_line(line, width)
        prev_more = more
    return result


def _fold_line(line: str, width: int) -> str:
    if line == "" or line[0] == " ":
        return line
    start = curr = 0
    result = ""
    for match in re.finditer(r" [^ ]", line):
        nxt = match.start()
        if nxt - start > width:
            end = curr if curr > start else nxt
            result += "\n" + line[start:end]
            start = end + 1
        curr = nxt
    result += "\n"
    if len(line) - start > width and curr > start:
        result += line[start:curr] + "\n" + line[curr + 1 :]
    else:
        result += line[start:]
    return result[1:]


def _escape(text: str) -> str:
    out = []
    for ch in text:
        c = ord(ch)
        seq = _ESCAPES.get(c)
        if seq is None and _printable(c):
            out.append(ch)
        elif seq is not None:
            out.append(seq)
        elif c <= 0xFF:
            out.append(f"\\x{c:02X}")
        elif c <= 0xFFFF:
            out.append(f"\\u{c:04X}")
        else:
            out.append(f"\\U{c:08X}")
    return "".join(out)


def _number(value: float | int) -> str:
    if isinstance(value, int) or (value.is_integer() and math.copysign(1, value) > 0):
        return js_number_text(value)  # js-yaml's !!int: an integral number, as String() has it
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if value == 0 and math.copysign(1, value) < 0:
        return "-0.0"
    text = js_number_text(value)
    return re.sub(r"^([-+]?[0-9]+)e", r"\1.e", text)


def _write(value: Any, level: int, *, block: bool, compact: bool, iskey: bool = False) -> str:
    inblock = block
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return _scalar_text(value, level, iskey, inblock)
    if isinstance(value, dict):
        value = js_ordered_keys(value)
        if block and value:
            return _block_mapping(value, level, compact)
        return _flow_mapping(value, level)
    if isinstance(value, list):
        if block and value:
            return _block_sequence(value, level, compact)
        return _flow_sequence(value, level)
    raise ValueError(f"unacceptable kind of an object to dump {type(value).__name__}")


def _next_line(level: int) -> str:
    return "\n" + " " * (_INDENT * level)


def _block_sequence(items: list[Any], level: int, compact: bool) -> str:
    result = ""
    for item in items:
        dump = _write(item, level + 1, block=True, compact=True)
        if not compact or result:
            result += _next_line(level)
        result += ("-" if dump.startswith("\n") else "- ") + dump
    return result or "[]"


def _block_mapping(mapping: dict[str, Any], level: int, compact: bool) -> str:
    result = ""
    for key, item in mapping.items():
        pair = _next_line(level) if (not compact or result) else ""
        key_dump = _write(str(key), level + 1, block=True, compact=True, iskey=True)
        explicit = len(key_dump) > 1024
        if explicit:
            pair += ("?" if key_dump.startswith("\n") else "? ") + key_dump + _next_line(level)
        else:
            pair += key_dump
        dump = _write(item, level + 1, block=True, compact=explicit)
        pair += (":" if dump.startswith("\n") else ": ") + dump
        result += pair
    return result or "{}"


def _flow_sequence(items: list[Any], level: int) -> str:
    return "[" + ", ".join(_write(i, level, block=False, compact=False) for i in items) + "]"


def _flow_mapping(mapping: dict[str, Any], level: int) -> str:
    pairs = []
    for key, item in mapping.items():
        key_dump = _write(str(key), level, block=False, compact=False)
        lead = "? " if len(key_dump) > 1024 else ""
        pairs.append(f"{lead}{key_dump}: {_write(item, level, block=False, compact=False)}")
    return "{" + ", ".join(pairs) + "}"
