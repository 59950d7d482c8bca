"""The IR's transform language: set, move and delete fields, or reshape with JSONata.

A transform is a list of ops applied in order to each payload item (an object; an array payload is
transformed item by item)::

    {"op": "set", "path": "customer.tier", "value": "gold"}
    {"op": "set", "path": "total", "expr": "$sum(items.(qty * price))"}
    {"op": "move", "from": "customer.mail", "to": "customer.email"}
    {"op": "delete", "path": "items[0].internal"}
    {"op": "jsonata", "expr": "{'id': order_id, 'lines': $count(items)}"}

Paths are dotted keys with ``[n]`` list indexes; a key holding a dot or bracket is written
``["a.b"]``. ``set`` creates missing objects and arrays on the way (an index may equal the array's
length to append); ``delete`` and ``move`` of a missing path do nothing. A ``set`` whose expression
yields nothing (JSONata *undefined*) leaves the path unset, as JSONata does in object constructors.
``jsonata`` replaces the whole item and must yield an object.

:func:`apply_transform` and :class:`Transform` are pure (no I/O, the input is not modified) so the
step engine can run transforms in-process; :func:`transform_service` wraps them as the ``transform``
:func:`apply_transform` and :class:`Transform` are pure (no I/O, the input is not modified): the
step engine runs a transform step with them in-process, and the ``transform`` built-in service
(:mod:`services.transform`) wraps them for a call. The language is part of the model, so an
engine evaluates it without importing any service.

:class:`Parameters` applies a service step's ``with`` to a payload, for the step engine; it
evaluates ``{jsonata: ...}`` values with the same JSONata settings as the ops.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jsonata

from fluxo_core.errors import Problem, ValidationError
from fluxo_core.ir.packet import Payload
from fluxo_core.ir.paths import PathKey, format_path, parse_path

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "Parameters",
    "PathKey",
    "Transform",
    "apply_transform",
    "parse_path",
]


DEFAULT_TIMEOUT_MS = 1000
DEFAULT_MAX_DEPTH = 200  # JSONata call depth; well under Python's recursion limit

OpKind = Literal["set", "move", "delete", "jsonata"]
_OP_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # op -> (required fields, optional fields), besides "op" itself
    "set": (frozenset({"path"}), frozenset({"value", "expr"})),
    "move": (frozenset({"from", "to"}), frozenset()),
    "delete": (frozenset({"path"}), frozenset()),
    "jsonata": (frozenset({"expr"}), frozenset()),
}


@dataclass(frozen=True)
class _Op:
    kind: OpKind
    where: str  # e.g. "ops[2]"
    path: tuple[PathKey, ...] = ()
    to: tuple[PathKey, ...] = ()
    value: Any = None
    expr: str | None = None


class _OpError(Exception):
    """An op could not be applied to an item; ``field`` names the op field to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Transform:
    """A validated list of ops, ready to apply to payloads.

    Build it with :meth:`parse`; it holds no compiled state, so one instance may be shared between
    threads (JSONata expressions are compiled on the thread that evaluates them).
    """

    def __init__(
        self,
        ops: Sequence[_Op],
        *,
        where: str = "ops",
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self._ops = tuple(ops)
        self._where = where
        self._timeout_ms = timeout_ms
        self._max_depth = max_depth

    def __len__(self) -> int:
        return len(self._ops)

    @classmethod
    def parse(
        cls,
        ops: Any,
        *,
        where: str = "ops",
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> Transform:
        """Validate ``ops`` (a list of op objects) and compile-check their expressions.

        Args:
            ops: the ops, as decoded JSON.
            where: the location of ``ops`` in the caller's document, used in problem locations
                (``ops[2].expr``; the step engine passes e.g. ``spec.steps[3].ops``).
            timeout_ms: the time budget of each expression over one :meth:`apply`.
            max_depth: the deepest JSONata call nesting allowed.

        Raises:
            ValidationError: listing every problem of every op, each with its location.
        """
        if not isinstance(ops, list):
            raise ValidationError(
                "invalid transform: ops must be a list",
                problems=[(where, "must be a list of ops such as {'op': 'set', ...}")],
            )
        problems: list[Problem] = []
        parsed = [_parse_op(op, f"{where}[{i}]", problems) for i, op in enumerate(ops)]
        if problems:
            raise ValidationError(
                "invalid transform: fix the ops listed below",
                problems=problems,
            )
        return cls(
            [op for op in parsed if op is not None],
            where=where,
            timeout_ms=timeout_ms,
            max_depth=max_depth,
        )

    def apply(self, payload: Any, *, input_where: str = "payload") -> Payload:
        """Apply the ops to each item of ``payload`` and return the new payload.

        ``payload`` is not modified. An object gives an object, an array gives an array. Items
        must be objects, unless the first op is a ``jsonata`` one (it replaces the item).

        Raises:
            ValidationError: an item is not an object, an op does not fit an item (e.g. a path
                through a string) or an expression failed; the location names the op field.
        """
        single = not isinstance(payload, list)
        items: list[Any] = [payload] if single else list(payload)
        # A first jsonata op replaces the whole item and reads any JSON value, so it may start
        # from a string or a number (a Node-RED inject's timestamp); the others need an object.
        replaces_first = bool(self._ops) and self._ops[0].kind == "jsonata"
        for n, item in enumerate(items):
            if not isinstance(item, dict) and not replaces_first:
                location = input_where if single else f"{input_where}[{n}]"
                raise ValidationError(
                    "transform input must be an object or an array of objects",
                    problems=[(location, f"is {_kind(item)}, not an object")],
                )
        items = copy.deepcopy(items)
        for op in self._ops:
            # Compile right before use, on this thread: jsonata-python keeps per-thread state and
            # starts an expression's time budget when it is compiled.
            expression = self._compile(op) if op.expr is not None else None
            for n, item in enumerate(items):
                try:
                    items[n] = self._apply_op(op, item, expression)
                except _OpError as exc:
                    label = "" if single else f"item {n}: "
                    raise ValidationError(
                        f"transform failed at {op.where} ({op.kind})",
                        problems=[(f"{op.where}.{exc.field}", label + exc.message)],
                        op=op.where,
                    ) from exc
        return items[0] if single else items

    def _compile(self, op: _Op) -> Any:
        try:
            expression = jsonata.Jsonata(op.expr, timeout=self._timeout_ms, stack=self._max_depth)
        except Exception as exc:  # checked in parse(); kept so a library change cannot leak
            raise ValidationError(
                "invalid transform", problems=[(f"{op.where}.expr", _jsonata_message(exc))]
            ) from exc
        # Keep JSONata's null (a value) apart from undefined (no value): set skips undefined.
        expression.set_output_convert_nulls(False)
        return expression

    def _apply_op(self, op: _Op, value: Any, expression: Any) -> dict[str, Any]:
        if op.kind == "jsonata":  # replaces the item; reads any JSON value
            result = self._evaluate(expression, value)
            if not isinstance(result, dict):
                shown = "nothing (undefined)" if result is _UNDEFINED else _kind(result)
                raise _OpError("expr", f"the expression gave {shown}; it must give an object")
            return result
        if not isinstance(value, dict):  # only a first jsonata op may see a non-object
            raise _OpError("path", f"is {_kind(value)}, not an object")
        item: dict[str, Any] = value
        if op.kind == "set":
            if expression is None:
                _set(item, op.path, copy.deepcopy(op.value))
            else:
                result = self._evaluate(expression, item)
                if result is not _UNDEFINED:
                    _set(item, op.path, result)
            return item
        if op.kind == "delete":
            _pop(item, op.path)
            return item
        found, moved = _pop(item, op.path)  # move
        if found:
            try:
                _set(item, op.to, moved)
            except _OpError as exc:
                raise _OpError("to", exc.message) from exc
        return item

    def _evaluate(self, expression: Any, item: Any) -> Any:
        try:
            raw = expression.evaluate(item)
        except RecursionError as exc:
            raise _OpError("expr", "the expression recursed too deeply") from exc
        except Exception as exc:
            # jsonata-python raises its JException but also plain ValueError/TypeError on bad data
            # (e.g. $number("x")); all of them mean this expression cannot work on this item.
            code = getattr(exc, "error", None)
            if code == "D1012":
                message = f"the expression ran longer than {self._timeout_ms} ms"
            elif code == "D1011":
                message = f"the expression nested calls deeper than {self._max_depth}"
            else:
                message = _jsonata_message(exc)
            raise _OpError("expr", message) from exc
        if raw is None:
            return _UNDEFINED
        try:
            return _plain(raw)
        except _NotJsonError as exc:
            raise _OpError("expr", f"the expression gave {exc}, which is not JSON") from exc


class Parameters:
    """A service step's ``with``, ready to set on the payloads of its calls.

    Each item of the payload (an object, or each object of an array) gets every parameter as a
    top-level field: static values as written, ``{"jsonata": E}`` as ``E`` evaluated on the item
    (``$`` and ``$$`` are the item). Every expression sees the input item, not the other
    parameters; one that yields nothing (JSONata *undefined*) leaves the field as the item has
    it. Pure: the payload is not modified.
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        where: str = "with",
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self._where = where
        self._static: dict[str, Any] = {}
        self._exprs: list[_Op] = []
        for key, value in params.items():
            if isinstance(value, Mapping) and list(value) == ["jsonata"]:
                self._exprs.append(
                    _Op(kind="set", where=f"{where}.{key}", path=(key,), expr=value["jsonata"])
                )
            else:
                self._static[key] = value
        # The evaluation machinery of a transform, so limits and errors are the same.
        self._engine = Transform(
            self._exprs, where=where, timeout_ms=timeout_ms, max_depth=max_depth
        )

    def __bool__(self) -> bool:
        return bool(self._static or self._exprs)

    def apply(self, payload: Any, *, input_where: str = "input") -> Payload:
        """The payload with the parameters set on each item.

        Raises:
            ValidationError: an item is not an object, or an expression failed (the location
                names the parameter, e.g. ``with.total``).
        """
        single = not isinstance(payload, list)
        items: list[Any] = [payload] if single else list(payload)
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                location = input_where if single else f"{input_where}[{n}]"
                raise ValidationError(
                    f"{self._where} sets fields on the step's input, which must be an object or "
                    "an array of objects",
                    problems=[(location, f"is {_kind(item)}, not an object")],
                )
        compiled = [(op, self._engine._compile(op)) for op in self._exprs]
        out: list[dict[str, Any]] = []
        for n, item in enumerate(items):
            fields: dict[str, Any] = {}
            for op, expression in compiled:
                try:
                    value = self._engine._evaluate(expression, item)
                except _OpError as exc:
                    label = "" if single else f"item {n}: "
                    raise ValidationError(
                        f"the parameter at {op.where} failed",
                        problems=[(op.where, label + exc.message)],
                    ) from exc
                if value is not _UNDEFINED:
                    fields[str(op.path[0])] = value
            out.append({**item, **copy.deepcopy(self._static), **fields})
        return out[0] if single else out


def apply_transform(
    ops: Any,
    payload: Any,
    *,
    where: str = "ops",
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Payload:
    """Validate ``ops`` and apply them to ``payload`` (an object or an array of objects).

    Pure: no I/O, and ``payload`` is left unchanged.

    Raises:
        ValidationError: bad ops (every problem, located like ``ops[2].expr``) or an op that
            failed on the data.
    """
    return Transform.parse(ops, where=where, timeout_ms=timeout_ms).apply(payload)


# --- op parsing --------------------------------------------------------------------------------


def _parse_op(raw: Any, where: str, problems: list[Problem]) -> _Op | None:
    if not isinstance(raw, Mapping):
        problems.append((where, f"is {_kind(raw)}; an op is an object like {{'op': 'set', ...}}"))
        return None
    kind = raw.get("op")
    if kind not in _OP_FIELDS:
        hint = difflib.get_close_matches(str(kind), list(_OP_FIELDS), n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        problems.append(
            (
                f"{where}.op",
                f"unknown op {kind!r}{did_you_mean}; use one of {', '.join(_OP_FIELDS)}",
            )
        )
        return None
    required, optional = _OP_FIELDS[kind]
    start = len(problems)
    for name in sorted(required - set(raw)):
        problems.append((f"{where}.{name}", f"required by the {kind} op"))
    for name in sorted(set(raw) - required - optional - {"op"}, key=str):
        problems.append((f"{where}.{name}", f"unknown field of the {kind} op"))
    if kind == "set" and ("value" in raw) == ("expr" in raw):
        problems.append((where, "a set op takes either value or expr (exactly one)"))
    paths: dict[str, tuple[PathKey, ...]] = {}
    for name in ("path", "from", "to"):
        if name in raw:
            path = _parse_path_field(raw[name], f"{where}.{name}", problems)
            if path is not None:
                paths[name] = path
    expr = raw.get("expr")
    if "expr" in raw:
        _check_expr(expr, f"{where}.expr", problems)
    if "value" in raw:
        try:
            _plain(raw["value"])
        except _NotJsonError as exc:
            problems.append((f"{where}.value", f"{exc} is not a JSON value"))
    if len(problems) > start:
        return None
    return _Op(
        kind=kind,
        where=where,
        path=paths.get("path") or paths.get("from") or (),
        to=paths.get("to", ()),
        value=raw.get("value"),
        expr=expr,
    )


def _parse_path_field(raw: Any, where: str, problems: list[Problem]) -> tuple[PathKey, ...] | None:
    if not isinstance(raw, str):
        problems.append((where, f"must be a path string like 'a.b[0]', not {_kind(raw)}"))
        return None
    try:
        return parse_path(raw)
    except ValueError as exc:
        problems.append((where, f"{exc}: {raw!r}"))
        return None


def _check_expr(expr: Any, where: str, problems: list[Problem]) -> None:
    if not isinstance(expr, str) or not expr.strip():
        problems.append((where, "must be a non-empty JSONata expression"))
        return
    try:
        jsonata.Jsonata(expr)
    except Exception as exc:  # the parser raises JException, and occasionally plain errors
        problems.append((where, f"invalid JSONata: {_jsonata_message(exc)}"))


def _jsonata_message(exc: Exception) -> str:
    message = str(exc) or type(exc).__name__
    location = getattr(exc, "location", None)
    code = getattr(exc, "error", None)
    if isinstance(location, int) and location > 0:
        message += f" (at character {location})"
    if isinstance(code, str):
        message += f" [{code}]"
    return message


# --- paths over data ---------------------------------------------------------------------------


def _set(root: dict[str, Any], keys: tuple[PathKey, ...], value: Any) -> None:
    node: Any = root
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        _expect(node, key, keys[:depth], "path")
        fresh: Any = value if last else ([] if isinstance(keys[depth + 1], int) else {})
        if isinstance(key, str):
            if last or key not in node:
                node[key] = fresh
        elif key < len(node):
            if last:
                node[key] = fresh
        elif key == len(node):
            node.append(fresh)
        else:
            raise _OpError(
                "path",
                f"cannot set {format_path(keys)}: index {key} is past the end of "
                f"{format_path(keys[:depth]) or 'the item'} (length {len(node)})",
            )
        if not last:
            node = node[key]


def _pop(root: dict[str, Any], keys: tuple[PathKey, ...]) -> tuple[bool, Any]:
    """Remove and return the value at ``keys``; ``(False, None)`` if there is none."""
    node: Any = root
    for key in keys[:-1]:
        if isinstance(key, str):
            if not isinstance(node, dict) or key not in node:
                return False, None
        elif not isinstance(node, list) or key >= len(node):
            return False, None
        node = node[key]
    last = keys[-1]
    if isinstance(last, str) and isinstance(node, dict) and last in node:
        return True, node.pop(last)
    if isinstance(last, int) and isinstance(node, list) and last < len(node):
        return True, node.pop(last)
    return False, None


def _expect(node: Any, key: PathKey, parent: tuple[PathKey, ...], field: str) -> None:
    want, name = (dict, "an object") if isinstance(key, str) else (list, "an array")
    if not isinstance(node, want):
        raise _OpError(
            field,
            f"cannot go into {format_path(parent) or 'the item'}: it is {_kind(node)}, not {name}",
        )


# --- JSON values -------------------------------------------------------------------------------


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


_UNDEFINED = _Undefined()


class _NotJsonError(Exception):
    pass


def _plain(value: Any) -> Any:
    """A fresh, plain-JSON copy of ``value`` (JSONata sequences and nulls turned into JSON)."""
    if value is None or value is jsonata.Utils.NULL_VALUE:
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJsonError(repr(value))
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise _NotJsonError(f"a {type(value).__name__}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
