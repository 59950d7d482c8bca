"""The ``html`` node: the elements a CSS selector picks from an HTML text, as Node-RED 4 does it
with cheerio (1.0.0-rc.10: the HTML5 parsing algorithm, css-select).

The text at ``property`` is parsed as an HTML5 document (html5lib, as parse5 does) and the
selector (``tag``, else ``msg.select``) picks elements in document order (soupsieve). For each,
``ret`` gives its inner HTML re-serialized as XML (``html``), its text (``text``), its attributes
(``attr``) or its attributes plus its inner HTML under ``chr`` (``compl``); ``as: single`` sends
them as one array at ``outproperty``, ``as: multi`` one message each, as a sequence
(``msg.parts``) a join can put together again.

Bounded: the text is at most :data:`MAX_HTML_CHARS` characters and its elements nest at most
:data:`MAX_HTML_DEPTH` deep. Selectors only cheerio's jQuery extensions understand (``:eq()``,
``:first``...) fail naming the node; so does a selector that is HTML (``<p>``), which cheerio
would build elements from.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping
from typing import Any

import soupsieve
from bs4 import BeautifulSoup
from bs4.element import (
    CData,
    Comment,
    Declaration,
    Doctype,
    NavigableString,
    ProcessingInstruction,
    Tag,
)

from nodered_semantics.js import UNDEFINED
from services.nodered.common import Sent, node_error, property_text, read_property, write_property
from services.nodered.js_text import js_ordered_keys

__all__ = ["MAX_HTML_CHARS", "MAX_HTML_DEPTH", "HtmlNodeError", "html_select", "run_html"]

MAX_HTML_CHARS = 1_048_576
"""The longest HTML text the node parses."""
MAX_HTML_DEPTH = 400
"""How deep elements may nest in a text the node parses."""


class HtmlNodeError(ValueError):
    """Why the node cannot answer as cheerio would."""


def run_html(node: Mapping[str, Any], msg: dict[str, Any]) -> Sent:
    prop = property_text(node.get("property"))
    out_prop = property_text(node.get("outproperty") or node.get("property"))
    ret = node.get("ret") or "html"
    mode = node.get("as") or "single"
    chr_key = str(node.get("chr") or "_")
    value = read_property(node, msg, prop)
    if value is UNDEFINED:
        return [(0, msg)]
    tag = node.get("tag")
    if "select" in msg:
        tag = tag or msg["select"]
    try:
        found = html_select(value, tag, ret, chr_key)
    except HtmlNodeError as exc:
        raise node_error(node, str(exc)) from exc
    if mode == "multi":
        sent: Sent = []
        for index, item in enumerate(found):
            if item in ("", None):  # cheerio's node sends nothing for an empty result
                continue
            out = copy.deepcopy(msg)
            write_property(node, out, out_prop, item)
            out["parts"] = {
                "id": msg.get("_msgid"),
                "index": index,
                "count": len(found),
                "type": "string",
                "ch": "",
            }
            sent.append((0, out))
        return sent
    if mode != "single":
        return []  # Node-RED sends nothing for an unknown "as"
    write_property(node, msg, out_prop, found)
    return [(0, msg)]


def html_select(value: Any, selector: Any, ret: str, chr_key: str = "_") -> list[Any]:
    """What cheerio's html node collects for each element ``selector`` picks in ``value``.

    Raises:
        HtmlNodeError: not a string, too large or deep, a selector cheerio reads otherwise, or
            what cheerio would throw for an element (an empty element in ``html`` mode).
    """
    if not isinstance(value, str):
        raise HtmlNodeError("only a string property is parsed as HTML on the step engine")
    if len(value) > MAX_HTML_CHARS:
        raise HtmlNodeError(f"the HTML text is longer than {MAX_HTML_CHARS} characters")
    if selector in (None, "", UNDEFINED, False, 0):
        return []  # $(undefined) selects nothing
    if not isinstance(selector, str):
        raise HtmlNodeError(f"the selector {selector!r} is not a string")
    if re.match(r"^\s*<", selector):
        raise HtmlNodeError(
            f"the selector {selector!r} is HTML, which cheerio would make elements from"
        )
    if _TEMPLATE.search(value):
        raise HtmlNodeError(
            "the HTML text holds a template element, whose contents the step engine's parser "
            "does not keep apart as cheerio's does"
        )
    soup = _parse(value)
    _check_depth(soup)
    elements = _select(selector, soup)
    found: list[Any] = []
    for el in elements:
        if ret == "text":
            found.append(_text(el))
        elif ret == "attr":
            found.append(dict(js_ordered_keys(_attrs(el))))
        elif ret in ("html", "compl"):
            inner = _js_trim(_html(el.contents))
            if ret == "html":
                if el.name in _RAW_TEXT and _html_namespace(el):  # its text is parsed as HTML
                    found.append(_as_xml(_parse("<body>" + inner).body.contents))  # type: ignore[union-attr]
                else:
                    found.append(_as_xml(el.contents))
            else:
                found.append(js_ordered_keys({chr_key: inner, **_attrs(el)}))
        else:
            found.append(None)  # an unknown "ret" collects nothing
    return found


def _parse(text: str) -> BeautifulSoup:
    return BeautifulSoup(text, "html5lib", multi_valued_attributes=None)


def _check_depth(soup: BeautifulSoup) -> None:
    stack: list[tuple[Tag, int]] = [(soup, 0)]
    while stack:
        el, depth = stack.pop()
        if depth > MAX_HTML_DEPTH:
            raise HtmlNodeError(f"the HTML text nests elements deeper than {MAX_HTML_DEPTH} levels")
        stack.extend((c, depth + 1) for c in el.contents if isinstance(c, Tag))


def _attrs(el: Tag) -> dict[str, str]:
    return {str(k): str(v) for k, v in el.attrs.items()}


_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_JS_TRIM = re.compile(f"^[{_JS_SPACE}]+|[{_JS_SPACE}]+$")


def _js_trim(text: str) -> str:
    return _JS_TRIM.sub("", text)


def _is_text(node: Any) -> bool:
    return isinstance(node, NavigableString) and not isinstance(
        node, Comment | Doctype | Declaration | ProcessingInstruction | CData
    )


def _text(el: Tag) -> str:
    """cheerio's ``text()``: the text of every descendant, but not of comments, scripts and
    styles (nor of the element itself when it is one)."""
    out: list[str] = []
    stack: list[Any] = [el]
    while stack:
        node = stack.pop()
        if _is_text(node):
            out.append(str(node))
        elif isinstance(node, Tag) and node.name not in ("script", "style"):
            stack.extend(reversed(node.contents))
    return "".join(out)


# --- parse5's HTML serializer (cheerio's html()) -------------------------------------------------

_VOID = frozenset(
    [
        "area",
        "base",
        "basefont",
        "bgsound",
        "br",
        "col",
        "embed",
        "frame",
        "hr",
        "img",
        "input",
        "keygen",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_RAW_TEXT = frozenset(
    "style script xmp iframe noembed noframes plaintext noscript".split()  # noqa: SIM905
)


def _escape_text(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("\u00a0", "&nbsp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def _escape_attr(text: str) -> str:
    return text.replace("&", "&amp;").replace("\u00a0", "&nbsp;").replace('"', "&quot;")


def _html(nodes: list[Any]) -> str:
    """parse5's ``serializeOuter`` of each node (the inner HTML of their parent)."""
    out: list[str] = []
    for node in nodes:
        _html_node(node, out)
    return "".join(out)


