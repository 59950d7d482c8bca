"""The ``xml`` node: XML text <-> object, as Node-RED 4 does it with xml2js 0.6.

A string at the node's property is parsed as xml2js's ``parseString`` does (elements become
objects, repeated children arrays, attributes under the ``attr`` key, text under the ``chr``
key); an object (or array) is written as xml2js's ``Builder`` does (its single key names the
root element, else ``root``; no indentation unless ``msg.options`` asks for it). ``msg.options``
replaces the defaults, as on Node-RED, and the node writes into it what Node-RED writes
(``async``, and ``attrkey``/``charkey`` when parsing).

Parsing is bounded and safe: the text is at most :data:`MAX_XML_BYTES`, elements nest at most
:data:`MAX_XML_DEPTH` deep, and a document that declares entities is refused (no entity or
DTD is ever expanded, so no "billion laughs"; Node-RED's parser expands none either).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.sax import SAXParseException
from xml.sax.handler import ContentHandler, feature_external_ges, property_lexical_handler

from defusedxml import DefusedXmlException
from defusedxml.expatreader import create_parser

from nodered_semantics.js import UNDEFINED, js_string
from services.nodered.common import Sent, node_error, property_text, read_property, write_property
from services.nodered.js_text import js_number_text, js_ordered_keys

__all__ = ["MAX_XML_BYTES", "MAX_XML_DEPTH", "XmlNodeError", "build_xml", "parse_xml", "run_xml"]

MAX_XML_BYTES = 1_048_576
"""The largest XML text the node parses (characters)."""
MAX_XML_DEPTH = 100
"""How deep elements may nest in a text the node parses, and in an object it writes."""


class XmlNodeError(ValueError):
    """Why a text cannot be parsed, or an object written, as xml2js would."""


def run_xml(node: Mapping[str, Any], msg: dict[str, Any]) -> Sent:
    prop = property_text(node.get("property"))
    value = read_property(node, msg, prop)
    if value is UNDEFINED:
        return [(0, msg)]
    given = msg.get("options")
    own = isinstance(given, dict)  # Node-RED uses (and changes) msg.options itself
    if "options" in msg and given is None and isinstance(value, dict | list | str):
        # typeof null is "object": Node-RED takes it as the options and fails setting them
        raise node_error(node, "TypeError: Cannot set properties of null (setting 'async')")
    if isinstance(value, dict | list) or value is None:
        options: dict[str, Any] = given if own else {"renderOpts": {"pretty": False}}  # type: ignore[assignment]
        options["async"] = False
        if value is None:
            raise node_error(node, "TypeError: Cannot convert undefined or null to object")
        try:
            text = build_xml(value, options)
        except XmlNodeError as exc:
            raise node_error(node, str(exc)) from exc
        write_property(node, msg, prop, text)
        return [(0, msg)]
    if isinstance(value, str):
        options = given if own else {}  # type: ignore[assignment]
        options["async"] = True
        options["attrkey"] = _text_option(node.get("attr")) or options.get("attrkey") or "$"
        options["charkey"] = _text_option(node.get("chr")) or options.get("charkey") or "_"
        try:
            result = parse_xml(value, options)
        except XmlNodeError as exc:
            raise node_error(node, str(exc)) from exc
        write_property(node, msg, prop, result)
        return [(0, msg)]
    # Node-RED warns ("XML parse error": not a string or object) and sends nothing.
    return []


def _text_option(value: Any) -> Any:
    return value if value not in (None, "", False, 0) else None


# --- parse: xml2js's Parser with its "0.2" defaults -------------------------------------------

_PARSE_DEFAULTS: dict[str, Any] = {
    "explicitCharkey": False,
    "trim": False,
    "normalize": False,
    "normalizeTags": False,
    "attrkey": "$",
    "charkey": "_",
    "explicitArray": True,
    "ignoreAttrs": False,
    "mergeAttrs": False,
    "explicitRoot": True,
    "emptyTag": "",
    "strict": True,
}
# Options whose non-default values change the result in ways not reproduced here.
_PARSE_UNSUPPORTED = {
    "xmlns": False,
    "explicitChildren": False,
    "preserveChildrenOrder": False,
    "charsAsChildren": False,
    "validator": None,
    "attrNameProcessors": None,
    "attrValueProcessors": None,
    "tagNameProcessors": None,
    "valueProcessors": None,
}


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", UNDEFINED) and not (
        isinstance(value, float) and value != value
    )


def parse_xml(text: str, options: Mapping[str, Any] | None = None) -> Any:
    """``xml2js.parseString(text, options)``'s result (None for a blank text).

    Raises:
        XmlNodeError: the text is not well-formed XML, declares entities, passes a bound, or
            ``options`` asks for what is not reproduced here.
    """
    opts = dict(_PARSE_DEFAULTS)
    opts.update(options or {})
    for key, default in _PARSE_UNSUPPORTED.items():
        if key in opts and opts[key] != default and _truthy(opts[key]):
            raise XmlNodeError(f"the xml2js option {key!r} is not supported on the step engine")
    if opts.get("strict") is not True and not _truthy(opts.get("strict")) and "strict" in opts:
        raise XmlNodeError(
            "non-strict XML parsing (strict: false) is not supported on the step engine"
        )
    if len(text) > MAX_XML_BYTES:
        raise XmlNodeError(f"the XML text is longer than {MAX_XML_BYTES} characters")
    if text.strip() == "":
        return None
    text = text.removeprefix("\ufeff")
    if "\r" in text or _SPACED_ATTRIBUTE.search(text):
        # expat normalizes these (line ends to \n, tabs and line ends in attribute values to
        # spaces) as XML says to; the sax parser of xml2js keeps them as written.
        raise XmlNodeError(
            "the XML text has carriage returns, or tabs or line breaks in attribute values, "
            "which Node-RED's parser keeps as written and the step engine's would normalize; "
            "run this flow on the nodered engine"
        )
    if re.search(r"<!ATTLIST", text):
        raise XmlNodeError(
            "the XML text declares attribute defaults (<!ATTLIST>), which the step engine's "
            "parser would apply and Node-RED's ignores; run this flow on the nodered engine"
        )
    handler = _Builder(opts)
    # A DTD is read but nothing in it is expanded or fetched: entity declarations are refused,
    # an external subset is never loaded (external_ges off), and a reference to an entity it
    # might have declared fails (skippedEntity), as Node-RED's parser fails on it.
    reader = create_parser(forbid_dtd=False, forbid_entities=True, forbid_external=False)
    reader.setFeature(feature_external_ges, False)
    reader.setContentHandler(handler)
    reader.setProperty(property_lexical_handler, handler)
    try:
        reader.feed(text)
        reader.close()
    except _DoneError:
        pass
    except SAXParseException as exc:
        raise XmlNodeError(
            f"{exc.getMessage()}\nLine: {exc.getLineNumber()}\nColumn: {exc.getColumnNumber()}"
        ) from exc
    except DefusedXmlException as exc:
        raise XmlNodeError(f"the XML text declares entities, which are refused: {exc!r}") from exc
    return handler.result


_SPACED_ATTRIBUTE = re.compile(r"""=\s*(?:"[^"<]*[\t\n][^"<]*"|'[^'<]*[\t\n][^'<]*')""")


class _DoneError(Exception):
    """The root element closed: xml2js reports its result then."""


class _Builder(ContentHandler):
    """xml2js's sax callbacks (``onopentag``, ``onclosetag``, ``ontext``, ``oncdata``)."""

    def __init__(self, opts: dict[str, Any]) -> None:
        super().__init__()
        self.o = opts
        self.attrkey = js_string(opts["attrkey"])
        self.charkey = js_string(opts["charkey"])
        self.stack: list[tuple[str, dict[str, Any]]] = []
        self.result: Any = None
        self.in_cdata = False

    # lexical handler
    def startCDATA(self) -> None:  # noqa: N802 - the SAX interface
        self.in_cdata = True
        if self.stack:
            self.stack[-1][1]["\0cdata"] = True

    def endCDATA(self) -> None:  # noqa: N802
        self.in_cdata = False

    def comment(self, content: str) -> None:
        return None

    def startDTD(self, name: str, public_id: str, system_id: str) -> None:  # noqa: N802
        return None

    def endDTD(self) -> None:  # noqa: N802
        return None

    def startEntity(self, name: str) -> None:  # noqa: N802
        return None

    def endEntity(self, name: str) -> None:  # noqa: N802
        return None

    def skippedEntity(self, name: str) -> None:  # noqa: N802
        raise XmlNodeError(f"Invalid character entity &{name};")

    def startElement(self, name: str, attrs: Any) -> None:  # noqa: N802
        if len(self.stack) >= MAX_XML_DEPTH:
            raise XmlNodeError(f"the XML text nests elements deeper than {MAX_XML_DEPTH} levels")
        obj: dict[str, Any] = {self.charkey: ""}
        if not _truthy(self.o.get("ignoreAttrs")):
            merge = _truthy(self.o.get("mergeAttrs"))
            for key in attrs.getNames():
                if not merge:
                    obj.setdefault(self.attrkey, {})[key] = attrs.getValue(key)
                else:
                    self._assign_or_push(obj, key, attrs.getValue(key))
        if _truthy(self.o.get("normalizeTags")):
            name = name.lower()
        self.stack.append((name, obj))

    def characters(self, content: str) -> None:
        if self.stack:
            obj = self.stack[-1][1]
            obj[self.charkey] = js_string(obj.get(self.charkey, "")) + content

    def endElement(self, name: str) -> None:  # noqa: N802
        node_name, obj = self.stack.pop()
        cdata = obj.pop("\0cdata", False)
        charkey = self.charkey
        empty_text: Any = UNDEFINED
        chars = obj.get(charkey)
        value: Any = obj
        if isinstance(chars, str) and re.fullmatch(r"\s*", chars) and not cdata:
            empty_text = obj.pop(charkey)
        else:
            if _truthy(self.o.get("trim")):
                obj[charkey] = js_string(chars).strip()
            if _truthy(self.o.get("normalize")):
                obj[charkey] = re.sub(r"\s{2,}", " ", js_string(obj[charkey])).strip()
            if len(obj) == 1 and charkey in obj and not _truthy(self.o.get("explicitCharkey")):
                value = obj[charkey]
        if isinstance(value, dict) and not value:
            empty_tag = self.o.get("emptyTag", "")
            value = empty_tag if empty_tag != "" else empty_text
            if value is UNDEFINED:  # an attribute-less element whose text was removed
                value = ""
        if self.stack:
            self._assign_or_push(self.stack[-1][1], node_name, value)
            return
        if _truthy(self.o.get("explicitRoot")):
            value = {node_name: value}
        self.result = value
        raise _DoneError

    def _assign_or_push(self, obj: dict[str, Any], key: str, value: Any) -> None:
        if key not in obj:
            obj[key] = [value] if _truthy(self.o.get("explicitArray")) else value
            return
        if not isinstance(obj[key], list):
            obj[key] = [obj[key]]
        obj[key].append(value)


