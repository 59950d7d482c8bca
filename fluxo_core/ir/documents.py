"""Bounded parsing: every JSON or YAML document that enters Fluxo is read here, within limits.

A document costs what it expands to, not what it weighs: a 500-byte YAML file of nested aliases
expands to billions of nodes, and a few thousand nested brackets exhaust Python's recursion. So
each document is checked against :class:`DocumentLimits` while it is read:

- ``max_bytes``: its size as sent (413, :class:`~fluxo_core.errors.PayloadTooLargeError`), and
  its size once YAML aliases are expanded, written as JSON (422);
- ``max_depth``: how deep objects and arrays nest (422);
- ``max_nodes``: how many values it holds once aliases are expanded (422);
- ``max_aliases``: how many YAML aliases (``*name``) it uses (422).

The YAML composer counts as it goes and refuses as soon as a limit is passed, before anything is
expanded; the refusals are :class:`~fluxo_core.errors.DocumentTooComplexError` naming the limit
and the fix. A document is also JSON data whatever its spelling, so values JSON cannot carry or
Fluxo cannot store are refused with their location: lone UTF-16 surrogates (``"\\ud800"``: not
UTF-8), NaN and infinities, integers beyond 64 bits, non-string keys, YAML-only types. YAML
timestamps stay strings, as they would be in JSON.

These functions are CPU-bound: callers on an event loop run them in a thread for any document
that is not small (:data:`INLINE_BYTES`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

from fluxo_core.errors import (
    DocumentTooComplexError,
    MalformedRequestError,
    PayloadTooLargeError,
    ValidationError,
)
from fluxo_core.ir._problems import format_location

__all__ = [
    "DEFAULT_LIMITS",
    "INLINE_BYTES",
    "BoundedLoader",
    "DocumentLimits",
    "check_document",
    "parse_json",
    "parse_yaml",
    "parse_yaml_documents",
]

INLINE_BYTES: Final = 64 * 1024
"""Documents up to this size parse in well under a millisecond: callers on an event loop may
parse them inline; larger ones go to a thread."""

_LONG_NUMBER: Final = re.compile(rb"[0-9]{20}")
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1  # what orjson (and so every stored packet) can write


@dataclass(frozen=True)
class DocumentLimits:
    """What one document may hold.

    Attributes:
        max_bytes: its size as sent, and once expanded (YAML aliases), written as JSON.
        max_depth: how deep objects and arrays nest (the top level is depth 1).
        max_nodes: values (objects, arrays, scalars) once aliases are expanded.
        max_aliases: YAML aliases (``*name``) in the whole text.
        setting: the setting that raises ``max_bytes``, named in errors.
    """

    max_bytes: int = 1_048_576
    max_depth: int = 100
    max_nodes: int = 1_000_000
    max_aliases: int = 1_000
    setting: str = "FLUXO_MAX_PACKET_BYTES"


DEFAULT_LIMITS: Final = DocumentLimits()
"""The limits at the default ``FLUXO_MAX_PACKET_BYTES``."""


def parse_json(
    data: bytes | str, *, limits: DocumentLimits = DEFAULT_LIMITS, where: str = "body"
) -> Any:
    """A JSON document, decoded and checked against ``limits``.

    Raises:
        PayloadTooLargeError: over ``limits.max_bytes``.
        MalformedRequestError: not UTF-8 or not JSON (with the line and column).
        DocumentTooComplexError: nested deeper than ``limits.max_depth`` or over ``max_nodes``.
        ValidationError: a value Fluxo cannot store (lone surrogate, integer beyond 64 bits),
            with its location.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    _check_size(len(raw), limits, where)
    try:
        # orjson: strict JSON (no NaN or infinities), a nesting limit enforced without recursion
        # errors, and many times the speed of ``json``.
        value = orjson.loads(raw)
        if _LONG_NUMBER.search(raw) is not None:
            # orjson reads an integer beyond 64 bits as a float, silently changing it: read it
            # exactly, so that the check below refuses it with its location.
            value = _exact(raw, limits, where)
        else:
            _check_shape(value, limits, where)
            return value
    except orjson.JSONDecodeError as exc:
        if "recursion limit" in exc.msg:
            raise _too_deep(limits, where, f"line {exc.lineno} column {exc.colno}") from exc
        value = _located_failure(raw, exc, limits, where)
    check_document(value, limits=limits, where=where)
    return value