def _html_node(node: Any, out: list[str]) -> None:
    if isinstance(node, Tag):
        name = node.name
        out.append("<" + name)
        for key, value in js_ordered_keys(_attrs(node)).items():
            out.append(f' {key}="{_escape_attr(value)}"')
        out.append(">")
        if name in _VOID and _html_namespace(node):
            return
        for child in node.contents:
            _html_node(child, out)
        out.append(f"</{name}>")
    elif isinstance(node, Comment):
        out.append(f"<!--{node}-->")
    elif isinstance(node, Doctype):
        out.append(f"<!DOCTYPE {node}>")
    elif isinstance(node, NavigableString):
        parent = node.parent
        if parent is not None and parent.name in _RAW_TEXT:  # parse5 looks at the name only
            out.append(str(node))
        else:
            out.append(_escape_text(str(node)))


def _html_namespace(el: Tag) -> bool:
    return el.namespace in (None, "http://www.w3.org/1999/xhtml")


# --- cheerio.load(html, null, false).xml(): a fragment, written as XML --------------------------

_TEMPLATE = re.compile(r"<template[\s/>]", re.IGNORECASE)
_POSITIONAL = re.compile(
    r"^(.*?):(first|last|even|odd|eq|gt|lt|nth)(?:\(\s*(\d+)\s*\))?\s*$", re.DOTALL
)


