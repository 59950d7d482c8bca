"""A flow's call of its own ``http in`` endpoint: the ``http request`` node's step and the
``http response`` node's step of that call (see :mod:`translators._nodered_http`).

* ``http request`` with :data:`~nodered_semantics.http_in.HTTP_ENDPOINT`: the request it makes
  (:func:`~nodered_semantics.http_request.http_service_request`), received by that endpoint,
  as the message its ``http in`` node sends (:func:`~nodered_semantics.http_in.http_in_msg`);
* ``http response``: the answer (:func:`~nodered_semantics.http_in.http_response_result`) as
  the message the request node sends on
  (:func:`~nodered_semantics.http_request.http_response_msg`).

Nothing leaves the call: no network, no other account.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodered_semantics.http_in import (
    HTTP_ENDPOINT,
    HTTP_RESPONSE_TYPE,
    Endpoint,
    HttpInError,
    http_in_msg,
    http_response_result,
)
from nodered_semantics.http_request import (
    HttpRequestError,
    headers_mark,
    http_response_msg,
    http_service_request,
)
from services.nodered.common import Sent, node_error

__all__ = ["run_http_self"]


def run_http_self(node: Mapping[str, Any], msg: dict[str, Any]) -> Sent:
    """Run an http request node calling its flow's endpoint, or an http response answering
    such a call, on ``msg``."""
    try:
        if node.get("type") == HTTP_RESPONSE_TYPE:
            stash, result = http_response_result(node, msg, headers_mark)
            request = {"url": stash.get("url")}
            return [
                (0, http_response_msg({"ret": stash.get("ret")}, stash["msg"], request, result))
            ]
        chosen = node.get(HTTP_ENDPOINT)
        if not isinstance(chosen, Mapping) or "id" not in chosen:
            reason = (chosen or {}).get("refused") if isinstance(chosen, Mapping) else None
            raise node_error(node, str(reason or "it calls no endpoint of its flow"))
        endpoint = Endpoint(str(chosen["id"]), str(chosen["method"]), str(chosen["url"]))
        request = http_service_request(node, msg)
        return [(0, http_in_msg(endpoint, request, msg, str(node.get("ret") or "txt")))]
    except (HttpInError, HttpRequestError) as exc:
        raise node_error(node, str(exc)) from exc