def _check_shape(value: Any, limits: DocumentLimits, where: str) -> None:
    """:func:`check_document` for what orjson decoded, which holds only values Fluxo can store
    (string keys, valid text, finite numbers, integers within 64 bits): only the depth and the
    number of values are left to check, level by level, with far less work per value.
    Any breach is left to :func:`check_document` to report, with its location."""
    nodes = 1
    level: list[Any] = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limits.max_depth:
            break
        deeper: list[Any] = []
        for container in level:
            nodes += len(container)
            for item in container.values() if type(container) is dict else container:
                if type(item) is dict or type(item) is list:
                    deeper.append(item)
        if nodes > limits.max_nodes:
            break
        level = deeper
    else:
        return
    check_document(value, limits=limits, where=where)


def _exact(raw: bytes, limits: DocumentLimits, where: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError as exc:  # orjson allows 1,024 levels, Python's recursion fewer
        raise _too_deep(limits, where, "its innermost level") from exc


def _located_failure(
    raw: bytes, exc: orjson.JSONDecodeError, limits: DocumentLimits, where: str
) -> Any:
    """Why orjson refused ``raw``, said in the user's terms.

    orjson refuses some text that is JSON but cannot be stored (a lone surrogate such as
    ``"\\ud800"``) by its position only; Python's parser reads it, so :func:`check_document`
    can name the field. Anything it reads is returned to be checked; what it cannot read is
    malformed, at the line and column orjson gave.
    """
    malformed = MalformedRequestError(
        f"the {where} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
        "fix the document",
        problems=[(where, f"line {exc.lineno} column {exc.colno}: {exc.msg}")],
    )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise MalformedRequestError(
            f"the {where} is not UTF-8 text (byte {bad.start}); send UTF-8",
            problems=[(where, f"invalid UTF-8 at byte {bad.start}")],
        ) from exc
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep(limits, where, f"line {exc.lineno} column {exc.colno}") from exc
    except ValueError:  # not JSON, NaN, or an integer of more than 4,300 digits
        raise malformed from exc


def parse_yaml(
    text: bytes | str, *, limits: DocumentLimits = DEFAULT_LIMITS, where: str = "body"
) -> Any:
    """One YAML document (an empty text is None), decoded and checked against ``limits``.

    Raises:
        PayloadTooLargeError, DocumentTooComplexError, ValidationError: as :func:`parse_json`;
            aliases count once per use, so a small text that expands too far is refused.
        MalformedRequestError: not YAML, or several documents.
    """
    docs = _yaml_documents(text, limits, where, indexed=False)
    if len(docs) > 1:
        raise MalformedRequestError(
            f"the {where} holds {len(docs)} YAML documents; send one at a time",
            problems=[(where, "several documents ('---')")],
        )
    return docs[0][2] if docs else None


def parse_yaml_documents(
    text: bytes | str, *, limits: DocumentLimits = DEFAULT_LIMITS, where: str = "doc"
) -> list[tuple[int, yaml.Node, Any]]:
    """Each non-empty document of a YAML stream as ``(index, node, data)``; the node gives line
    numbers. The limits apply to the whole stream.

    Raises:
        as :func:`parse_yaml`.
    """
    return _yaml_documents(text, limits, where, indexed=True)


def _yaml_documents(
    text: bytes | str, limits: DocumentLimits, where: str, *, indexed: bool
) -> list[tuple[int, yaml.Node, Any]]:
    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
    _check_size(size, limits, where)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRequestError(
                f"the {where} is not UTF-8 text (byte {exc.start}); save it as UTF-8",
                problems=[(where, f"invalid UTF-8 at byte {exc.start}")],
            ) from exc
    loader = BoundedLoader(text, limits, where)
    docs: list[tuple[int, yaml.Node, Any]] = []
    count = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            data = loader.construct_document(node) if node is not None else None
            if node is not None and data is not None:
                check_document(data, limits=limits, where=f"{where}[{count}]" if indexed else where)
                docs.append((count, node, data))
            count += 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if "maximum nesting depth" in problem:  # libyaml's own bound, past ours
            raise _too_deep(limits, where, at.strip().removeprefix("at ")) from exc
        raise MalformedRequestError(
            f"the {where} is not valid YAML{at}: fix its syntax",
            problems=[
                (f"{where}[{count}]" if indexed else where, f"YAML syntax error{at}: {problem}")
            ],
        ) from exc
    finally:
        loader.dispose()
    return docs


def check_document(
    value: Any, *, limits: DocumentLimits = DEFAULT_LIMITS, where: str = "body"
) -> None:
    """Check decoded data as a document: depth, node count and values JSON can store.

    Iterative, so data of any depth is checked without recursion.

    Raises:
        DocumentTooComplexError: deeper than ``limits.max_depth`` or over ``max_nodes``.
        ValidationError: the first value that cannot be stored, with its location.
    """
    nodes = 0
    # (container, its depth, its location); scalars are checked where they sit.
    stack: list[tuple[Any, int, tuple[int | str, ...]]] = [([value], 0, ())]
    while stack:
        container, depth, loc = stack.pop()
        if isinstance(container, dict):
            items: Any = container.items()
        else:
            items = enumerate(container)
        for key, item in items:
            nodes += 1
            if not isinstance(key, int | str):
                _refuse_value(where, loc, "object keys must be strings: quote the key")
            elif isinstance(container, dict):
                if not isinstance(key, str):
                    _refuse_value(where, loc, f"key {key!r} is not a string: quote it")
                elif not key.isascii():
                    _check_text(key, where, (*loc, key))
            if isinstance(item, str):
                if not item.isascii():
                    _check_text(item, where, _child(loc, key, depth))
            elif isinstance(item, dict | list):
                if depth + 1 > limits.max_depth:
                    raise _too_deep(
                        limits, where, _short(format_location(_child(loc, key, depth), where))
                    )
                stack.append((item, depth + 1, _child(loc, key, depth)))
            elif isinstance(item, bool) or item is None:
                pass
            elif isinstance(item, int):
                if not _INT_MIN <= item <= _INT_MAX:
                    _refuse_value(
                        where,
                        _child(loc, key, depth),
                        "an integer beyond 64 bits cannot be stored exactly: send it as a string",
                    )
            elif isinstance(item, float):
                if not math.isfinite(item):
                    _refuse_value(
                        where,
                        _child(loc, key, depth),
                        f"{item} is not a JSON number: send a finite number or a string",
                    )
            else:
                _refuse_value(
                    where,
                    _child(loc, key, depth),
                    f"a {type(item).__name__} is not a JSON value: use a string, number, "
                    "boolean, null, object or array",
                )
        if nodes > limits.max_nodes:
            raise _too_many_nodes(limits, where)


def _short(location: str) -> str:
    return location if len(location) <= 100 else f"{location[:50]}...{location[-40:]}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _child(loc: tuple[int | str, ...], key: Any, depth: int) -> tuple[int | str, ...]:
    # Depth 0 is the wrapper list around the document itself: its one item is the root.
    return loc if depth == 0 else (*loc, key)


def _check_text(text: str, where: str, loc: Sequence[int | str]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        _refuse_value(
            where,
            loc,
            f"the text holds a lone UTF-16 surrogate ({text[exc.start]!r} at character "
            f"{exc.start}), which is not Unicode text and cannot be stored: send valid text",
        )


def _refuse_value(where: str, loc: Sequence[int | str], message: str) -> None:
    location = format_location(loc, where)
    raise ValidationError(f"{location}: {message}", problems=[(location, message)])


def _check_size(size: int, limits: DocumentLimits, where: str) -> None:
    if size > limits.max_bytes:
        raise PayloadTooLargeError(
            f"the {where} is {size} bytes, over the limit of {limits.max_bytes} bytes "
            f"({limits.setting}); send less, a reference to the data, or raise the limit",
            limit=limits.max_bytes,
            size=size,
        )


def _too_deep(limits: DocumentLimits, where: str, at: str) -> DocumentTooComplexError:
    return DocumentTooComplexError(
        f"the {where} nests objects and arrays deeper than {limits.max_depth} levels (at {at}); "
        "flatten it",
        problems=[(where, f"deeper than {limits.max_depth} levels")],
        limit="max_depth",
        max_depth=limits.max_depth,
    )


def _too_many_nodes(limits: DocumentLimits, where: str) -> DocumentTooComplexError:
    return DocumentTooComplexError(
        f"the {where} holds more than {limits.max_nodes} values (counting each use of a YAML "
        "alias); send a smaller document",
        problems=[(where, f"more than {limits.max_nodes} values")],
        limit="max_nodes",
        max_nodes=limits.max_nodes,
    )


# --- YAML: a safe loader that counts what the document expands to --------------------------------


class _StringTimestamps(SafeConstructor):
    """Dates and times stay strings, as they would be in JSON."""


_StringTimestamps.add_constructor(
    "tag:yaml.org,2002:timestamp",
    SafeConstructor.construct_yaml_str,  # type: ignore[type-var]
)


class _BoundedComposer(Composer):
    """PyYAML's composer, counting depth, aliases and the expanded size as it builds nodes (or,
    with libyaml's composer, :meth:`_weigh` counting the same once it has built them).

    Every node records what it expands to (``_weights``); an alias adds the weight of the node it
    names, so the total is known exactly while nothing is expanded, and the document is refused
    the moment it passes a limit. An alias to a node still being composed (``&a [*a]``) is a
    cycle: it would expand forever, so it is refused too.
    """

    # The parser's, mixed in below.
    check_event: Callable[..., bool]
    peek_event: Callable[[], Any]

    def _bind(self, limits: DocumentLimits, where: str) -> None:
        self._limits = limits
        self._where = where
        self._depth = 0
        self._aliases = 0
        self._nodes = 0
        self._bytes = 0
        self._weights: dict[int, tuple[int, int]] = {}

    def compose_document(self) -> Any:
        self._weights.clear()  # anchors are per document; so are their weights
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if self._aliases > self._limits.max_aliases:
                raise self._refused(
                    event,
                    f"uses more than {self._limits.max_aliases} YAML aliases",
                    "max_aliases",
                    "spell the repeated parts out, or use fewer aliases",
                )
            node = self.anchors.get(event.anchor)
            if node is not None:
                weight = self._weights.get(id(node))
                if weight is None:
                    raise self._refused(
                        event,
                        f"refers to the anchor &{event.anchor} inside itself (a cycle)",
                        "max_nodes",
                        "remove the alias, or point it at a finished node",
                    )
                self._count(event, *weight)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self._limits.max_depth:
            raise self._refused(
                self.peek_event(),
                f"nests deeper than {self._limits.max_depth} levels",
                "max_depth",
                "flatten it",
            )
        nodes, size = self._nodes, self._bytes
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        value = node.value if isinstance(node, yaml.ScalarNode) else ""
        self._count(node, 1, len(value) + 2)
        self._weights[id(node)] = (self._nodes - nodes, self._bytes - size)
        return node

    def _weigh(self, root: yaml.Node) -> None:
        """Count a node tree libyaml's composer built, as :meth:`compose_node` counts while
        composing: in document order, each node once where it is written and again at each
        alias (the tree shares the node), so nothing is expanded. Iterative: depth is bounded
        by the limit, not by the stack."""
        self._weights.clear()
        in_progress: set[int] = set()
        # (node, its children left to count, the counts when it was entered)
        stack: list[tuple[yaml.Node, Iterator[yaml.Node], int, int]] = []
        self._enter(root, stack, in_progress)
        while stack:
            node, children, nodes, size = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                in_progress.discard(id(node))
                value = node.value if isinstance(node, yaml.ScalarNode) else ""
                self._count(node, 1, len(value) + 2)
                self._weights[id(node)] = (self._nodes - nodes, self._bytes - size)
                continue
            weight = self._weights.get(id(child))
            if weight is None and type(child) is yaml.ScalarNode:  # most nodes: no stack trip
                self._check_depth(child, len(stack) + 1)
                self._count(child, 1, len(child.value) + 2)
                self._weights[id(child)] = (1, len(child.value) + 2)
            elif weight is not None:  # a finished node met again: an alias
                self._aliases += 1
                if self._aliases > self._limits.max_aliases:
                    raise self._refused(
                        node,
                        f"uses more than {self._limits.max_aliases} YAML aliases",
                        "max_aliases",
                        "spell the repeated parts out, or use fewer aliases",
                    )
                self._count(node, *weight)
            elif id(child) in in_progress:
                raise self._refused(
                    child,
                    "refers to an anchor inside itself (a cycle)",
                    "max_nodes",
                    "remove the alias, or point it at a finished node",
                )
            else:
                self._enter(child, stack, in_progress)

    def _enter(
        self,
        node: yaml.Node,
        stack: list[tuple[yaml.Node, Iterator[yaml.Node], int, int]],
        in_progress: set[int],
    ) -> None:
        self._check_depth(node, len(stack) + 1)
        if isinstance(node, yaml.MappingNode):
            children: Iterator[yaml.Node] = (item for pair in node.value for item in pair)
        elif isinstance(node, yaml.SequenceNode):
            children = iter(node.value)
        else:
            children = iter(())
        in_progress.add(id(node))
        stack.append((node, children, self._nodes, self._bytes))

    def _check_depth(self, node: yaml.Node, depth: int) -> None:
        if depth > self._limits.max_depth:
            raise self._refused(
                node,
                f"nests deeper than {self._limits.max_depth} levels",
                "max_depth",
                "flatten it",
            )

    def _count(self, at: Any, nodes: int, size: int) -> None:
        self._nodes += nodes
        self._bytes += size
        if self._nodes > self._limits.max_nodes:
            raise self._refused(
                at,
                f"expands to more than {self._limits.max_nodes} values",
                "max_nodes",
                "use fewer aliases or a smaller document",
            )
        if self._bytes > self._limits.max_bytes:
            raise self._refused(
                at,
                f"expands to more than {self._limits.max_bytes} bytes once its aliases are "
                f"written out ({self._limits.setting})",
                "max_bytes",
                "use fewer aliases, or raise the limit",
            )

    def _refused(self, at: Any, what: str, limit: str, fix: str) -> DocumentTooComplexError:
        mark = getattr(at, "start_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        return DocumentTooComplexError(
            f"the {self._where} {what}{line}: {fix}",
            problems=[(self._where, f"{what}{line}")],
            limit=limit,
            **{limit: getattr(self._limits, limit)},
        )


# libyaml's C parser and composer when PyYAML has them (the tree counted once composed, see
# BoundedLoader); else the pure-Python ones, under the composer that counts as it goes.
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _Parser(CParser):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)

else:  # pragma: no cover - PyYAML built without libyaml

    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, text: str) -> None:
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class BoundedLoader(_BoundedComposer, _Parser, _StringTimestamps, Resolver):
    """A YAML loader that counts nodes, depth and aliases as it composes (``limits``); its
    errors name ``where``. Shared with the Node-RED yaml node."""

    def __init__(self, text: str, limits: DocumentLimits, where: str) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        _StringTimestamps.__init__(self)
        Resolver.__init__(self)
        self._bind(limits, where)

    # The composer asks these of every node. PyYAML's resolver has no path resolvers (nor
    # wildcard ones), so a scalar's tag depends on its text alone: the general path's
    # bookkeeping is skipped.
    if not Resolver.yaml_path_resolvers and None not in Resolver.yaml_implicit_resolvers:

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            if kind is yaml.ScalarNode:
                if implicit[0]:
                    for tag, pattern in self.yaml_implicit_resolvers.get(value[:1], ()):
                        if pattern.match(value):
                            return tag
                return self.DEFAULT_SCALAR_TAG
            return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            return None

        def ascend_resolver(self) -> None:
            return None

    if yaml.__with_libyaml__:
        # libyaml's composer too: the Python one took most of the time of reading a large
        # workflow file. It shares an aliased node rather than copying it, so its tree is no
        # larger than the text; it is counted (:meth:`_weigh`) before anything is constructed.

        def check_node(self) -> bool:
            return bool(CParser.check_node(self))

        def get_node(self) -> Any:
            node = CParser.get_node(self)
            if node is not None:
                self._weigh(node)
            return node
