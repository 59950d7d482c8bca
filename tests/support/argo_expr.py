"""The subset of expr-lang (github.com/expr-lang/expr) that Fluxo's Argo translator emits, for tests.

Argo evaluates ``{{=...}}`` tags, ``valueFrom.expression`` and HTTP ``successCondition`` with
expr-lang. The translator (``translators/_argo_expr.py``, ``_argo_plan.py``,
``_argo_templates.py``) uses: literals (``nil``, booleans, ints, floats, quoted strings with
``\\uXXXX`` escapes, arrays, maps), ``let x = e; body``, the ternary ``c ? a : b``, ``&&``,
``||``, ``!``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``contains``, ``matches``,
``+``, ``-``, member and index access (negative indexes count from the end), closures (``#``,
``#index``), and the functions ``fromJSON``, ``toJson``, ``toJSON``, ``get``, ``keys``, ``len``,
``map``, ``filter``, ``flatten``, ``concat``, ``min``, ``max``, ``type``, ``asInt``,
``asFloat``, and Argo's ``sprig.omit`` and ``sprig.set``. Anything else raises
:class:`UnsupportedExpressionError` naming it, so a translator change that needs more shows up
as a clear test failure rather than a silent misreading.

Values follow Go's view of decoded JSON: ``fromJSON`` gives every number as a float (so ``type``
answers ``float``, as on Argo) and ``toJson`` writes Go's ``json.Marshal`` form (sorted keys,
integral floats without a fraction). Errors that expr-lang raises at run time (fetching from nil,
comparing a string with a number, ``len`` of nil) raise :class:`ExpressionError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ExpressionError", "UnsupportedExpressionError", "evaluate", "go_json", "go_string"]


class ExpressionError(Exception):
    """The expression failed the way expr-lang would fail it (a type error, nil fetch, ...)."""


class UnsupportedExpressionError(ExpressionError):
    """The expression uses expr-lang beyond what this interpreter implements."""


# --- tokens --------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)
    | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<name>\#index|\#acc|\#|[A-Za-z_$][A-Za-z0-9_$]*)
    | (?P<op>==|!=|<=|>=|&&|\|\||\?\?|\?\.|\.\.|\*\*|[-+*/%<>!?:.,;()\[\]{}=^|])
    )""",
    re.VERBOSE,
)
_KEYWORD_OPS = {"and": "&&", "or": "||", "not": "!"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # number | string | name | op | end
    text: str
    value: Any = None


def _unquote(text: str) -> str:
    body, out, i = text[1:-1], [], 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "/": "/"}
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        else:
            raise UnsupportedExpressionError(f"string escape \\{nxt} in {text}")
    return "".join(out)


def _tokens(source: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"cannot read the expression at {source[pos : pos + 30]!r}")
        pos = match.end()
        if match["number"] is not None:
            text = match["number"]
            value: Any = float(text) if any(c in text for c in ".eE") else int(text)
            tokens.append(_Tok("number", text, value))
        elif match["string"] is not None:
            tokens.append(_Tok("string", match["string"], _unquote(match["string"])))
        elif match["name"] is not None:
            name = match["name"]
            if name in _KEYWORD_OPS:
                tokens.append(_Tok("op", _KEYWORD_OPS[name]))
            else:
                tokens.append(_Tok("name", name))
        else:
            tokens.append(_Tok("op", match["op"]))
    tokens.append(_Tok("end", ""))
    return tokens


# --- syntax tree ---------------------------------------------------------------------------------

