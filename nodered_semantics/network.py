"""Network nodes whose peer is in the same flow: a ``tcp``/``udp``/``websocket`` out node that
sends to an in node of its own workflow, run without a socket.

A hosted platform opens no listening port per flow; but a flow that talks to ITSELF over a
socket (a ``tcp out`` to the ``tcp in`` server of the same tab, a ``udp out`` to the port its
``udp in`` binds, a ``websocket out`` through a client to the listener path of the same tab)
needs none: what the in node would emit is known from the out node's message. The step engine
starts that message as a new job at the in node's entry (:mod:`engines.step._loopback`); this
module says which in nodes an out node reaches (:func:`receivers`), why a network node cannot
run so (:func:`network_problem`), and what each in node emits (:func:`received`), as Node-RED
4.1's ``31-tcpin.js``, ``32-udp.js`` and ``22-websocket.js`` do:

* **tcp**: an out node writes ``Buffer.from(""+payload)`` (base64-decoded with ``base64``); a
  client out (``beserver: client``) reaches the ``tcp in`` *server* of its port, a server out
  (``beserver: server``) the ``tcp in`` *clients* of its port. The in node turns the bytes into
  its ``datatype`` (``utf8`` text, ``base64`` text); in ``single`` mode it sends once when the
  connection ends (the out node must ``end`` it), in ``stream`` mode each chunk, or with a
  ``newline`` each complete line and, when the connection ends, the rest.
  Its message is ``{topic, payload, _session: {type: "tcp", id}}``; Node-RED's server also sets
  ``ip``/``port``, the sending socket's ephemeral address, which no engine can reproduce: they
  are left out.
* **udp**: an out node to a local address and the port of a ``udp in`` (same ``ipv``, no
  multicast/broadcast) sends one datagram; the in node sends ``{payload, fromip, ip, port}``.
  The out node sends from the in node's own socket (Node-RED reuses a bound input port), so the
  source is ``127.0.0.1``/``::1`` and that port, or the out node's ``outport`` when set.
* **websocket**: an out node sends ``JSON.stringify(msg)`` (its config node's ``wholemsg``) or
  ``RED.util.ensureString(payload)`` when that is not empty; the in node on the other end of the
  path (a ``websocket-client`` at ``ws://localhost:1880{path}`` and a ``websocket-listener`` at
  ``{path}``) sends ``{payload: text, _session}``, or with its own ``wholemsg`` the parsed message.

Which config node a websocket node uses is resolved by the import into the node's
configuration (:data:`ENDPOINT_KEY`), as a step's config holds only its own node.

A peer outside the workflow (another host, port or path, another tab) is a real socket and is
refused with the reason: it would need a network service under the host policy. ``tcp request``
(a call that waits for the reply a ``tcp out`` with ``beserver: reply`` writes on the same
connection) and ``tls`` are refused too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from nodered_semantics.js import is_nan, js_json, js_number, js_string

__all__ = [
    "ENDPOINT_KEY",
    "NETWORK_IN",
    "NETWORK_OUT",
    "NETWORK_TYPES",
    "network_problem",
    "received",
    "receivers",
    "websocket_endpoint",
]

NETWORK_IN = frozenset({"tcp in", "udp in", "websocket in"})
NETWORK_OUT = frozenset({"tcp out", "udp out", "websocket out"})
NETWORK_TYPES = NETWORK_IN | NETWORK_OUT | {"tcp request"}
ENDPOINT_KEY = "fluxo_endpoint"
"""The key of a websocket in/out node's configuration holding its config node as the import
resolved it: ``{role: listener|client, path, wholemsg, tls}`` (absent: no such config node)."""
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0", "::"})
NODERED_PORT = 1880  # where a flow's own Node-RED serves its websocket listeners by default
_EXTERNAL = (
    "a real network socket, which the step engine does not open (it would need a network "
    "service under the host policy); run it on Node-RED"
)


def websocket_endpoint(node: Mapping[str, Any], index: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config node a ``websocket in``/``out`` node uses (its ``client``, else its
    ``server``), as :data:`ENDPOINT_KEY` holds it; None when it is not in ``index``."""
    ref = node.get("client") or node.get("server")
    config = index.get(ref) if isinstance(ref, str) else None
    if not isinstance(config, Mapping):
        return None
    kind = config.get("type")
    if kind not in ("websocket-listener", "websocket-client"):
        return None
    return {
        "role": "listener" if kind == "websocket-listener" else "client",
        "path": str(config.get("path") or ""),
        "wholemsg": config.get("wholemsg") == "true",
        "tls": bool(config.get("tls")),
    }


# --- who reaches whom ----------------------------------------------------------------------------


def _local(host: Any) -> bool:
    return str(host or "").strip().lower() in LOCAL_HOSTS


def _port(value: Any) -> float | int | None:
    number = js_number(value if value not in (None, "") else "x")
    return None if is_nan(number) or number <= 0 else number


def _tcp_server(node: Mapping[str, Any]) -> bool:
    server = node.get("server")
    return server if isinstance(server, bool) else server == "server"