def _select(selector: str, soup: BeautifulSoup) -> list[Tag]:
    """css-select's matches, in document order; a trailing jQuery position filter (``:first``,
    ``:last``, ``:eq(n)``, ``:gt(n)``, ``:lt(n)``, ``:even``, ``:odd``) as cheerio applies it,
    to everything the rest of the selector matches."""
    position = _POSITIONAL.match(selector) if "," not in selector else None
    base = position.group(1).strip() or "*" if position else selector
    try:
        with warnings.catch_warnings():  # :contains() is cheerio's name for :-soup-contains()
            warnings.simplefilter("ignore", FutureWarning)
            elements = list(soupsieve.select(base, soup))
    except soupsieve.SelectorSyntaxError as exc:
        raise HtmlNodeError(f"the CSS selector {selector!r} is not supported: {exc}") from exc
    if position is None:
        return elements
    name, number = position.group(2), position.group(3)
    if name in ("eq", "gt", "lt", "nth") and number is None:
        raise HtmlNodeError(f"the CSS selector {selector!r} is not supported: :{name} needs (n)")
    n = int(number or 0)
    if name == "first":
        return elements[:1]
    if name == "last":
        return elements[-1:]
    if name == "even":
        return elements[0::2]
    if name == "odd":
        return elements[1::2]
    if name in ("eq", "nth"):
        return elements[n : n + 1]
    if name == "gt":
        return elements[n + 1 :]
    return elements[:n]


_FLATTENED = frozenset({"html", "head", "body"})
_LEADING_NEWLINE = frozenset({"pre", "textarea", "listing"})
_TRIMMED = _JS_SPACE.replace("\u00a0", "")  # written as &nbsp;, so never trimmed


def _as_xml(contents: list[Any]) -> str:
    """``cheerio.load(html().trim(), null, false).xml()``: the inner HTML, trimmed, parsed again
    as a fragment (in a template, as parse5 does) and written in dom-serializer's XML mode
    (every element closed, ``<br/>``; ``&<>"'`` and every non-ASCII character encoded).

    A tree an HTML5 parser built parses back to itself, but for what the second parse drops:
    ``html``/``head``/``body`` tags (their contents stay), the first line break of a ``pre``,
    and the whitespace the trim removed; those are dropped here, without a second parse."""
    nodes = list(contents)
    texts = [str(n) if _is_text(n) else None for n in nodes]
    while texts and texts[0] is not None:
        texts[0] = re.sub(f"^[{_TRIMMED}]+", "", texts[0])
        if texts[0]:
            break
        nodes.pop(0)
        texts.pop(0)
    while texts and texts[-1] is not None:
        texts[-1] = re.sub(f"[{_TRIMMED}]+$", "", texts[-1])
        if texts[-1]:
            break
        nodes.pop()
        texts.pop()
    out: list[str] = []
    for node, text in zip(nodes, texts, strict=True):
        if text is not None:
            out.append(_encode_xml(text))
        elif isinstance(node, Tag) and node.name in _FLATTENED and _html_namespace(node):
            for child in _flat(node.contents):
                _xml_node(child, out, foreign=False)
        else:
            _xml_node(node, out, foreign=False)
    return "".join(out)