# --- build: xml2js's Builder over xmlbuilder 11 -----------------------------------------------

_BUILD_DEFAULTS: dict[str, Any] = {
    "attrkey": "$",
    "charkey": "_",
    "rootName": "root",
    "xmldec": {"version": "1.0", "encoding": "UTF-8", "standalone": True},
    "doctype": None,
    "renderOpts": {"pretty": True, "indent": "  ", "newline": "\n"},
    "headless": False,
    "cdata": False,
}
_DECORATORS = ("#text", "#cdata", "#comment", "#raw", "?")
_NAME = re.compile(
    "^([:A-Z_a-z\xc0-\xd6\xd8-\xf6\xf8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff])"
    "([\\-.0-:A-Z_a-z\xb7\xc0-\xd6\xd8-\xf6\xf8-\u037d\u037f-\u1fff\u200c\u200d\u203f\u2040"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff])*$"
)
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


class _Element:
    __slots__ = ("attribs", "children", "name")

    def __init__(self, name: str) -> None:
        self.name = _name(name)
        self.attribs: dict[str, str] = {}
        # ("el", _Element) | ("text", str) | ("raw", str)
        self.children: list[tuple[str, Any]] = []

    def ele(self, name: str, text: Any = UNDEFINED) -> _Element:
        if name.startswith(_DECORATORS):
            raise XmlNodeError(
                f"the key {name!r} is an xmlbuilder decorator (text, CDATA, comment, raw or "
                "processing instruction), which the step engine does not write"
            )
        child = _Element(name)
        self.children.append(("el", child))
        if text is not UNDEFINED and text is not None:
            child.txt(text)
        return child

    def txt(self, value: Any) -> None:
        if value is None or value is UNDEFINED:
            raise XmlNodeError("Missing element text.")
        self.children.append(("text", _legal(_text_escape(_js_text(value)))))

    def raw(self, value: str) -> None:
        self.children.append(("raw", value))

    def att(self, name: str, value: Any) -> None:
        if value is None:
            return
        self.attribs[_name(name)] = _legal(_att_escape(_js_text(value)))


