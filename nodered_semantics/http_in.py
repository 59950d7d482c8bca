"""A flow calling its own ``http in`` endpoints (Node-RED 4.1, ``21-httpin.js`` on Express 4):
which endpoint a request reaches, the message that endpoint sends, and what the ``http
response`` node answers.

An ``http request`` node whose URL is Node-RED itself (``http://localhost:1880/...``) reaches
the ``http in`` node of the flow whose route matches the method and path, as Express routes it:

* routes in the order Node-RED registers them (the flow's order), an ``http in`` ``get`` also
  answering ``HEAD``; paths as ``path-to-regexp`` 0.1.13 matches them (case-insensitive, a trailing
  slash optional, ``:name`` and ``:name?`` parameters, decoded); a route with other syntax
  (``*``, ``(regex)``) is refused (:func:`route_problem`);
* the message (:func:`http_in_msg`): ``{_msgid, req, res, payload}``; ``payload`` is
  ``req.query`` for ``get`` (its ``req.body`` ``{}``) and ``req.body`` for
  ``post``/``put``/``patch``/``delete``;
  ``req.query`` parsed as ``qs`` does (repeated names give arrays, ``a[]`` and ``a[b]``),
  ``req.body`` by its content type (JSON objects and arrays, form data, text); ``req.headers``
  with lower-case names (what the request node sent, and what got and Node.js add: ``host``,
  ``user-agent``, ``connection``, ``content-length``);
* the answer (:func:`http_response_result`): the ``http response`` node's status (its own, else
  ``msg.statusCode``, else 200), its headers then ``msg.headers`` (not an earlier request's
  response headers), and ``msg.payload`` as Express sends it (an object or array as JSON, other
  values as text, ``text/html`` by default), with Express's ``content-length`` and weak
  ``etag`` (Node-RED turns ``x-powered-by`` off); not ``date`` nor ``connection``, which vary.

``msg.res`` carries what the answer needs (:data:`RES_KEY`: the message the request node got,
its URL and ``ret``), as Node-RED's ``msg.res`` carries the connection: a flow that drops
``msg.res`` leaves the request unanswered on Node-RED, and fails the step here.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nodered_semantics.js import UNDEFINED, js_json, js_string
from nodered_semantics.typed_values import parse_json_text

__all__ = [
    "HTTP_ENDPOINT",
    "HTTP_IN_TYPE",
    "HTTP_RESPONSE_TYPE",
    "RES_KEY",
    "Endpoint",
    "HttpInError",
    "endpoint_for",
    "http_in_msg",
    "http_response_result",
    "is_node_red_itself",
    "parse_query",
    "route_problem",
    "self_path",
]

HTTP_IN_TYPE = "http in"
HTTP_RESPONSE_TYPE = "http response"
HTTP_ENDPOINT = "fluxo_http_in"
"""The key of an ``http request`` node's configuration, set by an import, naming the ``http
in`` node its fixed URL reaches (``{id, method, url}``), or why none can be chosen beforehand
(``{refused: reason}``)."""
RES_KEY = "fluxo_request"
"""The key in ``msg.res._res`` holding what the ``http response`` node needs to answer."""

_NODE_RED_ITSELF = re.compile(
    r"^(?:https?://)?(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\]):1880(?=/|\?|$)", re.IGNORECASE
)
# Node-RED's editor and Admin API answer these (httpAdminRoot "/", mounted before the flows').
_ADMIN_PATHS = (
    "auth",
    "flows",
    "flow",
    "nodes",
    "settings",
    "red",
    "vendor",
    "icons",
    "locales",
    "library",
    "context",
    "plugins",
    "theme",
    "diagnostics",
    "credentials",
    "inject",
    "debug",
    "favicon.ico",
)
_BODY_METHODS = ("post", "put", "patch", "delete")
_ROUTE_METHODS = ("get", *_BODY_METHODS)
_MAX_QUERY_PARAMS = 1000  # qs's parameterLimit
_MAX_BODY = 5 * 1024 * 1024  # Node-RED's apiMaxLength
_GOT_HEADERS = {"user-agent": "got (https://github.com/sindresorhus/got)"}


class HttpInError(ValueError):
    """The request cannot be answered as Node-RED answers it (the text says why)."""


def is_node_red_itself(url: str) -> bool:
    """Whether ``url`` names Node-RED on its own machine and default port."""
    return bool(_NODE_RED_ITSELF.match(url.strip()))


def self_path(url: str) -> tuple[str, str]:
    """The path and query string a URL of Node-RED itself asks for."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    return parts.path or "/", parts.query