def _ws_target(endpoint: Mapping[str, Any]) -> str | None:
    """The listener path a websocket-client endpoint reaches on its own Node-RED, or None."""
    try:
        url = urlsplit(str(endpoint.get("path") or ""))
        port = url.port
    except ValueError:
        return None
    if url.scheme != "ws" or not _local(url.hostname) or (port or 80) != NODERED_PORT:
        return None
    return url.path or "/"


def _reaches(out: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    kind, to = out.get("type"), target.get("type")
    if kind == "tcp out" and to == "tcp in" and not out.get("tls") and not target.get("tls"):
        port = _port(out.get("port"))
        if port is None or port != _port(target.get("port")):
            return False
        if out.get("beserver") in (None, "", "client"):
            return _local(out.get("host")) and _tcp_server(target)
        return (
            out.get("beserver") == "server"
            and not _tcp_server(target)
            and _local(target.get("host"))
        )
    if kind == "udp out" and to == "udp in":
        port = _port(out.get("port"))
        return (
            port is not None
            and port == _port(target.get("port"))
            and _local(out.get("addr"))
            and str(out.get("multicast", "false")) == "false"
            and str(target.get("multicast", "false")) == "false"
            and (out.get("ipv") or "udp4") == (target.get("ipv") or "udp4")
        )
    if kind == "websocket out" and to == "websocket in":
        mine, theirs = out.get(ENDPOINT_KEY), target.get(ENDPOINT_KEY)
        if not isinstance(mine, Mapping) or not isinstance(theirs, Mapping):
            return False
        if mine.get("tls") or theirs.get("tls"):
            return False
        if mine.get("role") == "client" and theirs.get("role") == "listener":
            return _ws_target(mine) == theirs.get("path")
        if mine.get("role") == "listener" and theirs.get("role") == "client":
            return _ws_target(theirs) == mine.get("path")
    return False


def _requests(request: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Whether ``tcp request`` node ``request`` connects to ``tcp in`` server ``target``."""
    return (
        request.get("type") == "tcp request"
        and target.get("type") == "tcp in"
        and _tcp_server(target)
        and _local(request.get("server"))
        and _port(request.get("port")) is not None
        and _port(request.get("port")) == _port(target.get("port"))
    )


def receivers(
    out: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The in nodes among ``nodes`` that what the out node ``out`` sends reaches."""
    return [n for n in nodes if n.get("type") in NETWORK_IN and _reaches(out, n)]


def network_problem(node: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]]) -> str | None:
    """Why a network node of a workflow whose nodes are ``nodes`` cannot run without a socket,
    or None when its peer is in the workflow and what it sends arrives as Node-RED delivers it."""
    kind = node.get("type")
    nodes = list(nodes)
    if kind == "tcp request":
        if any(_requests(node, n) for n in nodes):
            return (
                "it calls a tcp in server of this workflow and waits for the reply its flow "
                "writes back (tcp out 'reply'): a call-and-wait the step engine does not run yet"
            )
        return f"it connects to {node.get('server')}:{node.get('port')}, {_EXTERNAL}"
    if node.get("tls"):
        return f"it uses TLS, {_EXTERNAL}"
    if kind in NETWORK_IN:
        if kind == "websocket in" and not isinstance(node.get(ENDPOINT_KEY), Mapping):
            return "its websocket config node is not in the flow"
        if not any(n.get("type") in NETWORK_OUT and _reaches(n, node) for n in nodes):
            if any(_requests(n, node) for n in nodes):
                return (
                    "only a tcp request of this workflow sends to it, and waits for the reply "
                    "its flow writes back: a call-and-wait the step engine does not run yet"
                )
            return f"no out node of this workflow sends to it: its peer is {_EXTERNAL}"
        if kind in ("tcp in", "udp in") and (node.get("datatype") or "buffer") == "buffer":
            return "it sends Buffers, which a JSON message cannot carry"
        return None
    if kind not in NETWORK_OUT:
        return f"{kind!r} is not a network node"
    if kind == "tcp out" and node.get("beserver") == "reply":
        return (
            "it replies on the connection a tcp in node received its message on, which only "
            "a tcp request waiting for the reply could read (not run on the step engine yet)"
        )
    if kind == "websocket out" and not isinstance(node.get(ENDPOINT_KEY), Mapping):
        return "its websocket config node is not in the flow"
    if kind == "udp out" and str(node.get("multicast", "false")) != "false":
        return f"it broadcasts or multicasts, {_EXTERNAL}"
    targets = receivers(node, nodes)
    if not targets:
        return f"no in node of this workflow receives what it sends: its peer is {_EXTERNAL}"
    if kind == "tcp out":
        for target in targets:
            problem = _tcp_problem(node, target)
            if problem is not None:
                return f"tcp in {target.get('id', '?')}: {problem}"
    return None


