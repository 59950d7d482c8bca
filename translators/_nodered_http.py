"""A flow's ``http request`` nodes that call its own ``http in`` endpoints, read at import.

Node-RED serves a flow's ``http in`` nodes on its own port, and a flow may call them with an
``http request`` node (``http://localhost:1880/hello``). The import answers such a call inside
the workflow, as a link call with a return: the request node's step sends the message the
endpoint's ``http in`` node would send (:func:`nodered_semantics.http_in.http_in_msg`) into a
copy of the nodes that ``http in`` feeds, made for this call; an ``http response`` node reached
in that copy is a step that turns the answer into the request node's message
(:func:`nodered_semantics.http_in.http_response_result`) and goes on at the request node's
wires. So the call is a step of the same job: durable, once, and it never leaves the account.

Which endpoint is decided here, from the node's fixed URL, or from ``msg.url`` when every node
wired to it is an inject setting ``msg.url`` to one string. A URL known only at run time, in a
flow that serves endpoints, is refused with the reason (it might reach any of them), as is a
call no ``http in`` answers as on Node-RED (:func:`nodered_semantics.http_in.endpoint_for`).
The decision is the node's :data:`~nodered_semantics.http_in.HTTP_ENDPOINT` key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nodered_semantics.http_in import (
    HTTP_ENDPOINT,
    endpoint_for,
    endpoints_of,
    is_node_red_itself,
)

__all__ = ["self_calls"]


def _inject_url(node: Mapping[str, Any]) -> str | None:
    """The string an inject node sets ``msg.url`` to, or None."""
    if node.get("type") != "inject" or node.get("d") is True:
        return None
    for prop in node.get("props") or []:
        if isinstance(prop, Mapping) and prop.get("p") == "url":
            value = prop.get("v")
            if prop.get("vt", "str") == "str" and isinstance(value, str) and value:
                return value
    return None


def self_calls(nodes: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each ``http request`` node that calls (or may call) the flow's own endpoints, its
    :data:`HTTP_ENDPOINT` value: ``{id, method, url}`` of the ``http in`` node it reaches, or
    ``{refused: why}``."""
    endpoints = endpoints_of(nodes)
    feeders: dict[str, list[Mapping[str, Any]]] = {}
    for node in nodes:
        for port in node.get("wires") or []:
            for target in port if isinstance(port, list) else []:
                if isinstance(target, str):
                    feeders.setdefault(target, []).append(node)
    found: dict[str, dict[str, Any]] = {}
    for node in nodes:
        if node.get("type") != "http request" or node.get("d") is True:
            continue
        nid = str(node["id"])
        url = node.get("url")
        if not isinstance(url, str) or not url.strip():
            fed = feeders.get(nid, [])
            urls = {_inject_url(n) for n in fed}
            known = {u for u in urls if u is not None}
            if fed and None not in urls and len(known) == 1:
                url = known.pop()
            elif any(u is not None and is_node_red_itself(u) for u in urls) or (endpoints and fed):
                found[nid] = {
                    "refused": "its URL comes from msg.url at run time, and the flow serves http "
                    "in endpoints it might reach: the step engine answers a call of Node-RED's "
                    "own endpoints only for a URL known at import"
                }
                continue
            else:
                continue
        if not isinstance(url, str) or "{{" in url or not is_node_red_itself(url):
            continue
        method = str(node.get("method") or "GET")
        if method == "use":
            found[nid] = {
                "refused": f"it calls Node-RED's own endpoints ({url.strip()}) with msg.method, "
                "known only at run time"
            }
            continue
        endpoint, why = endpoint_for(endpoints, method, url)
        if endpoint is None:
            found[nid] = {"refused": f"it calls Node-RED itself ({url.strip()}): {why}"}
            continue
        found[nid] = {
            "id": endpoint.id,
            "method": endpoint.method,
            "url": endpoint.url,
            "request_url": url.strip(),
        }
    return found


def with_self_call(node: dict[str, Any], calls: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``node`` with its :data:`HTTP_ENDPOINT` decision, when it has one."""
    decision = calls.get(str(node.get("id")))
    if decision is None or node.get("type") != "http request":
        return node
    return {**node, HTTP_ENDPOINT: decision}