def route_problem(url: Any) -> str | None:
    """Why an ``http in`` route cannot be matched here as Express matches it, or None."""
    if not isinstance(url, str) or not url:
        return "it has no URL"
    if re.search(r"[()*+\[\]{}|^$\\]", url):
        return f"its route {url!r} uses patterns (*, +, (regex)) the step engine does not match"
    return None


@dataclass(frozen=True)
class Endpoint:
    """An ``http in`` node as a route."""

    id: str
    method: str  # lower case, as the node stores it
    url: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The route's parameters when it answers ``method`` ``path``, else None."""
        wanted = method.lower()
        if not (self.method == wanted or (self.method == "get" and wanted == "head")):
            return None
        pattern, keys = _route_regex(self.url)
        found = pattern.match(path)
        if found is None:
            return None
        params: dict[str, str] = {}
        for key, value in zip(keys, found.groups(), strict=True):
            if value is not None:
                decoded = _decode_component(value)
                if decoded is None:
                    raise HttpInError(f"Failed to decode param '{value}'")
                params[key] = decoded
        return params


def _route_regex(url: str) -> tuple[re.Pattern[str], list[str]]:
    """``path-to-regexp`` 0.1.13 (Express 4.22) for a route without patterns (``*``,
    ``(regex)``): not strict, to the end, case-insensitive."""
    keys: list[str] = []
    backtrack, pos = "", 0

    def param(m: re.Match[str]) -> str:
        nonlocal backtrack, pos
        match = m.group(0)
        if match == ".":
            backtrack += "\\."
            pos += 1
            return "\\."
        slash, fmt, key, optional = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        if slash or fmt:
            backtrack = ""
        else:
            backtrack += url[pos : m.start()]
        pos = m.end()
        fmt = "\\." if fmt else ""
        capture = f"((?:(?!/|{backtrack}).)+?)" if backtrack else f"([^/{fmt}]+?)"
        keys.append(key)
        backtrack = ""
        return "(?:" + fmt + (slash or "") + capture + ")" + optional

    path = re.sub(r"(/)?(\.)?:(\w+)(\?)?|[.]", param, url, flags=re.ASCII)
    path += "?" if path.endswith("/") else "/?"
    return re.compile("^" + path + "$", re.IGNORECASE), keys


def endpoints_of(nodes: Sequence[Mapping[str, Any]]) -> list[Endpoint]:
    """The routes the flow's enabled ``http in`` nodes register, in the flow's order."""
    found = []
    for node in nodes:
        if node.get("type") != HTTP_IN_TYPE or node.get("d") is True:
            continue
        url, method = node.get("url"), str(node.get("method") or "get").lower()
        if not isinstance(url, str) or not url or method not in _ROUTE_METHODS:
            continue
        found.append(Endpoint(str(node["id"]), method, url if url.startswith("/") else "/" + url))
    return found


def endpoint_for(
    endpoints: Sequence[Endpoint], method: str, url: str
) -> tuple[Endpoint | None, str | None]:
    """The endpoint a request of Node-RED itself reaches, or None and why none can answer as
    Node-RED would (its editor or Admin API answers, or nothing does: a 404 page)."""
    path, _ = self_path(url)
    first = path.strip("/").split("/")[0].lower()
    if path == "/" or first in _ADMIN_PATHS:
        return None, f"{path} is a path of Node-RED's editor and Admin API"
    for endpoint in endpoints:
        problem = route_problem(endpoint.url)
        if problem is not None:
            return None, f"http in {endpoint.id}: {problem}"
        try:
            if endpoint.match(method, path) is not None:
                return endpoint, None
        except HttpInError as exc:
            return None, str(exc)
    return None, f"no http in node of the flow answers {method.upper()} {path}"


# --- the message the http in node sends ----------------------------------------------------------


