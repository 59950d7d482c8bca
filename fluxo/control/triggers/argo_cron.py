"""Argo CronWorkflows for the Kubernetes-scheduled cron triggers of workflows on Argo.

The document is the translator's (:func:`translators.argo.to_argo` with one
:class:`~translators.argo.CronTrigger`): an HTTP template that POSTs
``/v1/workflows/<workflow>/jobs`` with the account's engine token from its Secret and the
scheduled time as ``Idempotency-Key``. It is sent to the Argo Server the argo engine uses
(``FLUXO_ARGO_URL``, ``FLUXO_ARGO_TOKEN``, ``FLUXO_ARGO_NAMESPACE``) through its REST API
(``/api/v1/cron-workflows/{namespace}[/{name}]``), errors mapped as the engines map theirs
(:mod:`engines._http`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx

from engines._http import display_url, http_errors, status_error
from fluxo.control.kubernetes import KubernetesUnavailableError
from fluxo_core.errors import NotFoundError

__all__ = ["ArgoCronWorkflows"]

_HINTS: Final = {
    401: "check FLUXO_ARGO_TOKEN",
    403: "grant the Argo token's service account access to cronworkflows in the namespace",
    400: "Argo refused the CronWorkflow",
    422: "Argo refused the CronWorkflow",
}


class ArgoCronWorkflows:
    """The CronWorkflows of one namespace of an Argo Server (a ``CronObjects``).

    Args:
        base_url: the Argo Server with its base path (``https://argo.example.com/argo/``).
        namespace: where the CronWorkflows live (the argo engine's).
        token: the bearer token; never put in messages.
        client: an ``httpx.AsyncClient`` (tests inject one); absent, one is made and closed by
            :meth:`aclose`.
    """

    kind = "CronWorkflow"

    def __init__(
        self,
        base_url: str,
        namespace: str,
        token: str | None,
        *,
        verify_tls: bool = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.root = base_url.rstrip("/") + "/api/v1/cron-workflows/" + quote(namespace)
        self.namespace = namespace
        self._token = token
        self._server = display_url(base_url)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(verify=verify_tls, timeout=30.0)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", f"/{quote(name)}", f"get CronWorkflow {name}")
        except NotFoundError:
            return None

    async def create(self, document: Mapping[str, Any]) -> dict[str, Any]:
        name = document["metadata"]["name"]
        body = {"namespace": self.namespace, "cronWorkflow": document}
        return await self._request("POST", "", f"create CronWorkflow {name}", body=body)

    async def replace(self, name: str, document: Mapping[str, Any]) -> dict[str, Any]:
        body = {"namespace": self.namespace, "cronWorkflow": document}
        return await self._request("PUT", f"/{quote(name)}", f"update CronWorkflow {name}", body)

    async def delete(self, name: str, resource_version: str) -> None:
        params = {"deleteOptions.preconditions.resourceVersion": resource_version}
        try:
            await self._request(
                "DELETE", f"/{quote(name)}", f"delete CronWorkflow {name}", params=params
            )
        except NotFoundError:
            return

    async def _request(
        self,
        method: str,
        path: str,
        operation: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        with http_errors(
            unavailable=KubernetesUnavailableError,
            status=lambda response: status_error(
                response,
                where=f"Argo Server {self._server}",
                operation=operation,
                unavailable=KubernetesUnavailableError,
                hints=_HINTS,
                refused="argo",
                secrets=[self._token],
                limit=200,
                server=self._server,
            ),
            timeout_message=f"Argo Server {self._server} did not answer {operation} in time",
            unreachable_message=f"cannot reach the Argo Server at {self._server} for "
            f"{operation}; check FLUXO_ARGO_URL",
            operation=operation,
            server=self._server,
        ):
            response = await self._client.request(
                method, self.root + path, json=body, params=params, headers=headers
            )
            response.raise_for_status()
        try:
            data = response.json() if response.content else {}
        except ValueError as exc:
            raise KubernetesUnavailableError(
                f"Argo Server {self._server} answered {operation} with a body that is not JSON; "
                "check FLUXO_ARGO_URL",
                operation=operation,
            ) from exc
        return data if isinstance(data, dict) else {}