def _tcp_problem(out: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    stream = not target.get("datamode") or target.get("datamode") == "stream"
    ends = out.get("end") is True
    if not stream and not ends:
        return (
            "in single mode it sends when the connection ends, and this tcp out keeps its "
            "connection open (end is not set)"
        )
    if stream and _newline(target) and not ends:
        return (
            "it splits a stream at a newline and keeps a partial line for the next message on "
            "the connection this tcp out keeps open, which depends on earlier messages"
        )
    return None


def _newline(node: Mapping[str, Any]) -> str:
    return (
        str(node.get("newline") or "")
        .replace("\\n", "\n")
        .replace("\\r", "\r")
        .replace("\\t", "\t")
    )


# --- what arrives --------------------------------------------------------------------------------


def _bytes(payload: Any, base64_flag: Any) -> bytes:
    """``Buffer.from(payload, 'base64')`` with the node's base64 flag on a string, else
    ``Buffer.from("" + payload)``."""
    if isinstance(payload, str) and base64_flag is True:
        cleaned = "".join(c for c in payload if c.isalnum() or c in "+/-_")
        cleaned = cleaned.replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError):
            return b""
    return js_string(payload).encode("utf-8", errors="surrogatepass")


def _text(data: bytes, datatype: str) -> str:
    if datatype == "base64":
        return base64.b64encode(data).decode("ascii")
    return data.decode("utf-8", errors="replace")


def _session(seed: str) -> str:
    """A session id as ``RED.util.generateId()`` makes (16 hex digits), stable per delivery."""
    return hashlib.blake2b(seed.encode(), digest_size=8).hexdigest()


def received(
    out: Mapping[str, Any], target: Mapping[str, Any], msg: Mapping[str, Any], seed: str
) -> list[dict[str, Any]]:
    """The messages in node ``target`` sends when out node ``out`` gets ``msg`` (``seed``:
    makes the session id; the same seed, the same id)."""
    kind = out.get("type")
    if kind == "tcp out":
        return _tcp_received(out, target, msg, seed)
    if kind == "udp out":
        return _udp_received(out, target, msg)
    if kind == "websocket out":
        return _ws_received(out, target, msg, seed)
    return []


def _tcp_received(
    out: Mapping[str, Any], target: Mapping[str, Any], msg: Mapping[str, Any], seed: str
) -> list[dict[str, Any]]:
    payload = msg.get("payload")
    if payload is None:  # msg.payload != null: nothing is written
        return []
    data = _bytes(payload, out.get("base64"))
    datatype = str(target.get("datatype") or "buffer")
    stream = not target.get("datamode") or target.get("datamode") == "stream"
    base = {"topic": target.get("topic")} if "topic" in target else {}
    session = {"type": "tcp", "id": _session(seed)}
    texts: list[str] = []
    if not data:
        return []
    text = _text(data, datatype)
    newline = _newline(target)
    splits = newline != "" and (
        datatype == "utf8" or (_tcp_server(target) and datatype == "base64")
    )
    if not stream:
        texts = [text]
    elif splits:
        parts = text.split(newline)
        texts = parts[:-1]
        if parts[-1]:  # the rest, sent when the connection ends
            texts.append(parts[-1])
    else:
        texts = [text]
    trim = target.get("trim") is True
    return [
        {**base, "payload": t + newline if trim and stream and splits else t, "_session": session}
        for t in texts
    ]


def _udp_received(
    out: Mapping[str, Any], target: Mapping[str, Any], msg: Mapping[str, Any]
) -> list[dict[str, Any]]:
    if "payload" not in msg:
        return []
    data = _bytes(msg.get("payload"), out.get("base64"))
    ip = "::1" if (out.get("ipv") or "udp4") == "udp6" else "127.0.0.1"
    port = _port(out.get("outport")) or _port(out.get("port"))
    port = int(port) if port is not None else 0
    return [
        {
            "payload": _text(data, str(target.get("datatype") or "buffer")),
            "fromip": f"{ip}:{port}",
            "ip": ip,
            "port": port,
        }
    ]


def _ws_received(
    out: Mapping[str, Any], target: Mapping[str, Any], msg: Mapping[str, Any], seed: str
) -> list[dict[str, Any]]:
    mine, theirs = out.get(ENDPOINT_KEY) or {}, target.get(ENDPOINT_KEY) or {}
    if mine.get("wholemsg"):
        text: str | None = js_json({k: v for k, v in msg.items() if k != "_session"})
    elif "payload" in msg:
        payload = msg.get("payload")
        text = (
            payload
            if isinstance(payload, str)
            else (js_json(payload) if isinstance(payload, dict | list) else js_string(payload))
        )
    else:
        text = None
    if not text:  # `if (payload)`: an empty text is not sent
        return []
    session = {"type": "websocket", "id": _session(seed)}
    if not theirs.get("wholemsg"):
        return [{"payload": text, "_session": session}]
    try:
        parsed = json.loads(text)
    except ValueError:
        return [{"payload": text, "_session": session}]
    if isinstance(parsed, dict):
        return [{**parsed, "_session": session}]
    if parsed is None or isinstance(parsed, list):  # Node-RED fails setting _session on it
        return []
    return [{"payload": parsed, "_session": session}]
