"""The ``http`` service's host policy: which addresses a request may reach.

Security (server-side request forgery). A workflow author chooses the URL, so by default the service
refuses to reach anything that is not a public address: loopback, private (10/8, 172.16/12,
192.168/16, fc00::/7), link-local (169.254/16 with the cloud metadata endpoint 169.254.169.254,
fe80::/10), shared (100.64/10, used by some cloud metadata services), unspecified, multicast and
reserved addresses. ``FLUXO_HTTP_ALLOW`` lists hostnames, ``*.suffix`` wildcards or CIDRs that may
be reached anyway; ``FLUXO_HTTP_DENY`` lists ones that may never be reached, and deny wins over allow.

DNS rebinding (a name that resolves to a public address when checked and to an internal one when
connected) is closed by checking at connect time: the client this module builds uses a network
backend that resolves the name itself, vets every address and opens the TCP connection to a vetted
address. TLS still runs against the hostname (SNI and certificate checks are unchanged) and the
connection pool stays keyed by hostname, so no connection is shared between names. The handler also
vets each URL (and each redirect target) before sending, which gives early, clear errors and is the
only protection left when a caller injects its own ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
import ssl
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpcore
import httpx

from fluxo_core.errors import ConfigError, ServiceError

if TYPE_CHECKING:
    from services.config import BuiltinConfig

__all__ = [
    "ConnectFailure",
    "HostPolicy",
    "HostRules",
    "IPAddress",
    "Resolver",
    "guarded_transport",
    "system_resolver",
]

# getaddrinfo's "no such name" answers (EAI_NODATA is not defined everywhere).
_NO_SUCH_NAME = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves ``(host, port)`` to IP address strings; the default is :func:`system_resolver`."""


# --- host policy -------------------------------------------------------------------------------

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class HostRules:
    """One parsed list of host rules (``FLUXO_HTTP_ALLOW`` or ``FLUXO_HTTP_DENY``)."""

    hosts: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[tuple[str, IPNetwork], ...]

    @classmethod
    def parse(cls, entries: Iterable[str], setting: str) -> HostRules:
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[tuple[str, IPNetwork]] = []
        for raw in entries:
            entry = raw.strip().lower()
            if entry.startswith("[") and entry.endswith("]"):
                entry = entry[1:-1]
            try:
                networks.append((raw, ipaddress.ip_network(entry, strict=False)))
                continue
            except ValueError:
                pass
            if entry.startswith("*.") and _HOSTNAME.match(entry[2:].rstrip(".")):
                suffixes.append("." + entry[2:].rstrip("."))
            elif _HOSTNAME.match(entry.rstrip(".")):
                hosts.add(entry.rstrip("."))
            else:
                raise ConfigError(
                    f"{setting} entry {raw!r} is not a hostname, '*.suffix' wildcard, IP address "
                    "or CIDR (e.g. 'api.internal', '*.corp.example', '10.1.0.0/16')",
                    setting=setting,
                )
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks))

    def match_host(self, host: str) -> str | None:
        if host in self.hosts:
            return host
        for suffix in self.suffixes:
            if host.endswith(suffix):
                return "*" + suffix
        return None

    def match_address(self, *addresses: IPAddress) -> str | None:
        for entry, network in self.networks:
            if any(a.version == network.version and a in network for a in addresses):
                return entry
        return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _internal_reason(address: IPAddress) -> str | None:
    """Why an address counts as internal, or None for a public unicast address."""
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata endpoints live)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_reserved:
        # 100.64/10 (shared address space) is neither private nor global; some clouds put their
        # metadata service there (100.100.100.200).
        return "a non-public address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver, without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HostPolicy:
    """Decides which hosts and addresses the ``http`` service may connect to.

    Args:
        allow: hosts, ``*.suffix`` wildcards or CIDRs that may be reached although internal.
        deny: hosts, wildcards or CIDRs that may never be reached; deny wins over allow.
        resolver: how names are resolved (tests inject a fixed table).

    Raises:
        ConfigError: an entry is neither a hostname, a wildcard nor an address/CIDR.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        *,
        resolver: Resolver | None = None,
    ) -> None:
        self._allow = HostRules.parse(allow, "FLUXO_HTTP_ALLOW")
        self._deny = HostRules.parse(deny, "FLUXO_HTTP_DENY")
        self._resolver = resolver or system_resolver

    @classmethod
    def from_config(cls, config: BuiltinConfig, *, resolver: Resolver | None = None) -> HostPolicy:
        return cls(config.http_allow, config.http_deny, resolver=resolver)

    async def vet(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and return the addresses a connection may use.

        Every address the name resolves to must pass: a name that also resolves to an internal
        address is refused as a whole rather than silently narrowed.

        Raises:
            ServiceError: not retryable when the policy refuses the host or one of its addresses
                (the message names the host and the setting to change); retryable when name
                resolution failed temporarily.
        """
        name = host.strip().lower().rstrip(".")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        denied = self._deny.match_host(name)
        if denied is not None:
            raise ServiceError(
                f"refused to connect to {name}: the host matches the FLUXO_HTTP_DENY entry "
                f"{denied!r}",
                retryable=False,
                host=name,
                setting="FLUXO_HTTP_DENY",
            )
        literal = _ip_or_none(name)
        addresses = [literal] if literal is not None else await self._resolve(name, port)
        host_allowed = self._allow.match_host(name) is not None
        for address in addresses:
            self._check_address(name, address, host_allowed=host_allowed)
        return addresses

    async def _resolve(self, name: str, port: int) -> list[IPAddress]:
        try:
            raw = await self._resolver(name, port)
        except OSError as exc:
            # Only EAI_AGAIN is a temporary failure; "no such name" will not fix itself on retry.
            temporary = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN
            # A name that does not exist is told apart (``network``, see the service's errors).
            missing = isinstance(exc, socket.gaierror) and exc.errno in _NO_SUCH_NAME
            network = {"network": {"kind": "not_found", "host": name}} if missing else {}
            raise ServiceError(
                f"could not resolve host {name}: {exc.strerror or exc}",
                retryable=temporary,
                host=name,
                **network,
            ) from exc
        addresses = [a for a in (_ip_or_none(r) for r in raw) if a is not None]
        if not addresses:
            raise ServiceError(f"host {name} resolved to no address", retryable=True, host=name)
        return addresses

    def _check_address(self, name: str, address: IPAddress, *, host_allowed: bool) -> None:
        embedded = _embedded_ipv4(address)
        forms = (address,) if embedded is None else (address, embedded)
        shown = name if name == str(address) else f"{name} ({address})"
        denied = self._deny.match_address(*forms)
        if denied is not None:
            raise ServiceError(
                f"refused to connect to {shown}: the address matches the FLUXO_HTTP_DENY entry "
                f"{denied!r}",
                retryable=False,
                host=name,
                address=str(address),
                setting="FLUXO_HTTP_DENY",
            )
        reason = _internal_reason(embedded or address)
        if reason is None or host_allowed or self._allow.match_address(*forms) is not None:
            return
        raise ServiceError(
            f"refused to connect to {shown}: it is {reason}, and workflows may not reach "
            f"internal addresses by default; if this is intended, add {name!r} (or a CIDR "
            "holding the address) to FLUXO_HTTP_ALLOW",
            retryable=False,
            host=name,
            address=str(address),
            setting="FLUXO_HTTP_ALLOW",
        )


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# --- connect-time guard ------------------------------------------------------------------------