def http_in_msg(
    endpoint: Endpoint, request: Mapping[str, Any], msg: Mapping[str, Any], ret: str
) -> dict[str, Any]:
    """The message ``endpoint`` sends for ``request`` (the ``http`` service request an ``http
    request`` node makes, see :func:`nodered_semantics.http_request.http_service_request`);
    ``msg`` is the message that node got and ``ret`` what it returns, kept in ``msg.res`` for
    the answer.

    Raises:
        HttpInError: the request does not reach ``endpoint``, or Express would refuse it
            before the flow sees it (a body that does not parse as its type says).
    """
    method = str(request.get("method") or "GET")
    url = str(request["url"])
    path, query_text = self_path(url)
    params = endpoint.match(method, path)
    if params is None:
        raise HttpInError(
            f"{method} {path} does not reach http in {endpoint.id} ({endpoint.method.upper()} "
            f"{endpoint.url}) at run time, which the import chose for this node"
        )
    headers = {str(k).lower(): js_string(v) for k, v in (request.get("headers") or {}).items()}
    body_text = request.get("body")
    req_headers = {"host": "localhost:1880", **_GOT_HEADERS, **headers}
    if isinstance(body_text, str):
        req_headers["content-length"] = str(len(body_text.encode()))
    req_headers.setdefault("connection", "keep-alive")  # Node 20: a keep-alive agent
    query = parse_query(query_text)
    req: dict[str, Any] = {
        "headers": req_headers,
        "method": method,
        "url": path + ("?" + query_text if query_text else ""),
        "originalUrl": path + ("?" + query_text if query_text else ""),
        "baseUrl": "",
        "path": path,
        "hostname": "localhost",
        "protocol": "http",
        "secure": False,
        "xhr": False,
        "params": params,
        "query": query,
        "cookies": _cookies(req_headers.get("cookie")),
        "signedCookies": {},
    }
    # A new message: Node-RED gives it a new id (here one derived from the call's message).
    seed = js_json([msg.get("_msgid"), endpoint.id, url]).encode()
    out: dict[str, Any] = {"_msgid": hashlib.blake2b(seed, digest_size=8).hexdigest(), "req": req}
    if endpoint.method in _BODY_METHODS:
        req["body"] = _body(body_text, req_headers.get("content-type"))
        out["payload"] = req["body"]
    else:
        req["body"] = {}  # Node-RED's own body parsers leave an empty object
        out["payload"] = query
    stash = {"msg": dict(msg), "url": url, "ret": ret, "method": method}
    out["res"] = {"_res": {RES_KEY: stash}}
    return out


def _cookies(header: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, eq, value = part.partition("=")
        if eq and name.strip() and name.strip() not in found:
            value = value.strip()
            if value.startswith('"') and value.endswith('"') and len(value) > 1:
                value = value[1:-1]
            found[name.strip()] = _decode_component(value) or value
    return found


def _body(text: Any, content_type: str | None) -> Any:
    """``req.body`` as Node-RED's parsers leave it (json, urlencoded, then raw text)."""
    if not isinstance(text, str):
        return ""  # no body: the raw parser reads an empty one
    if len(text.encode()) > _MAX_BODY:
        raise HttpInError("request entity too large: Node-RED answers 413")
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        if not text:
            return {}
        if text.lstrip()[:1] not in ("{", "["):  # body-parser's strict mode
            raise HttpInError("the JSON body is not an object or array: Express answers 400")
        try:
            return parse_json_text(text)
        except ValueError as exc:
            raise HttpInError(f"the JSON body does not parse: Express answers 400 ({exc})") from exc
    if media == "application/x-www-form-urlencoded":
        return parse_query(text)
    if not media or "xml" in media or media.startswith(("text/", "application/")):
        if media in ("application/octet-stream", "application/cbor", "application/x-protobuf"):
            raise HttpInError(f"a {media} body is a Buffer, which a JSON message cannot carry")
        return text
    raise HttpInError(f"a {media} body is a Buffer, which a JSON message cannot carry")


def _decode_component(text: str) -> str | None:
    """``decodeURIComponent``, None where it throws."""
    try:
        raw = bytearray()
        i = 0
        out: list[str] = []
        while i < len(text):
            ch = text[i]
            if ch == "%":
                if not re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 1 : i + 3]):
                    return None
                raw.append(int(text[i + 1 : i + 3], 16))
                i += 3
                continue
            if raw:
                out.append(raw.decode("utf-8"))
                raw.clear()
            out.append(ch)
            i += 1
        if raw:
            out.append(raw.decode("utf-8"))
        return "".join(out)
    except UnicodeDecodeError:
        return None


def _qs_decode(text: str) -> str:
    plus = text.replace("+", " ")
    decoded = _decode_component(plus)
    return plus if decoded is None else decoded


def parse_query(text: str) -> dict[str, Any]:
    """``qs.parse`` (Express's extended query parser) for the forms flows use: ``a=1&a=2``
    gives an array, ``a[]=1`` an array, ``a[b]=1`` an object; ``+`` is a space.

    Raises:
        HttpInError: a deeper bracket form, which this does not parse as ``qs`` would.
    """
    result: dict[str, Any] = {}
    parts = [p for p in text.split("&") if p][:_MAX_QUERY_PARAMS]
    for part in parts:
        raw_key, eq, raw_value = part.partition("=")
        key, value = _qs_decode(raw_key), _qs_decode(raw_value) if eq else ""
        if not key:
            continue
        bracket = re.fullmatch(r"([^\[\]]+)\[([^\[\]]*)\]", key)
        if "[" in key and bracket is None:
            raise HttpInError(
                f"the query parameter {key!r} nests deeper than the step engine parses"
            )
        if bracket is None:
            _combine(result, key, value)
            continue
        name, sub = bracket.group(1), bracket.group(2)
        if sub == "" or (sub.isdigit() and int(sub) <= 20 and str(int(sub)) == sub):
            current = result.get(name)
            if current is None:
                result[name] = [value]
            elif isinstance(current, list):
                current.append(value)
            elif isinstance(current, dict):
                current[str(len(current))] = value
            else:
                result[name] = [current, value]
            continue
        current = result.get(name)
        if current is None:
            result[name] = {sub: value}
        elif isinstance(current, dict):
            _combine(current, sub, value)
        else:
            raise HttpInError(f"the query mixes {name!r} as a value and an object")
    return result


