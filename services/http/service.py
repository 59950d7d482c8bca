"""The ``http`` built-in service: outbound HTTP requests behind a host policy.

A payload item describes one request::

    {"url": "https://api.example.com/orders", "method": "POST",
     "headers": {"Authorization": {"secret": "shop-api", "prefix": "Bearer "}},
     "query": {"page": 2}, "json": {...} | "body": "raw text", "timeout_s": 10,
     "raise_for_status": false, "follow_redirects": true, "read_as": "text"}

and the result item describes the response::

    {"status": 200, "headers": {...}, "json": ... | "text": "..." | "base64": "...",
     "truncated": false}

The body is ``json``, ``text`` or ``base64`` by its content type; ``read_as: "text"`` reads it
as UTF-8 text whatever the type (what a Node-RED http request node gives).

An array payload makes one request per item (bounded concurrency) and returns an array of results.

Credentials. A header value may be a secret reference, ``{"secret": "NAME"}`` with an optional
``"prefix"`` (``"Bearer "``): the value of the account's stored secret NAME (``fluxo secret set``),
read in the worker when the request is sent, for the call's own account. So the credential is
never in the packet: not in the call's stored request, the queue message, the job's steps, nor
the logs. The response is scrubbed of it too (a server that echoes the header it got), and so are
error messages. On a redirect to another origin (scheme, host or port), every credential header
is dropped: Authorization, Proxy-Authorization, Cookie, any header whose name speaks of a key,
token, secret, password, session, signature or auth, and any header set from a secret.

The host policy (server-side request forgery) is :mod:`services.http.policy`; credentials
(secret references, scrubbing) are :mod:`services.http.credentials`.

Network failures. When a request fails in the network, the error's context has ``network``, what
went wrong without anything secret in it, for callers that word the failure as another client
would (the step engine words it as Node-RED's http request node does)::

    {"kind": "refused", "code": "ECONNREFUSED", "address": "127.0.0.1", "port": 1880,
     "attempts": 1}                                    # no vetted address took the connection
    {"kind": "not_found", "host": "nosuch.example"}    # the name does not exist
    {"kind": "timeout", "timeout_s": 10}               # no whole answer within timeout_s
    {"kind": "reset", "code": "ECONNRESET"}            # the connection was reset while reading
    {"kind": "closed"}                                 # the server closed it without answering

``attempts`` is how many addresses the name had (``address`` is the last one tried). Other
failures have no ``network``; the message and ``retryable`` are as before.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import dataclasses
import json
import math
import re
import ssl
from collections.abc import (
    AsyncIterator,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from typing import Any

import httpx

from fluxo_core.errors import FluxoError, ServiceError, ValidationError
from fluxo_core.ir import Packet, Payload
from fluxo_core.redaction import hidden_from_logs, is_secret_reference
from service_runtime.sdk import Service
from services.config import BuiltinConfig
from services.http.credentials import (
    REDACTED,
    SECRET_NAME,
    SecretRef,
    SecretSource,
    carries_credentials,
    drop_credentials,
    scrub,
    scrub_bytes,
)
from services.http.policy import ConnectFailure, HostPolicy, Resolver, guarded_transport

__all__ = ["HttpService"]


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
TRUNCATED_MARKER = "\n...[truncated: the response body is over {limit} bytes]"

# The schema lets the gateway reject malformed calls early and documents the contract. It leaves
# header and query values unconstrained on purpose: JSON Schema messages quote the offending value,
# and those values are where credentials live. The handler checks them with messages that do not.
HTTP_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "minLength": 1},
        "method": {"type": "string"},
        "headers": {"type": "object"},
        "query": {"type": "object"},
        "json": {},
        "body": {"type": "string"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "raise_for_status": {"type": "boolean"},
        "follow_redirects": {"type": "boolean"},
        "read_as": {"enum": ["auto", "text"]},
    },
    "additionalProperties": False,
}
_FIELDS = frozenset(HTTP_REQUEST_SCHEMA["properties"])

HTTP_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "headers", "truncated"],
    "properties": {
        "status": {"type": "integer"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "json": {},
        "text": {"type": "string"},
        "base64": {"type": "string"},
        "truncated": {"type": "boolean"},
    },
}


@dataclass(frozen=True)
class _Request:
    method: str
    url: httpx.URL
    headers: dict[str, str]
    json_body: Any
    has_json: bool
    body: str | None
    timeout_s: float
    raise_for_status: bool
    follow_redirects: bool
    as_text: bool
    # The headers whose value is a secret reference (resolved in the worker, just before
    # sending), and then the values they resolved to: kept out of results, errors and logs.
    references: tuple[tuple[str, SecretRef], ...] = ()
    secret_values: tuple[str, ...] = ()

    @property
    def secret_headers(self) -> frozenset[str]:
        return frozenset(name.lower() for name, _ in self.references)


class HttpService:
    """The ``http`` built-in service (see the module docstring for payload and result).

    Args:
        config: limits and the host policy settings.
        client: an ``httpx.AsyncClient`` to send with (its owner closes it). Without one, each
            call uses a short-lived client with :func:`guarded_transport`. An injected client should
            use :func:`guarded_transport` too; otherwise only the pre-send checks protect it.
        resolver: name resolution for the host policy (tests inject a fixed table).
        secrets: where secret references are read from; without it a reference is refused.
    """

    def __init__(
        self,
        config: BuiltinConfig | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        resolver: Resolver | None = None,
        secrets: SecretSource | None = None,
    ) -> None:
        self._config = config or BuiltinConfig()
        self._client = client
        self._secrets = secrets
        self._policy = HostPolicy.from_config(self._config, resolver=resolver)
        self._ssl_context: ssl.SSLContext | None = None
        rounds = math.ceil(self._config.http_max_items / self._config.http_concurrency)
        self.service = Service(
            name="http",
            version="1",
            handler=self._handle,
            # The packet, not only the payload: secret references resolve in its account.
            takes="packet",
            description="Send an HTTP request and return the status, headers and body.",
            input_schema=HTTP_REQUEST_SCHEMA,
            output_schema=HTTP_RESPONSE_SCHEMA,
            # Each request has its own deadline; the call as a whole gets room for every round of
            # requests of the largest array the config allows, plus a margin for the runtime.
            timeout_s=self._config.http_max_timeout_s * rounds + 5.0,
        )

    @property
    def policy(self) -> HostPolicy:
        return self._policy

    async def _handle(self, packet: Packet) -> Payload:
        return await self.call(packet.payload, account_id=packet.account_id)

    async def call(self, payload: Payload, *, account_id: str | None = None) -> Payload:
        """Send the request(s) the payload describes; secret references resolve in ``account_id``.

        Raises:
            ValidationError: the payload is not a valid request (every problem, with its location).
            ServiceError: the host is refused (not retryable), the request timed out or could not
                connect (retryable), ``raise_for_status`` is set and the answer is 4xx/5xx
                (retryable for 5xx and 429 only), or a referenced secret is not set in the
                account (not retryable).
        """
        items = payload if isinstance(payload, list) else [payload]
        if len(items) > self._config.http_max_items:
            raise ValidationError(
                f"the http service makes at most {self._config.http_max_items} requests per call; "
                f"split the {len(items)} items into smaller packets",
                problems=[("payload", f"{len(items)} items")],
            )
        requests = await self._resolve_secrets(self._parse(payload), account_id)
        with hidden_from_logs(v for r in requests for v in r.secret_values):
            return await self._send_all(payload, requests)

    async def _send_all(self, payload: Payload, requests: list[_Request]) -> Payload:
        async with self._client_scope() as client:
            if not isinstance(payload, list):
                return await self._send(client, requests[0])
            limit = asyncio.Semaphore(self._config.http_concurrency)

            async def bounded(request: _Request) -> dict[str, Any]:
                async with limit:
                    return await self._send(client, request)

            tasks = [asyncio.ensure_future(bounded(r)) for r in requests]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # One failure fails the call: stop the other requests instead of orphaning them.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _resolve_secrets(
        self, requests: list[_Request], account_id: str | None
    ) -> list[_Request]:
        """Put the values of secret references into the requests, here in the worker only."""
        names = sorted({ref.name for r in requests for _, ref in r.references})
        if not names:
            return requests
        if self._secrets is None or account_id is None:
            raise ServiceError(
                "this request refers to stored secrets, but this http service has no secret "
                "store; run it in a Fluxo worker (fluxo up, fluxo worker)",
                retryable=False,
                secrets=names,
            )
        try:
            values = await self._secrets.reveal(account_id, names)
        except FluxoError as exc:
            raise ServiceError(exc.message, retryable=exc.retryable, secrets=names) from exc
        resolved = []
        for request in requests:
            headers = dict(request.headers)
            used = []
            for header, ref in request.references:
                value = values[ref.name]
                if "\r" in value or "\n" in value:
                    raise ServiceError(
                        f"secret {ref.name!r} holds a line break, which header {header!r} "
                        "cannot carry; store the value on one line",
                        retryable=False,
                        secret=ref.name,
                    )
                headers[header] = ref.prefix + value
                used.append(value)
            resolved.append(
                dataclasses.replace(request, headers=headers, secret_values=tuple(used))
            )
        return resolved

    @contextlib.asynccontextmanager
    async def _client_scope(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
            return
        # A client per call: no client outlives the event loop it was made on, and nothing needs
        # closing at shutdown. Callers who want pooling inject a long-lived guarded client. The
        # SSL context (loading the CA bundle is the slow part) is made once and shared.
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        transport = guarded_transport(self._policy, verify=self._ssl_context)
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            yield client

    def _parse(self, payload: Payload) -> list[_Request]:
        items = payload if isinstance(payload, list) else [payload]
        prefixes = (
            [f"payload[{i}]" for i in range(len(items))]
            if isinstance(payload, list)
            else ["payload"]
        )
        problems: list[tuple[str, str]] = []
        requests = [
            self._parse_item(item, prefix, problems)
            for prefix, item in zip(prefixes, items, strict=True)
        ]
        if problems:
            raise ValidationError(
                "invalid http request: fix the fields listed below", problems=problems
            )
        return [r for r in requests if r is not None]

    def _parse_item(
        self, item: Any, prefix: str, problems: list[tuple[str, str]]
    ) -> _Request | None:
        """Check one request item; messages never quote header or query values (credentials)."""
        if not isinstance(item, Mapping):
            problems.append((prefix, "a request must be an object"))
            return None
        start = len(problems)
        for key in sorted(set(item) - _FIELDS, key=str):
            problems.append((f"{prefix}.{key}", f"unknown field; use {', '.join(sorted(_FIELDS))}"))
        url = self._parse_url(item.get("url"), f"{prefix}.url", problems)
        method = item.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            problems.append((f"{prefix}.method", f"use one of {', '.join(METHODS)}"))
            method = "GET"
        headers, references = _header_map(item.get("headers", {}), f"{prefix}.headers", problems)
        query = _query_map(item.get("query", {}), f"{prefix}.query", problems)
        body = item.get("body")
        if body is not None and not isinstance(body, str):
            problems.append((f"{prefix}.body", "must be a string (use json for structured data)"))
        if "json" in item and "body" in item:
            problems.append((prefix, "set json or body, not both"))
        timeout = item.get("timeout_s", self._config.http_default_timeout_s)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            problems.append((f"{prefix}.timeout_s", "must be a number of seconds above zero"))
            timeout = self._config.http_default_timeout_s
        flags: dict[str, bool] = {}
        for flag, default in (("raise_for_status", False), ("follow_redirects", True)):
            value = item.get(flag, default)
            if not isinstance(value, bool):
                problems.append((f"{prefix}.{flag}", "must be true or false"))
            flags[flag] = bool(value)
        read_as = item.get("read_as", "auto")
        if read_as not in ("auto", "text"):
            problems.append((f"{prefix}.read_as", "use auto (by content type) or text"))
        if len(problems) > start or url is None:
            return None
        return _Request(
            method=method.upper(),
            # Merged, not replaced: httpx's params= would drop a query already in the URL; a
            # name in both takes the value from "query".
            url=url.copy_merge_params(query) if query else url,
            headers=headers,
            json_body=item.get("json"),
            has_json="json" in item,
            body=body,
            timeout_s=min(float(timeout), self._config.http_max_timeout_s),
            raise_for_status=flags["raise_for_status"],
            follow_redirects=flags["follow_redirects"],
            as_text=read_as == "text",
            references=references,
        )

    @staticmethod
    def _parse_url(raw: Any, where: str, problems: list[tuple[str, str]]) -> httpx.URL | None:
        if not isinstance(raw, str) or not raw:
            problems.append((where, "required: the URL to call (http or https)"))
            return None
        try:
            url = httpx.URL(raw)
        except httpx.InvalidURL:
            problems.append((where, "not a valid URL"))
            return None
        if url.scheme not in ("http", "https"):
            problems.append((where, f"scheme {url.scheme!r} is not allowed; use http or https"))
            return None
        if not url.host:
            problems.append((where, "the URL has no host"))
            return None
        return url

    async def _send(self, client: httpx.AsyncClient, spec: _Request) -> dict[str, Any]:
        host = spec.url.host
        headers = httpx.Headers(spec.headers)
        content: bytes | None = None
        if spec.has_json:
            # Encoded here rather than by httpx so that a JSON null is sent as "null", not dropped.
            content = json.dumps(spec.json_body, ensure_ascii=False).encode()
            headers.setdefault("content-type", "application/json")
        elif spec.body is not None:
            content = spec.body.encode()
        request = client.build_request(
            spec.method, spec.url, headers=headers, content=content, timeout=spec.timeout_s
        )
        with _map_errors(spec):
            async with asyncio.timeout(spec.timeout_s):
                response, body, truncated = await self._exchange(client, spec, request)
        hidden = _hidden_values(spec)
        if hidden:
            body = scrub_bytes(body, hidden, truncated)
        result = _result(
            response, body, truncated, self._config.http_max_body_bytes, as_text=spec.as_text
        )
        if hidden:
            result = scrub(result, hidden)
        if spec.raise_for_status and response.status_code >= 400:
            status = response.status_code
            raise ServiceError(
                f"{spec.method} to {host} answered HTTP {status}; leave raise_for_status unset to "
                "get the status as a result instead",
                retryable=status >= 500 or status == 429,
                host=host,
                status=status,
                body=_redact(body[:500].decode("utf-8", errors="replace"), spec),
            )
        return result

    async def _exchange(
        self, client: httpx.AsyncClient, spec: _Request, request: httpx.Request
    ) -> tuple[httpx.Response, bytes, bool]:
        """Send, following redirects by hand so that every hop is vetted; read the capped body."""
        redirects = 0
        while True:
            await self._vet_url(request.url)
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                if spec.follow_redirects and response.next_request is not None:
                    if redirects >= self._config.http_max_redirects:
                        raise ServiceError(
                            f"{spec.method} to {spec.url.host} was redirected more than "
                            f"{self._config.http_max_redirects} times",
                            retryable=False,
                            host=spec.url.host,
                        )
                    redirects += 1
                    previous, request = request, response.next_request
                    if _origin(request.url) != _origin(previous.url):
                        drop_credentials(request.headers, spec.secret_headers)
                    continue
                body, truncated = await _read_capped(response, self._config.http_max_body_bytes)
                return response, body, truncated
            finally:
                await response.aclose()

    async def _vet_url(self, url: httpx.URL) -> None:
        if url.scheme not in ("http", "https"):
            raise ServiceError(
                f"refused to follow a redirect to a {url.scheme!r} URL; only http and https are "
                "allowed",
                retryable=False,
                host=url.host,
            )
        port = url.port or (443 if url.scheme == "https" else 80)
        await self._policy.vet(url.raw_host.decode("ascii"), port)


@contextlib.contextmanager
def _map_errors(spec: _Request) -> Iterator[None]:
    """Map httpx and timeout errors to ServiceError, retryable where trying again can help."""
    where = f"{spec.method} to {spec.url.host}"
    try:
        yield
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ServiceError(
            f"{where} timed out after {spec.timeout_s:g}s",
            retryable=True,
            host=spec.url.host,
            timeout_s=spec.timeout_s,
            network={"kind": "timeout", "timeout_s": spec.timeout_s},
        ) from exc
    except httpx.UnsupportedProtocol as exc:
        raise ServiceError(
            f"{where}: unsupported protocol", retryable=False, host=spec.url.host
        ) from exc
    except httpx.ConnectError as exc:
        if _caused_by(exc, ssl.SSLCertVerificationError):
            # A certificate that does not fit the host will not fit on the next attempt.
            raise ServiceError(
                f"{where}: the server's TLS certificate is not valid for "
                f"this host: {str(exc)[:200]}",
                retryable=False,
                host=spec.url.host,
            ) from exc
        raise ServiceError(
            f"{where} failed: ConnectError: {str(exc)[:200]}",
            retryable=True,
            host=spec.url.host,
            **_network(exc),
        ) from exc
    except httpx.TransportError as exc:
        # Connection refused/reset, protocol errors: the server or network may recover.
        # The message is the OS/protocol reason only; the URL may carry credentials.
        raise ServiceError(
            f"{where} failed: {type(exc).__name__}: {str(exc)[:200]}",
            retryable=True,
            host=spec.url.host,
            **_network(exc),
        ) from exc
    except httpx.HTTPError as exc:
        raise ServiceError(
            f"{where} failed: {type(exc).__name__}",
            retryable=False,
            host=spec.url.host,
        ) from exc


def _network(exc: httpx.TransportError) -> dict[str, Any]:
    """``{"network": ...}`` for a failure the module docstring lists, else nothing."""
    failure = _cause(exc, ConnectFailure)
    if isinstance(exc, httpx.ConnectError) and isinstance(failure, ConnectFailure):
        if failure.code == "ECONNREFUSED":
            where = {"address": failure.address, "port": failure.port}
            return {
                "network": {
                    "kind": "refused",
                    "code": "ECONNREFUSED",
                    **where,
                    "attempts": failure.attempts,
                }
            }
    elif isinstance(exc, httpx.ReadError) and _cause(exc, ConnectionResetError) is not None:
        return {"network": {"kind": "reset", "code": "ECONNRESET"}}
    elif isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(
        "Server disconnected without sending a response"
    ):
        return {"network": {"kind": "closed"}}
    return {}


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s chain of causes, or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _redact(text: str, spec: _Request) -> str:
    """Blank out what the request carried that may be secret, in case the server echoed it."""
    secrets = [*spec.headers.values(), *(v for _, v in spec.url.params.multi_items())]
    if spec.url.password:
        secrets.append(spec.url.password)
    # Short values ("1", "json") are too common to hide and too short to be credentials; a
    # stored secret's value is hidden whatever its length.
    hidden = {s for s in secrets if len(s) >= 6} | set(spec.secret_values)
    # Longest first, so a value that contains a shorter one is blanked whole.
    for secret in sorted(hidden, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _hidden_values(spec: _Request) -> list[str]:
    """What a response must not hand back: the secrets' values, and the values of the request's
    credential headers (a literal Authorization a server echoes), longest first."""
    values = set(spec.secret_values)
    values.update(v for k, v in spec.headers.items() if len(v) >= 6 and carries_credentials(k))
    return sorted((v for v in values if v), key=len, reverse=True)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; such a body is returned as text instead.
    raise ValueError(f"{name} is not valid JSON")


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of the (decoded) body; say whether more was left."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        room = limit - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(.*\+)?(json|xml)|application/(javascript|x-www-form-urlencoded)|)$"
)


def _result(
    response: httpx.Response, body: bytes, truncated: bool, limit: int, *, as_text: bool = False
) -> dict[str, Any]:
    headers = {name: ", ".join(response.headers.get_list(name)) for name in response.headers}
    result: dict[str, Any] = {
        "status": response.status_code,
        "headers": headers,
        "truncated": truncated,
    }
    if as_text:  # UTF-8 whatever the content type, as Node-RED's Buffer.toString() reads it
        text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(body, final=True)
        result["text"] = text + (TRUNCATED_MARKER.format(limit=limit) if truncated else "")
        return result
    mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not truncated and body and (mime == "application/json" or mime.endswith("+json")):
        try:
            result["json"] = json.loads(body, parse_constant=_reject_constant)
            return result
        except ValueError:
            pass  # a server that lies about its content type: fall back to text
    if _TEXT_TYPES.match(mime):
        encoding = response.charset_encoding or "utf-8"
        try:
            decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # A truncated body may end inside a multi-byte character: leave the fragment undecoded.
        text = decoder.decode(body, final=not truncated)
        result["text"] = text + (TRUNCATED_MARKER.format(limit=limit) if truncated else "")
    else:
        result["base64"] = base64.b64encode(body).decode("ascii")
    return result


def _string_map(raw: Any, where: str, problems: list[tuple[str, str]]) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        problems.append((where, "must be an object of names to string values"))
        return {}
    result: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, str):
            problems.append((f"{where}.{name}", "must be a string"))
        elif "\r" in value or "\n" in value:
            problems.append((f"{where}.{name}", "must not contain line breaks"))
        else:
            result[str(name)] = value
    return result


def _header_map(
    raw: Any, where: str, problems: list[tuple[str, str]]
) -> tuple[dict[str, str], tuple[tuple[str, SecretRef], ...]]:
    """Header values: strings, or secret references resolved later (see the module docstring)."""
    if not isinstance(raw, Mapping):
        problems.append((where, 'must be an object of names to strings or {"secret": NAME}'))
        return {}, ()
    literal = {k: v for k, v in raw.items() if not isinstance(v, Mapping)}
    headers = _string_map(literal, where, problems)
    references: list[tuple[str, SecretRef]] = []
    for name, value in raw.items():
        if not isinstance(value, Mapping):
            continue
        at = f"{where}.{name}"
        if not is_secret_reference(value):
            problems.append(
                (at, 'a header value is a string or {"secret": NAME} (with an optional "prefix")')
            )
        elif not SECRET_NAME.match(value["secret"]):
            problems.append((f"{at}.secret", "not a secret name (letters, digits, '_', '.', '-')"))
        elif "\r" in value.get("prefix", "") or "\n" in value.get("prefix", ""):
            problems.append((f"{at}.prefix", "must not contain line breaks"))
        else:
            references.append((str(name), SecretRef(value["secret"], value.get("prefix", ""))))
    return headers, tuple(references)


def _query_map(raw: Any, where: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        problems.append((where, "must be an object of names to values"))
        return {}

    def scalar(value: Any) -> bool:
        return isinstance(value, str | int | float | bool)

    result: dict[str, Any] = {}
    for name, value in raw.items():
        if scalar(value) or (isinstance(value, list) and all(scalar(v) for v in value)):
            result[str(name)] = value
        else:
            problems.append(
                (f"{where}.{name}", "must be a string, number, boolean or a list of them")
            )
    return result