class ConnectFailure(httpcore.ConnectError):
    """No vetted address of a host took the connection: the last address tried, its port, how
    many addresses were tried, and the OS error's code (``ECONNREFUSED``) if there was one. The
    code is kept here because httpcore's pool drops the chain of causes."""

    def __init__(
        self, message: str, *, address: str, port: int, attempts: int, code: str | None
    ) -> None:
        super().__init__(message)
        self.address = address
        self.port = port
        self.attempts = attempts
        self.code = code


def _os_error_code(exc: BaseException) -> str | None:
    """The errno name (``ECONNREFUSED``) of the first OS error with one in ``exc``'s causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return errno.errorcode.get(seen.errno)
        seen = seen.__cause__ or seen.__context__
    return None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the policy vetted, resolving names itself."""

    def __init__(self, policy: HostPolicy, inner: httpcore.AsyncNetworkBackend) -> None:
        self._policy = policy
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.vet(host, port)
        failure: Exception | None = None
        tried = ""
        for address in addresses:
            tried = str(address)
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # try the next address, like a browser would
        if failure is None:  # vet() never returns an empty list; this keeps the type exact
            raise httpcore.ConnectError(f"no address to connect to for {host}")
        if isinstance(failure, httpcore.ConnectTimeout):
            raise failure
        # Which address refused is kept for the caller's error (not in the message: unchanged).
        raise ConnectFailure(
            str(failure),
            address=tried,
            port=port,
            attempts=len(addresses),
            code=_os_error_code(failure),
        ) from failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ServiceError("the http service does not connect to unix sockets", retryable=False)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(
    policy: HostPolicy, *, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncHTTPTransport:
    """An httpx transport that connects only to addresses ``policy`` vetted at connect time.

    Use it with ``trust_env=False`` on the client: environment proxies would otherwise be mounted
    in front of it, and a proxy resolves names where this guard cannot see.
    """
    transport = httpx.AsyncHTTPTransport(verify=verify, trust_env=False)
    # httpx has no public hook for httpcore's network backend, so replace the pool it built (it has
    # no connections yet) with one that uses the guarded backend. A test of DNS rebinding fails if
    # a future httpx renames this attribute.
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise ConfigError("this httpx version is not supported by the guarded http transport")
    ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=_GuardedBackend(policy, httpcore.AnyIOBackend()),
    )
    return transport