Node = tuple[Any, ...]
_BINARY_LEVELS: list[tuple[str, ...]] = [
    ("||",),
    ("&&",),
    ("==", "!=", "<", ">", "<=", ">=", "in", "not in", "matches", "contains"),
    ("+", "-"),
    ("*", "/", "%"),
]
_UNSUPPORTED_OPS = {"??", "?.", "..", "**", "^", "|", "startsWith", "endsWith"}
_PREDICATE_FUNCTIONS = {"map", "filter", "all", "any", "none", "one", "count", "find", "sum"}


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokens(source)
        self.pos = 0

    def peek(self) -> _Tok:
        return self.tokens[self.pos]

    def take(self) -> _Tok:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text or token.kind not in ("op",):
            raise ExpressionError(f"expected {text!r}, got {token.text!r} in {self.source!r}")

    def at(self, text: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.text == text

    def parse(self) -> Node:
        node = self.expression()
        if self.peek().kind != "end":
            raise ExpressionError(f"unexpected {self.peek().text!r} in {self.source!r}")
        return node

    def expression(self) -> Node:
        token = self.peek()
        if token.kind == "name" and token.text == "let":
            self.take()
            name = self.take()
            if name.kind != "name":
                raise ExpressionError(f"let needs a name in {self.source!r}")
            self.expect("=")
            value = self.expression()
            self.expect(";")
            return ("let", name.text, value, self.expression())
        return self.ternary()

    def ternary(self) -> Node:
        cond = self.binary(0)
        if self.at("?"):
            self.take()
            then = self.expression()
            self.expect(":")
            return ("if", cond, then, self.expression())
        return cond

    def binary(self, level: int) -> Node:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            op = self.operator(_BINARY_LEVELS[level])
            if op is None:
                return left
            right = self.binary(level + 1)
            left = ("bin", op, left, right)

    def operator(self, allowed: tuple[str, ...]) -> str | None:
        token = self.peek()
        text = token.text
        if token.kind == "op" and text in _UNSUPPORTED_OPS:
            raise UnsupportedExpressionError(f"operator {text!r} in {self.source!r}")
        if token.kind == "name" and text in _UNSUPPORTED_OPS:
            raise UnsupportedExpressionError(f"operator {text!r} in {self.source!r}")
        if token.kind == "op" and text == "!" and "not in" in allowed:
            following = self.tokens[self.pos + 1]
            if following.kind == "name" and following.text == "in":
                self.pos += 2
                return "not in"
        if token.kind in ("op", "name") and text in allowed:
            self.take()
            return text
        return None

    def unary(self) -> Node:
        if self.at("!"):
            self.take()
            return ("not", self.unary())
        if self.at("-"):
            self.take()
            return ("neg", self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.at("."):
                self.take()
                name = self.take()
                if name.kind != "name":
                    raise ExpressionError(f"a name must follow '.' in {self.source!r}")
                node = ("member", node, ("lit", name.text))
            elif self.at("["):
                self.take()
                index = self.expression()
                if self.at(":"):
                    raise UnsupportedExpressionError(f"slices in {self.source!r}")
                self.expect("]")
                node = ("member", node, index)
            else:
                return node

    def primary(self) -> Node:
        token = self.take()
        if token.kind in ("number", "string"):
            return ("lit", token.value)
        if token.kind == "op" and token.text == "(":
            node = self.expression()
            self.expect(")")
            return node
        if token.kind == "op" and token.text == "[":
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.expression())
                if not self.at("]"):
                    self.expect(",")
            self.take()
            return ("array", items)
        if token.kind == "op" and token.text == "{":
            return self.map_literal()
        if token.kind == "name":
            if token.text in ("nil", "true", "false"):
                return ("lit", {"nil": None, "true": True, "false": False}[token.text])
            if token.text in ("#", "#index"):
                return ("pointer", token.text)
            if token.text == "sprig" and self.at("."):  # Argo's sprig functions: sprig.name(...)
                self.take()
                name = self.take()
                if name.kind != "name" or not self.at("("):
                    raise ExpressionError(f"sprig.{name.text} is not a call in {self.source!r}")
                return self.call(f"sprig.{name.text}")
            if self.at("("):
                return self.call(token.text)
            return ("var", token.text)
        raise ExpressionError(f"unexpected {token.text!r} in {self.source!r}")

    def map_literal(self) -> Node:
        pairs: list[tuple[Node, Node]] = []
        while not self.at("}"):
            key_token = self.take()
            if key_token.kind == "string":
                key: Node = ("lit", key_token.value)
            elif key_token.kind == "name":
                key = ("lit", key_token.text)
            elif key_token.kind == "op" and key_token.text == "(":
                key = self.expression()
                self.expect(")")
            else:
                raise ExpressionError(f"bad map key {key_token.text!r} in {self.source!r}")
            self.expect(":")
            pairs.append((key, self.expression()))
            if not self.at("}"):
                self.expect(",")
        self.take()
        return ("map", pairs)

    def call(self, name: str) -> Node:
        self.expect("(")
        args: list[Node] = []
        while not self.at(")"):
            if name in _PREDICATE_FUNCTIONS and len(args) == 1:
                args.append(self.predicate())
            else:
                args.append(self.expression())
            if not self.at(")"):
                self.expect(",")
        self.take()
        return ("call", name, args)

    def predicate(self) -> Node:
        """A closure argument: ``{ body }`` or a bare expression using ``#``."""
        if self.at("{"):
            self.take()
            body = self.expression()
            self.expect("}")
            return ("closure", body)
        return ("closure", self.expression())


# --- evaluation ----------------------------------------------------------------------------------

_NIL_FETCH = "cannot fetch {key!r} from nil"


def _type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "map"
    return "unknown"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _fetch(container: Any, key: Any) -> Any:
    """``a.b`` / ``a[i]``: nil for a missing map key, an error from nil or out of range."""
    if container is None:
        raise ExpressionError(_NIL_FETCH.format(key=key))
    if isinstance(container, dict):
        return container.get(key)
    if isinstance(container, list | str):
        if not isinstance(key, int) or isinstance(key, bool):
            raise ExpressionError(f"cannot index an array with {key!r}")
        index = key + len(container) if key < 0 else key
        if not 0 <= index < len(container):
            raise ExpressionError(f"index out of range: {key} (array of length {len(container)})")
        if isinstance(container, str):
            raise UnsupportedExpressionError("indexing a string")
        return container[index]
    raise ExpressionError(f"cannot fetch {key!r} from {_type_name(container)}")


def _get(container: Any, key: Any) -> Any:
    """expr-lang's ``get``: like a fetch, but nil instead of an error."""
    if container is None:
        return None
    if isinstance(container, dict):
        return container.get(key)
    if isinstance(container, list):
        if not _is_number(key):
            raise ExpressionError(f"get: cannot index an array with {key!r}")
        index = int(key)
        index = index + len(container) if index < 0 else index
        return container[index] if 0 <= index < len(container) else None
    if isinstance(container, str):
        raise UnsupportedExpressionError("get on a string")
    return None


def _flatten(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _need_list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ExpressionError(f"{name}: expected an array, got {_type_name(value)}")
    return value


def _from_json(value: Any) -> Any:
    if not isinstance(value, str):
        raise ExpressionError(f"fromJSON: expected a string, got {_type_name(value)}")
    try:
        return json.loads(value, parse_int=float)
    except ValueError as exc:
        raise ExpressionError(f"fromJSON: {exc} in {value[:200]!r}") from exc


def _go_number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ExpressionError(f"json: unsupported value {value}")
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def go_json(value: Any, indent: str | None = None) -> str:
    """Go's ``json.Marshal`` (sorted map keys, ``<>&`` escaped, integral floats as integers)."""

    def normal(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if _is_number(v):
            return _RawNumber(_go_number(v))
        if isinstance(v, list):
            return [normal(x) for x in v]
        if isinstance(v, dict):
            return {str(k): normal(x) for k, x in v.items()}
        raise ExpressionError(f"json: unsupported type {type(v).__name__}")

    text = _dump(normal(value), indent, 0)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True)
class _RawNumber:
    text: str


def _dump(value: Any, indent: str | None, depth: int) -> str:
    if isinstance(value, _RawNumber):
        return value.text
    if isinstance(value, list | dict) and value:
        if isinstance(value, list):
            parts = [_dump(v, indent, depth + 1) for v in value]
        else:
            parts = [
                json.dumps(k, ensure_ascii=False)
                + (": " if indent else ":")
                + _dump(value[k], indent, depth + 1)
                for k in sorted(value)
            ]
        opening, closing = ("[", "]") if isinstance(value, list) else ("{", "}")
        if indent is None:
            return opening + ",".join(parts) + closing
        pad, inner = "\n" + indent * depth, "\n" + indent * (depth + 1)
        return opening + inner + ("," + inner).join(parts) + pad + closing
    if isinstance(value, list):
        return "[]"
    if isinstance(value, dict):
        return "{}"
    return json.dumps(value, ensure_ascii=False)


def go_string(value: Any) -> str:
    """``fmt.Sprintf("%v", value)`` for the values a tag may produce (strings, bools, numbers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        if isinstance(value, float) and (value.is_integer() and abs(value) < 1e21):
            return str(int(value))
        return _go_number(value)
    raise UnsupportedExpressionError(
        f"a tag evaluated to a {_type_name(value)} ({value!r:.100}); Argo would print Go's %v "
        "form of it, which no Fluxo template expects: wrap it in toJson()"
    )


def _min_max(name: str, pick: Callable[[Any, Any], bool], args: list[Any]) -> Any:
    best: Any = None
    for arg in _flatten(args):
        if not _is_number(arg):
            raise ExpressionError(f"invalid argument for {name} (type {_type_name(arg)})")
        if best is None or pick(arg, best):
            best = arg
    return best


class _Evaluator:
    def __init__(self, env: Mapping[str, Any]) -> None:
        self.env = env

    def eval(self, node: Node, scope: Mapping[str, Any]) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "var":
            name = node[1]
            if name in scope:
                return scope[name]
            if name in self.env:
                return self.env[name]
            raise ExpressionError(f"unknown name {name}")
        if kind == "pointer":
            if node[1] not in scope:
                raise ExpressionError(f"{node[1]} outside a closure")
            return scope[node[1]]
        if kind == "let":
            value = self.eval(node[2], scope)
            return self.eval(node[3], {**scope, node[1]: value})
        if kind == "if":
            cond = self.eval(node[1], scope)
            if not isinstance(cond, bool):
                raise ExpressionError(f"a ternary condition must be bool, not {_type_name(cond)}")
            return self.eval(node[2] if cond else node[3], scope)
        if kind == "not":
            value = self.eval(node[1], scope)
            if not isinstance(value, bool):
                raise ExpressionError(f"invalid operation: ! {_type_name(value)}")
            return not value
        if kind == "neg":
            value = self.eval(node[1], scope)
            if not _is_number(value):
                raise ExpressionError(f"invalid operation: - {_type_name(value)}")
            return -value
        if kind == "array":
            return [self.eval(item, scope) for item in node[1]]
        if kind == "map":
            out = {}
            for key_node, value_node in node[1]:
                key = self.eval(key_node, scope)
                out[key] = self.eval(value_node, scope)
            return out
        if kind == "member":
            return _fetch(self.eval(node[1], scope), self.eval(node[2], scope))
        if kind == "bin":
            return self.binary(node[1], node[2], node[3], scope)
        if kind == "call":
            return self.call(node[1], node[2], scope)
        raise ExpressionError(f"cannot evaluate {kind}")

    def binary(self, op: str, left_node: Node, right_node: Node, scope: Mapping[str, Any]) -> Any:
        left = self.eval(left_node, scope)
        if op in ("&&", "||"):
            if not isinstance(left, bool):
                raise ExpressionError(f"invalid operation: {_type_name(left)} {op} ...")
            if (op == "&&" and not left) or (op == "||" and left):
                return left
            right = self.eval(right_node, scope)
            if not isinstance(right, bool):
                raise ExpressionError(f"invalid operation: ... {op} {_type_name(right)}")
            return right
        right = self.eval(right_node, scope)
        if op == "==":
            return _equal(left, right)
        if op == "!=":
            return not _equal(left, right)
        if op in ("in", "not in"):
            if isinstance(right, dict):
                found = left in right
            elif isinstance(right, list):
                found = any(_equal(left, item) for item in right)
            else:
                raise ExpressionError(f"invalid operation: in {_type_name(right)}")
            return found if op == "in" else not found
        if op in ("<", ">", "<=", ">="):
            both_numbers = _is_number(left) and _is_number(right)
            both_strings = isinstance(left, str) and isinstance(right, str)
            if not (both_numbers or both_strings):
                raise ExpressionError(
                    f"invalid operation: {_type_name(left)} {op} {_type_name(right)}"
                )
            return {
                "<": left < right,
                ">": left > right,
                "<=": left <= right,
                ">=": left >= right,
            }[op]
        if op == "contains":
            if not (isinstance(left, str) and isinstance(right, str)):
                raise ExpressionError(f"invalid operation: {_type_name(left)} contains ...")
            return right in left
        if op == "matches":
            if not (isinstance(left, str) and isinstance(right, str)):
                raise ExpressionError(f"invalid operation: {_type_name(left)} matches ...")
            return re.search(right, left) is not None
        if op == "+":
            if _is_number(left) and _is_number(right):
                return left + right
            if isinstance(left, str) and isinstance(right, str):
                return left + right
            if isinstance(left, list) and isinstance(right, list):
                return left + right
        if op in ("-", "*", "/", "%") and _is_number(left) and _is_number(right):
            if op == "-":
                return left - right
            if op == "*":
                return left * right
            if op == "/":
                return left / right
            return left % right
        raise ExpressionError(f"invalid operation: {_type_name(left)} {op} {_type_name(right)}")

    def call(self, name: str, arg_nodes: list[Node], scope: Mapping[str, Any]) -> Any:
        if name in ("map", "filter"):
            if len(arg_nodes) != 2 or arg_nodes[1][0] != "closure":
                raise ExpressionError(f"{name} takes an array and a predicate")
            items = _need_list(name, self.eval(arg_nodes[0], scope))
            body = arg_nodes[1][1]
            out = []
            for index, item in enumerate(items):
                value = self.eval(body, {**scope, "#": item, "#index": index})
                if name == "map":
                    out.append(value)
                elif not isinstance(value, bool):
                    raise ExpressionError(f"filter predicate returned {_type_name(value)}")
                elif value:
                    out.append(item)
            return out
        if name in _PREDICATE_FUNCTIONS:
            raise UnsupportedExpressionError(f"function {name}()")
        args = [self.eval(a, scope) for a in arg_nodes]
        function = _FUNCTIONS.get(name)
        if function is None:
            raise UnsupportedExpressionError(f"function {name}()")
        return function(*args)


def _len(value: Any) -> int:
    if isinstance(value, list | dict | str):
        return len(value)
    raise ExpressionError(f"invalid argument for len (type {_type_name(value)})")


def _keys(value: Any) -> list[Any]:
    if not isinstance(value, dict):
        raise ExpressionError(f"keys: expected a map, got {_type_name(value)}")
    return list(value)


def _concat(*arrays: Any) -> list[Any]:
    out: list[Any] = []
    for array in arrays:
        out.extend(_need_list("concat", array))
    return out


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ExpressionError(f"asInt({value!r})") from exc


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ExpressionError(f"asFloat({value!r})") from exc


def _sprig_omit(value: Any, *keys: Any) -> dict[str, Any]:
    """sprig ``omit``: a new map without ``keys`` (Go: the argument must be a map)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in keys):
        raise ExpressionError(
            f"sprig.omit: expected a map and string keys, got {_type_name(value)}"
        )
    return {k: v for k, v in value.items() if k not in keys}


def _sprig_set(value: Any, key: Any, item: Any) -> dict[str, Any]:
    """sprig ``set``: the map with ``key`` set (Go mutates and returns it)."""
    if not isinstance(value, dict) or not isinstance(key, str):
        raise ExpressionError(
            f"sprig.set: expected a map and a string key, got {_type_name(value)}"
        )
    value[key] = item
    return value


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sprig.omit": _sprig_omit,
    "sprig.set": _sprig_set,
    "fromJSON": _from_json,
    "toJson": lambda value: go_json(value),
    "toJSON": lambda value: go_json(value, indent="  "),
    "get": _get,
    "keys": _keys,
    "len": _len,
    "flatten": lambda value: _flatten(_need_list("flatten", value)),
    "concat": _concat,
    "min": lambda *args: _min_max("min", lambda a, b: a < b, list(args)),
    "max": lambda *args: _min_max("max", lambda a, b: a > b, list(args)),
    "type": _type_name,
    "asInt": _as_int,
    "asFloat": _as_float,
}

_PARSED: dict[str, Node] = {}


def evaluate(source: str, env: Mapping[str, Any]) -> Any:
    """Evaluate one expr-lang expression over ``env`` (nested dicts of JSON-like values)."""
    tree = _PARSED.get(source)
    if tree is None:
        tree = _PARSED[source] = _Parser(source).parse()
    try:
        return _Evaluator(env).eval(tree, {})
    except RecursionError as exc:  # pragma: no cover - a runaway expression
        raise ExpressionError(f"expression too deep: {source[:100]!r}") from exc
