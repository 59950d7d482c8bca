"""The ``http request`` node (Node-RED 4, ``21-httprequest.js``) as a call of Fluxo's ``http``
service: the request it makes from a message, and the message it sends from the response.

The step engine runs such a node by calling the ``http`` built-in service (so the host policy,
admission and metering apply to it as to any call) with :func:`http_service_request`, and turns
the service's result back into the node's message with :func:`http_response_msg`:

* the URL is the node's, else ``msg.url`` (``http://`` prepended when it has no scheme); the
  method the node's, or ``msg.method`` when the node says "use msg.method"; the headers
  ``msg.headers`` then the node's own (a name set twice, in any case, keeps the last; an empty
  value removes it); ``msg.headers`` that are the response headers of an earlier http request
  node (marked ``x-node-red-request-node``, unchanged) are left out, as Node-RED leaves them out;
* the body, for methods other than GET and HEAD: a string as it is, a number as its text, any
  other value as JSON (``content-type: application/json`` unless set; an
  ``application/x-www-form-urlencoded`` content type sends the object as a query string); for
  GET, ``paytoqs`` appends an object payload to the query (``query``) or sends it as the body
  (``body``);
* ``msg.requestTimeout`` (ms) and ``msg.followRedirects`` apply;
* a network failure (:func:`http_failure`): the node reports the error to its catch nodes
  (``got``'s ``err.toString()``, or ``no response from server`` for a timeout) and, unless
  ``senderr`` is set, sends the message on with ``payload`` ``"<error> : <url>"`` and
  ``statusCode`` the error's code (``ECONNREFUSED``); Node-RED does not retry;
* the message out: ``payload`` (the body as UTF-8 text; parsed from JSON for ``ret: obj``,
  where a 204 gives ``{}`` and text that does not parse stays text), ``statusCode``,
  ``headers`` (lower-case names), ``responseUrl``, ``redirectList`` (empty: the service follows
  redirects itself) and ``retry: 0``.

:func:`http_request_problem` refuses what cannot be equal beforehand: a Buffer response
(``ret: bin``), TLS, proxy and authentication settings (their configuration and credentials live
in Node-RED), a URL that is a mustache template, and a URL of Node-RED itself (``localhost:1880``,
its own ``http in`` endpoints) unless the import chose the endpoint it reaches
(:data:`~nodered_semantics.http_in.HTTP_ENDPOINT`, :mod:`translators._nodered_http`): the step
engine answers those in the job (:mod:`nodered_semantics.http_in`), and refuses at run time a
URL of Node-RED itself it was not told about.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from nodered_semantics.http_in import HTTP_ENDPOINT
from nodered_semantics.js import UNDEFINED, JSThrowError, js_json, js_string
from nodered_semantics.msg_paths import get_property
from nodered_semantics.typed_values import parse_json_text

__all__ = [
    "HTTP_REQUEST_TYPE",
    "HTTP_SERVICE",
    "HttpFailure",
    "HttpRequestError",
    "headers_mark",
    "http_failure",
    "http_request_problem",
    "http_response_msg",
    "http_service_request",
]

HTTP_REQUEST_TYPE = "http request"
HTTP_SERVICE = "http"
"""The built-in service the step engine calls for an ``http request`` node."""

_REQUEST_MARK = "x-node-red-request-node"
# Node-RED on its own machine and default port: a flow calling its own http in endpoints.
_NODE_RED_ITSELF = re.compile(r"^(https?://)?(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\]):1880(/|$)")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DEFAULT_TIMEOUT_MS = 120_000  # Node-RED's, without httpRequestTimeout in its settings
_NO_RESPONSE = "no response from server"  # what Node-RED reports for a timeout


class HttpRequestError(ValueError):
    """The message does not make a request the node would send (the text says why)."""


def http_request_problem(node: Mapping[str, Any]) -> str | None:
    """Why an ``http request`` node cannot run as a call of the ``http`` service, or None."""
    if (node.get("ret") or "txt") == "bin":
        return "it returns a Buffer (ret: bin), which a JSON message cannot carry"
    for key, what in (("tls", "a TLS configuration"), ("proxy", "a proxy configuration")):
        if node.get(key):
            return f"it uses {what}, which lives in Node-RED"
    if node.get("authType"):
        return f"it authenticates ({node.get('authType')}) with credentials only Node-RED holds"
    url = node.get("url")
    if isinstance(url, str) and "{{" in url:
        return "its URL is a mustache template over the message"
    endpoint = node.get(HTTP_ENDPOINT)
    if isinstance(endpoint, Mapping) and isinstance(endpoint.get("refused"), str):
        return str(endpoint["refused"])
    if endpoint is None and isinstance(url, str) and _NODE_RED_ITSELF.match(url.strip()):
        return (
            f"it calls Node-RED's own HTTP endpoints ({url.strip()}: an http in node of a flow), "
            "which only Node-RED serves"
        )
    method = str(node.get("method") or "GET")
    if method != "use" and method.upper() not in _METHODS:
        return f"its method {method!r} is not one the http service sends"
    for n, header in enumerate(node.get("headers") or [], 1):
        if not isinstance(header, Mapping):
            return f"header {n} is not an object"
        for part in ("keyType", "valueType"):
            if header.get(part) in ("env", "flow", "global", "jsonata"):
                return f"header {n} takes its {part[:-4]} from {header.get(part)}"
    return None


def http_service_request(node: Mapping[str, Any], msg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``http`` service's request for what the node sends for ``msg``.

    Raises:
        HttpRequestError: no URL, a URL of another scheme, no method, or a payload the node
            cannot put in a query string (Node-RED reports these to its catch nodes).
    """
    url = node.get("url") or msg.get("url")
    if not isinstance(url, str) or not url:
        raise HttpRequestError("no url: set msg.url or the node's URL")
    if "://" in url and not url.startswith("http"):
        raise HttpRequestError(f"the URL {url!r} is not http or https")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    if HTTP_ENDPOINT not in node and _NODE_RED_ITSELF.match(url):
        raise HttpRequestError(
            f"{url} is Node-RED's own endpoint, which the step engine answers only for a URL "
            "known at import (an http in node of the same flow)"
        )
    method = str(node.get("method") or "GET").upper()
    if node.get("method") == "use" and msg.get("method"):
        method = js_string(msg["method"]).upper()
    if method not in _METHODS:
        raise HttpRequestError(f"method {method!r}: set msg.method to one of {sorted(_METHODS)}")
    headers = _headers(node, msg)
    request: dict[str, Any] = {"url": url, "method": method, "read_as": "text"}
    payload = msg.get("payload", UNDEFINED)
    paytoqs = node.get("paytoqs")
    if method not in ("GET", "HEAD") and payload is not UNDEFINED:
        content_type = _header(headers, "content-type")
        if isinstance(payload, str):
            request["body"] = payload
        elif isinstance(payload, int | float) and not isinstance(payload, bool):
            request["body"] = js_string(payload)
        elif content_type == "application/x-www-form-urlencoded" and isinstance(payload, dict):
            request["body"] = _query_string(payload)
        else:
            request["body"] = js_json(payload)
            if content_type is None:
                headers["Content-Type"] = "application/json"
    elif method == "GET" and payload is not UNDEFINED and paytoqs in (True, "query"):
        if not isinstance(payload, dict):
            raise HttpRequestError("msg.payload must be an object to go in the query string")
        query = _query_string(payload)
        if query:
            url += ("" if url.endswith("?") else "&") if "?" in url else "?"
            request["url"] = url + query
    elif method == "GET" and payload is not UNDEFINED and paytoqs == "body":
        request["body"] = payload if isinstance(payload, str) else js_json(payload)
    if headers:
        request["headers"] = headers
    request["timeout_s"] = _request_timeout_s(msg)
    if "followRedirects" in msg:
        request["follow_redirects"] = bool(msg["followRedirects"])
    return request