def _combine(target: dict[str, Any], key: str, value: str) -> None:
    if key not in target:
        target[key] = value
    elif isinstance(target[key], list):
        target[key].append(value)
    else:
        target[key] = [target[key], value]


# --- the answer of the http response node --------------------------------------------------------


def http_response_result(
    node: Mapping[str, Any], msg: Mapping[str, Any], mark: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the ``http response`` ``node`` answers for ``msg``: the request's stash (from
    ``msg.res``) and ``{status, headers, text}`` as the ``http`` service would give it.
    ``mark``: a function giving the ``x-node-red-request-node`` mark of a headers object.

    Raises:
        HttpInError: ``msg.res`` is not an endpoint's (Node-RED would leave the request
            unanswered until it times out), or the answer sets cookies.
    """
    res = msg.get("res")
    stash = res.get("_res") if isinstance(res, Mapping) else None
    stash = stash.get(RES_KEY) if isinstance(stash, Mapping) else None
    if not isinstance(stash, Mapping) or not isinstance(stash.get("msg"), Mapping):
        raise HttpInError(
            "the message has no msg.res from an http in node: Node-RED warns 'No response "
            "object' and the request waits until it times out"
        )
    if msg.get("cookies"):
        raise HttpInError("the answer sets cookies (msg.cookies), which the step engine does not")
    headers: dict[str, Any] = dict(node.get("headers") or {})
    given = msg.get("headers")
    if isinstance(given, Mapping):
        given = dict(given)
        if "x-node-red-request-node" in given:
            hash_ = given.pop("x-node-red-request-node")
            if hash_ == mark(given):
                given = None
        for name, value in (given or {}).items():
            if name not in headers:
                headers[name] = value
    sent: dict[str, str] = {}
    for name, value in headers.items():
        text = (
            ", ".join(js_string(v) for v in value) if isinstance(value, list) else js_string(value)
        )
        if name.lower() == "content-type" and "charset" not in text.lower():
            text = _with_charset(text)
        sent = {k: v for k, v in sent.items() if k.lower() != name.lower()}
        sent[name] = text
    status = _status(node.get("statusCode")) or _status(msg.get("statusCode")) or 200
    payload = msg.get("payload", UNDEFINED)
    content_type = next((v for k, v in sent.items() if k.lower() == "content-type"), None)
    body: str | None
    if payload is not UNDEFINED and (payload is None or isinstance(payload, dict | list | bool)):
        body = js_json(payload)
        if content_type is None:
            content_type = "application/json; charset=utf-8"
    elif payload is UNDEFINED:
        body = None
    else:
        body = js_string(payload) if not isinstance(payload, str) else payload
        if content_type is None:
            content_type = "text/html; charset=utf-8"
    out = {k.lower(): v for k, v in sent.items()}
    if content_type is not None:
        out["content-type"] = content_type
    data = (body or "").encode()
    if status in (204, 304):
        for name in ("content-type", "content-length", "transfer-encoding"):
            out.pop(name, None)
        data = b""
    else:
        out.setdefault("content-length", str(len(data)))
        if body is not None:
            out.setdefault("etag", _weak_etag(data))
    if str(stash.get("method") or "GET").upper() == "HEAD":
        data = b""
    result = {"status": status, "headers": out, "text": data.decode()}
    return dict(stash), result


def _status(value: Any) -> int | None:
    """``parseInt(value)`` when it is a number other than 0 (JavaScript's ``||``)."""
    match = re.match(r"\s*([+-]?\d+)", js_string(value)) if value is not None else None
    if match is None:
        return None
    return int(match.group(1)) or None


def _with_charset(content_type: str) -> str:
    media = content_type.split(";")[0].strip().lower()
    if media.startswith("text/") or media in ("application/json", "application/javascript"):
        return f"{content_type}; charset=utf-8"
    return content_type


def _weak_etag(data: bytes) -> str:
    """Express's weak ETag (the ``etag`` module): length and SHA-1 of the body."""
    digest = base64.b64encode(hashlib.sha1(data).digest()).decode()[:27]
    return f'W/"{len(data):x}-{digest}"'