def _flat(contents: list[Any]) -> list[Any]:
    nodes: list[Any] = []
    for node in contents:
        _flatten(node, nodes)
    return nodes


def _flatten(node: Any, into: list[Any]) -> None:
    if isinstance(node, Tag) and node.name in _FLATTENED and _html_namespace(node):
        for child in node.contents:
            _flatten(child, into)
    else:
        into.append(node)


_XML_NAMED = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}
_XML_ESCAPE = re.compile("[&<>\"'\u0080-\U0010ffff]")


def _encode_xml(text: str) -> str:
    return _XML_ESCAPE.sub(lambda m: _XML_NAMED.get(m.group()) or f"&#x{ord(m.group()):X};", text)


# HTML elements the parser treats specially (tables, lists, raw text, void elements, ...): an
# SVG or MathML element of one of these names, parsed again as HTML, may be rebuilt otherwise.
_REPARSED_OTHERWISE = frozenset(
    [
        "a",
        "address",
        "applet",
        "area",
        "article",
        "aside",
        "b",
        "base",
        "basefont",
        "bgsound",
        "big",
        "blockquote",
        "body",
        "br",
        "button",
        "caption",
        "center",
        "code",
        "col",
        "colgroup",
        "dd",
        "details",
        "dialog",
        "dir",
        "div",
        "dl",
        "dt",
        "em",
        "embed",
        "fieldset",
        "figcaption",
        "figure",
        "font",
        "footer",
        "form",
        "frame",
        "frameset",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "head",
        "header",
        "hgroup",
        "hr",
        "html",
        "i",
        "iframe",
        "image",
        "img",
        "input",
        "keygen",
        "li",
        "link",
        "listing",
        "main",
        "marquee",
        "menu",
        "meta",
        "nav",
        "nobr",
        "noembed",
        "noframes",
        "noscript",
        "object",
        "ol",
        "optgroup",
        "option",
        "p",
        "param",
        "plaintext",
        "pre",
        "rb",
        "rp",
        "rt",
        "rtc",
        "ruby",
        "s",
        "script",
        "search",
        "section",
        "select",
        "small",
        "source",
        "span",
        "strike",
        "strong",
        "style",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "template",
        "textarea",
        "tfoot",
        "th",
        "thead",
        "title",
        "tr",
        "track",
        "tt",
        "u",
        "ul",
        "var",
        "wbr",
        "xmp",
    ]
)


def _xml_node(node: Any, out: list[str], *, foreign: bool) -> None:
    """One node of the fragment; ``foreign``: within an ``svg`` or ``math`` element of the
    fragment, where names keep their case (elsewhere the second parse reads them as HTML)."""
    if isinstance(node, Tag):
        if not foreign and not _html_namespace(node) and node.name.lower() in _REPARSED_OTHERWISE:
            raise HtmlNodeError(
                f"the selected element holds an SVG or MathML <{node.name}>, which cheerio parses "
                "again as HTML in a way the step engine does not reproduce"
            )
        inside = foreign or node.name in ("svg", "math")
        name = node.name if inside else node.name.lower()
        out.append("<" + name)
        for key, value in js_ordered_keys(_attrs(node)).items():
            out.append(f' {key if inside else key.lower()}="{_encode_xml(value)}"')
        if not node.contents:
            out.append("/>")
            return
        out.append(">")
        children = _flat(node.contents)
        for i, child in enumerate(children):
            if i == 0 and name in _LEADING_NEWLINE and not foreign and _is_text(child):
                text = str(child).removeprefix("\n")
                out.append(_encode_xml(text))
            else:
                _xml_node(child, out, foreign=inside)
        out.append(f"</{name}>")
    elif isinstance(node, Comment):
        out.append(f"<!--{node}-->")
    elif isinstance(node, Doctype):
        pass  # a fragment parse drops a doctype
    elif _is_text(node):
        out.append(_encode_xml(str(node)))