def http_response_msg(
    node: Mapping[str, Any], msg: Mapping[str, Any], request: Mapping[str, Any], result: Any
) -> dict[str, Any]:
    """The message the node sends: ``msg`` with the ``http`` service's ``result``.

    Raises:
        HttpRequestError: the result is not a whole text response (the body was cut at the
            service's size limit).
    """
    if not isinstance(result, Mapping) or not isinstance(result.get("text"), str):
        raise HttpRequestError("the http service gave no text body")
    if result.get("truncated"):
        raise HttpRequestError("the response body is over the http service's size limit")
    out = dict(msg)
    status = result.get("status")
    headers = {str(k).lower(): v for k, v in (result.get("headers") or {}).items()}
    headers[_REQUEST_MARK] = headers_mark(headers)
    payload: Any = result["text"]
    if (node.get("ret") or "txt") == "obj":
        if status == 204:
            payload = "{}"
        # Text that does not parse goes on as text (Node-RED warns "JSON parse error").
        with contextlib.suppress(ValueError):
            payload = parse_json_text(payload)
    out.update(
        statusCode=status,
        headers=headers,
        responseUrl=request.get("url"),
        payload=payload,
        redirectList=[],
        retry=0,
    )
    return out


@dataclass(frozen=True)
class HttpFailure:
    """What the node does on a network failure: ``report`` to its catch nodes with ``msg``,
    and ``sent`` (None with ``senderr``) on its output."""

    report: str
    msg: dict[str, Any]
    sent: dict[str, Any] | None