def _js_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number_text(value)
    return js_string(value)


def _name(name: str) -> str:
    _legal(name)
    if not _NAME.match(name):
        raise XmlNodeError("Invalid character in name")
    return name


def _legal(text: str) -> str:
    found = _ILLEGAL.search(text)
    if found is not None:
        raise XmlNodeError(f"Invalid character in string: {text} at index {found.start()}")
    return text


def _text_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")
    )


def _att_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace('"', "&quot;")
        .replace("\t", "&#x9;")
        .replace("\n", "&#xA;")
        .replace("\r", "&#xD;")
    )


def _requires_cdata(entry: Any) -> bool:
    return isinstance(entry, str) and any(c in entry for c in "&<>")


def _wrap_cdata(entry: str) -> str:
    return "<![CDATA[" + entry.replace("]]>", "]]]]><![CDATA[>", 1) + "]]>"


def build_xml(value: Any, options: Mapping[str, Any] | None = None) -> str:
    """``new xml2js.Builder(options).buildObject(value)``.

    Raises:
        XmlNodeError: a name or text XML cannot hold, a decorator key, or nesting deeper than
            :data:`MAX_XML_DEPTH`.
    """
    opts = dict(_BUILD_DEFAULTS)
    opts.update(options or {})
    if opts.get("doctype") is not None:
        raise XmlNodeError("the xml2js option 'doctype' is not supported on the step engine")
    attrkey, charkey = js_string(opts["attrkey"]), js_string(opts["charkey"])
    cdata = _truthy(opts.get("cdata"))
    root_obj: Any = value
    keys = (
        list(js_ordered_keys(value))
        if isinstance(value, dict)
        else [str(i) for i in range(len(value))]
    )
    if len(keys) == 1 and opts.get("rootName") == "root":
        root_name = keys[0]
        root_obj = value[root_name] if isinstance(value, dict) else value[0]
    else:
        root_name = js_string(opts.get("rootName"))

    def render(element: _Element, obj: Any, depth: int) -> None:
        if depth > MAX_XML_DEPTH:
            raise XmlNodeError(f"the object nests deeper than {MAX_XML_DEPTH} levels")
        if not isinstance(obj, dict | list) and obj is not None:
            if cdata and _requires_cdata(obj):
                element.raw(_wrap_cdata(obj))
            else:
                element.txt(obj)
        elif isinstance(obj, list):
            for child in obj:
                for key, entry in _for_in(child):
                    render(element.ele(key), entry, depth + 1)
        elif isinstance(obj, dict):
            for key, child in js_ordered_keys(obj).items():
                if key == attrkey:
                    if isinstance(child, dict | list) or child is None:
                        for attr, attr_value in _for_in(child):
                            element.att(attr, attr_value)
                elif key == charkey:
                    if cdata and _requires_cdata(child):
                        element.raw(_wrap_cdata(child))
                    else:
                        element.txt(js_string(child) if isinstance(child, dict | list) else child)
                elif isinstance(child, list):
                    for entry in child:
                        if isinstance(entry, str):
                            if cdata and _requires_cdata(entry):
                                element.ele(key).raw(_wrap_cdata(entry))
                            else:
                                element.ele(key, entry)
                        else:
                            render(element.ele(key), entry, depth + 1)
                elif isinstance(child, dict) or child is None:
                    render(element.ele(key), child, depth + 1)
                elif isinstance(child, str) and cdata and _requires_cdata(child):
                    element.ele(key).raw(_wrap_cdata(child))
                else:
                    element.ele(key, _js_text(child))

    root = _Element(root_name)
    render(root, root_obj, 1)
    render_opts = opts.get("renderOpts")
    ropts = render_opts if isinstance(render_opts, dict) else {}
    pretty = _truthy(ropts.get("pretty"))
    indent = js_string(ropts["indent"]) if ropts.get("indent") is not None else "  "
    newline = js_string(ropts["newline"]) if ropts.get("newline") is not None else "\n"
    allow_empty = _truthy(ropts.get("allowEmpty"))
    space = ropts.get("spaceBeforeSlash", ropts.get("spacebeforeslash"))
    before_slash = " " if space is True else js_string(space) if space not in (None, False) else ""
    out: list[str] = []
    end = newline if pretty else ""
    if not _truthy(opts.get("headless")):
        out.append(_declaration(opts.get("xmldec"), before_slash) + end)
    _write(root, 0, out, pretty, indent, end, allow_empty, before_slash)
    text = "".join(out)
    if pretty and newline and text.endswith(newline):
        text = text[: -len(newline)]
    return text


