"""A small async client of the Kubernetes API: get, create, replace and delete one object.

Errors are mapped once, as the HTTP engines map theirs (:mod:`engines._http`)::

    401  -> AuthError             (the token or certificate)
    403  -> PermissionDeniedError (the service account's RBAC in the namespace)
    404  -> NotFoundError         (``get`` answers None instead; ``delete`` ignores it)
    409  -> ConflictError         (a stale resourceVersion, or created meanwhile)
    400, 422 -> ValidationError   (the API refused the object; its words as the problem)
    5xx, 429, timeouts, connection failures -> KubernetesUnavailableError, retryable

Messages name the operation and the server, never the token, and quote at most 200 characters
of the API's ``Status.message``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from engines._http import display_url, http_errors, status_error
from fluxo.control.kubernetes._config import KubernetesConfig
from fluxo_core.errors import ConfigError, FluxoError, NotFoundError

__all__ = ["KubernetesClient", "KubernetesUnavailableError"]

TOKEN_FILE_CACHE_S: Final = 60.0
"""A token file is read again after this long: the kubelet rotates projected tokens."""

_HINTS: Final = {
    401: "check the token or client certificate of the Kubernetes configuration",
    403: "grant Fluxo's service account get, create, update and delete on cronjobs "
    "(batch) in the namespace",
    400: "the Kubernetes API refused the object",
    422: "the Kubernetes API refused the object",
}


class KubernetesUnavailableError(FluxoError):
    """The Kubernetes API failed or could not be reached (``retryable`` for 5xx and network
    errors)."""

    http_status = 502
    code = "kubernetes_failed"


class KubernetesClient:
    """Args:
    config: the server and credentials.
    client: an ``httpx.AsyncClient`` (tests inject one); absent, one is made from ``config``
        and closed by :meth:`aclose`.
    """

    def __init__(
        self, config: KubernetesConfig, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self.namespace = config.namespace
        self._server = display_url(config.server)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(verify=config.ssl_context(), timeout=30.0)
        self._token: tuple[str | None, float] = (config.token, float("inf"))
        if config.token is None and config.token_file is not None:
            self._token = (None, 0.0)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def _bearer(self) -> str | None:
        token, until = self._token
        if self.config.token_file is not None and time.monotonic() >= until:
            token = _read_token(self.config.token_file)
            self._token = (token, time.monotonic() + TOKEN_FILE_CACHE_S)
        return token

    async def get(self, path: str, operation: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when there is none."""
        try:
            return await self._request("GET", path, operation)
        except NotFoundError:
            return None

    async def create(self, path: str, body: Mapping[str, Any], operation: str) -> dict[str, Any]:
        return await self._request("POST", path, operation, body=body)

    async def replace(self, path: str, body: Mapping[str, Any], operation: str) -> dict[str, Any]:
        """PUT: refused with 409 (ConflictError) when ``body``'s resourceVersion is stale."""
        return await self._request("PUT", path, operation, body=body)

    async def delete(self, path: str, operation: str, *, resource_version: str) -> None:
        """Delete the object if it is still the version read (absent is fine)."""
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": resource_version},
            # The CronJob's Jobs and pods go with it.
            "propagationPolicy": "Background",
        }
        try:
            await self._request("DELETE", path, operation, body=options)
        except NotFoundError:
            return

    async def _request(
        self, method: str, path: str, operation: str, *, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        token = self._bearer()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self.config.server.rstrip("/") + path
        with http_errors(
            unavailable=KubernetesUnavailableError,
            status=lambda response: status_error(
                response,
                where=f"Kubernetes API {self._server}",
                operation=operation,
                unavailable=KubernetesUnavailableError,
                hints=_HINTS,
                refused="kubernetes",
                secrets=[token],
                limit=200,
                server=self._server,
            ),
            timeout_message=f"the Kubernetes API {self._server} did not answer {operation} in "
            "time; check that it is up",
            unreachable_message=f"cannot reach the Kubernetes API at {self._server} for "
            f"{operation}; check the configured server ({self.config.source})",
            operation=operation,
            server=self._server,
        ):
            response = await self._client.request(method, url, json=body, headers=headers)
            response.raise_for_status()
        try:
            data = response.json() if response.content else {}
        except ValueError as exc:
            raise KubernetesUnavailableError(
                f"the Kubernetes API {self._server} answered {operation} with a body that is "
                f"not JSON; check the configured server ({self.config.source})",
                operation=operation,
            ) from exc
        return data if isinstance(data, dict) else {}


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the Kubernetes token file {path} ({type(exc).__name__}); check that "
            "the service account token is mounted",
            setting="FLUXO_KUBERNETES",
        ) from exc