def http_failure(
    node: Mapping[str, Any], msg: Mapping[str, Any], url: str, network: Any
) -> HttpFailure | None:
    """The node's answer to a failed request, from the ``http`` service's ``network`` detail
    (see :mod:`services.http.service`); None where Node-RED's words for it are not known: an
    address among several refused (Node tries them all at once), a timeout the service cut
    shorter than the node's, any other failure.

    The texts are ``got``'s (Node-RED 4 on Node 20): ``RequestError: connect ECONNREFUSED
    127.0.0.1:1880``, ``RequestError: getaddrinfo ENOTFOUND host``, ``RequestError: read
    ECONNRESET``, ``RequestError: socket hang up`` (closed without an answer) and ``TimeoutError:
    Timeout awaiting 'request' for 1500ms``.
    """
    if not isinstance(network, Mapping):
        return None
    kind = network.get("kind")
    report: str | None = None
    if kind == "refused" and network.get("attempts") == 1:
        code = "ECONNREFUSED"
        error = f"RequestError: connect ECONNREFUSED {network.get('address')}:{network.get('port')}"
    elif kind == "not_found" and network.get("host"):
        code, error = "ENOTFOUND", f"RequestError: getaddrinfo ENOTFOUND {network['host']}"
    elif kind == "reset":
        code, error = "ECONNRESET", "RequestError: read ECONNRESET"
    elif kind == "closed":
        code, error = "ECONNRESET", "RequestError: socket hang up"
    elif kind == "timeout" and network.get("timeout_s") == _request_timeout_s(msg):
        timeout_ms = _request_timeout_s(msg) * 1000
        code, report = "ETIMEDOUT", _NO_RESPONSE
        error = f"TimeoutError: Timeout awaiting 'request' for {js_string(timeout_ms)}ms"
    else:
        return None
    reported = _as_sent(msg)
    sent = None
    if not node.get("senderr"):
        sent = {**reported, "payload": f"{error} : {url}", "statusCode": code}
    return HttpFailure(report=report or error, msg=reported, sent=sent)


def _request_timeout_s(msg: Mapping[str, Any]) -> float:
    """The request's timeout: ``msg.requestTimeout`` (ms) when it is a number of at least 1,
    else Node-RED's default."""
    timeout_ms = msg.get("requestTimeout")
    if isinstance(timeout_ms, int | float) and not isinstance(timeout_ms, bool) and timeout_ms >= 1:
        return timeout_ms / 1000
    return _DEFAULT_TIMEOUT_MS / 1000


def _as_sent(msg: Mapping[str, Any]) -> dict[str, Any]:
    """``msg`` as the node leaves it once it has read the headers: the mark of an earlier
    response's headers removed, and those headers with it when they are unchanged."""
    out = dict(msg)
    given = out.get("headers")
    if isinstance(given, Mapping) and _REQUEST_MARK in given:
        headers = dict(given)
        mark = headers.pop(_REQUEST_MARK)
        if mark == headers_mark(headers):
            del out["headers"]
        else:
            out["headers"] = headers
    return out


def _headers(node: Mapping[str, Any], msg: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, Any] = {}
    given = msg.get("headers")
    if isinstance(given, Mapping):
        given = dict(given)
        mark = given.pop(_REQUEST_MARK, None)
        if mark is not None and mark == headers_mark(given):
            given = {}  # the response headers of an earlier request: not sent on
        for name, value in given.items():
            _update(headers, str(name), value)
    for header in node.get("headers") or []:
        name = _header_part(header, "key", msg)
        if name:
            _update(headers, js_string(name), _header_part(header, "value", msg))
    return {name: js_string(value) for name, value in headers.items()}


def _header_part(header: Mapping[str, Any], part: str, msg: Mapping[str, Any]) -> Any:
    kind, value = header.get(f"{part}Type"), header.get(f"{part}Value")
    if kind == "other":
        return value
    if kind == "msg":
        try:
            found = get_property(msg, js_string(value))
        except JSThrowError:
            return None  # Node-RED ignores a header it cannot read
        return None if found is UNDEFINED else found
    return kind  # a named header or value picked from the editor's list


def _update(headers: dict[str, Any], name: str, value: Any) -> None:
    """``updateHeader``: replace a header in any case; an empty value removes it."""
    for key in [k for k in headers if k.lower() == name.lower()]:
        del headers[key]
    if value not in (None, UNDEFINED, "", 0, False):
        headers[name] = value


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def headers_mark(headers: Mapping[str, Any]) -> str:
    """What marks headers as an http request node's response headers (Node-RED hashes them
    with hash-sum; any stable digest serves, as only this module reads it)."""
    text = json.dumps(headers, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _query_string(value: Mapping[str, Any]) -> str:
    """Node.js ``querystring.stringify``: arrays repeat the name; objects give an empty value."""
    pairs = []
    for name, item in value.items():
        key = _escape(name)
        for one in item if isinstance(item, list) else [item]:
            if isinstance(one, str | int | float):  # bool is an int
                pairs.append(f"{key}={_escape(js_string(one))}")
            else:
                pairs.append(f"{key}=")
    return "&".join(pairs)


def _escape(text: str) -> str:
    return quote(text, safe="-_.!~*'()")