def _for_in(value: Any) -> list[tuple[str, Any]]:
    """``for (key in value)``: an object's keys, an array's or a string's indexes."""
    if isinstance(value, dict):
        return list(js_ordered_keys(value).items())
    if isinstance(value, list | str):
        return [(str(i), v) for i, v in enumerate(value)]
    return []


def _declaration(xmldec: Any, before_slash: str) -> str:
    dec = xmldec if isinstance(xmldec, dict) else {}
    version = dec.get("version")
    version = _js_text(version) if _truthy(version) else "1.0"
    if not re.search(r"1\.[0-9]+", version):
        raise XmlNodeError(f"Invalid version number: {version}")
    text = f'<?xml version="{version}"'
    if dec.get("encoding") is not None:
        encoding = _js_text(dec["encoding"])
        if not re.match(r"^[A-Za-z](?:[A-Za-z0-9._-])*$", encoding):
            raise XmlNodeError(f"Invalid encoding: {encoding}")
        text += f' encoding="{encoding}"'
    if dec.get("standalone") is not None:
        text += f' standalone="{"yes" if _truthy(dec["standalone"]) else "no"}"'
    return text + before_slash + "?>"


def _write(
    el: _Element,
    level: int,
    out: list[str],
    pretty: bool,
    indent: str,
    end: str,
    allow_empty: bool,
    before_slash: str,
) -> None:
    pad = indent * level if pretty else ""
    out.append(pad + "<" + el.name)
    out.extend(f' {name}="{value}"' for name, value in el.attribs.items())
    children = el.children
    if not children or all(kind != "el" and value == "" for kind, value in children):
        out.append(("></" + el.name + ">" if allow_empty else before_slash + "/>") + end)
        return
    if pretty and len(children) == 1 and children[0][0] != "el":
        out.append(">" + children[0][1] + "</" + el.name + ">" + end)
        return
    out.append(">" + end)
    for kind, value in children:
        if kind == "el":
            _write(value, level + 1, out, pretty, indent, end, allow_empty, before_slash)
        else:
            out.append((indent * (level + 1) if pretty else "") + value + end)
    out.append(pad + "</" + el.name + ">" + end)
