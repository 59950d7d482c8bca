"""How the CLI reaches Fluxo: a running server (``FLUXO_URL``) or the local database directly.

Both clients answer with plain JSON-ready dicts shaped like the HTTP API's responses, so every
command prints the same thing whichever way it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from fluxo.control.platform import open_database
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    FluxoError,
    MalformedRequestError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from fluxo_core.storage import AccountStore, Database, Principal
from fluxo_core.storage.accounts import PLATFORM_ACCOUNT

__all__ = ["Client", "HttpClient", "LocalClient", "open_client", "remote_client"]


class Client(Protocol):
    async def apply(self, document: dict[str, Any]) -> dict[str, Any]: ...

    async def services(self) -> list[dict[str, Any]]: ...

    async def create_job(
        self, workflow: str, payload: Any, *, idempotency_key: str | None
    ) -> dict[str, Any]: ...

    async def job(self, job_id: str, *, wait: float = 0) -> dict[str, Any]: ...

    async def jobs(self, **filters: Any) -> dict[str, Any]: ...

    async def apply_resources(self, documents: list[Any]) -> list[dict[str, Any]]: ...

    async def resources(self, kind: str) -> list[dict[str, Any]]: ...

    async def resource(self, kind: str, name: str) -> dict[str, Any]: ...

    async def delete_resource(self, kind: str, name: str) -> dict[str, Any]: ...

    @property
    def runs_jobs(self) -> bool:
        """Whether jobs make progress while only this client is running."""
        ...


class HttpClient:
    """Talks to a Fluxo server: ``FLUXO_URL`` and ``FLUXO_TOKEN`` (or the home's admin token)."""

    runs_jobs = True

    def __init__(self, url: str, token: str, *, http: httpx.AsyncClient | None = None) -> None:
        self._http = http or httpx.AsyncClient(base_url=url.rstrip("/"), timeout=330)
        self._headers = {"Authorization": f"Bearer {token}"}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            headers = {**self._headers, **kw.pop("headers", {})}
            resp = await self._http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"cannot reach the Fluxo server at {self._http.base_url} ({type(exc).__name__}); "
                "is it running (fluxo up)? Unset FLUXO_URL to work on the local database",
                retryable=True,
            ) from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code >= 400:
            raise _error_from(resp.status_code, body)
        return body

    async def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("POST", "/v1/workflows", json=document)
        return result

    async def services(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._request("GET", "/v1/services"))["items"]
        return items

    async def create_job(
        self, workflow: str, payload: Any, *, idempotency_key: str | None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = await self._request(
            "POST", f"/v1/workflows/{workflow}/jobs", json={"input": payload}, headers=headers
        )
        return result

    async def job(self, job_id: str, *, wait: float = 0) -> dict[str, Any]:
        params = {"wait": str(wait)} if wait else {}
        result: dict[str, Any] = await self._request("GET", f"/v1/jobs/{job_id}", params=params)
        return result

    async def jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: str(v) for k, v in filters.items() if v is not None}
        result: dict[str, Any] = await self._request("GET", "/v1/jobs", params=params)
        return result

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """Any route: its JSON answer (None for an empty one), or its error raised."""
        return await self._request(method, path, **({} if body is None else {"json": body}))

    async def usage(self, params: dict[str, str]) -> dict[str, Any]:
        """``GET /v1/usage`` with its query parameters (the token's account)."""
        result: dict[str, Any] = await self._request("GET", "/v1/usage", params=params)
        return result

    async def credit(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/usage/credits`` (the token's account)."""
        result: dict[str, Any] = (await self._send("POST", "/v1/usage/credits", json=body)).json()
        return result

    async def invoice(self, ref: str, fmt: str = "json") -> str:
        """``GET /v1/invoices/{ref}`` in ``fmt`` (json, csv, html), as the server's text."""
        path = f"/v1/invoices/{_segment(ref)}"
        return (await self._send("GET", path, params={"format": fmt})).text

    async def issue_invoice(self, period: str) -> dict[str, Any]:
        """``POST /v1/invoices/{period}/issue``."""
        path = f"/v1/invoices/{_segment(period)}/issue"
        result: dict[str, Any] = (await self._send("POST", path)).json()
        return result

    async def invoices(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._request("GET", "/v1/invoices"))["items"]
        return items

    async def apply_resources(self, documents: list[Any]) -> list[dict[str, Any]]:
        """``POST /v1/apply``: each document's outcome, in order."""
        body = await self._request("POST", "/v1/apply", json={"documents": documents})
        items: list[dict[str, Any]] = body["items"]
        return items

    async def resources(self, kind: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await self._request("GET", f"/v1/resources/{_segment(kind)}")
        )["items"]
        return items

    async def resource(self, kind: str, name: str) -> dict[str, Any]:
        path = f"/v1/resources/{_segment(kind)}/{_segment(name)}"
        result: dict[str, Any] = await self._request("GET", path)
        return result

    async def delete_resource(self, kind: str, name: str) -> dict[str, Any]:
        path = f"/v1/resources/{_segment(kind)}/{_segment(name)}"
        result: dict[str, Any] = await self._request("DELETE", path)
        return result

    async def put_secret(self, name: str, value: str) -> dict[str, Any]:
        """Set a secret of the token's account; the answer says whether it is new."""
        path = f"/v1/secrets/{_segment(name)}"
        resp = await self._send("PUT", path, json={"value": value})
        return {**resp.json(), "created": resp.status_code == 201}

    async def secrets(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._request("GET", "/v1/secrets"))["items"]
        return items

    async def delete_secret(self, name: str) -> None:
        await self._send("DELETE", f"/v1/secrets/{_segment(name)}")

    async def send_json(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """Any API request: its status and JSON body (an error status raised as a Fluxo
        error)."""
        resp = await self._send(method, path, **kw)
        return resp.status_code, resp.json() if resp.content else None

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A request whose status matters besides its body (201 or 200, 204)."""
        try:
            resp = await self._http.request(method, path, headers=self._headers, **kw)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"cannot reach the Fluxo server at {self._http.base_url} ({type(exc).__name__}); "
                "is it running (fluxo up)? Unset FLUXO_URL to work on the local database",
                retryable=True,
            ) from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {}
            raise _error_from(resp.status_code, body)
        return resp


def _segment(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _error_from(status: int, body: Any) -> FluxoError:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    message = error.get("message") or f"the server answered HTTP {status}"
    problems = [(p.get("location", ""), p.get("message", "")) for p in error.get("problems", [])]
    if status == 401:
        return AuthError(message)
    if status == 404:
        return NotFoundError(message)
    if status == 400:
        return MalformedRequestError(message.split("\n")[0], problems=problems)
    if status == 422:
        return ValidationError(message.split("\n")[0], problems=problems)
    if status == 409:
        return ConflictError(message)
    if status == 403:
        return PermissionDeniedError(message)
    return FluxoError(message)


class LocalClient:
    """Works on the local database with an in-process platform (engine and workers included)."""

    runs_jobs = True

    def __init__(self, platform: Any, principal: Principal) -> None:
        self.platform = platform
        self.principal = principal

    async def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        from fluxo.api.jobs import applied_json

        return applied_json(await self.platform.jobs.apply(document, self.principal))

    async def services(self) -> list[dict[str, Any]]:
        return [i.to_dict() for i in await self.platform.runtime.catalog.list()]

    async def apply_resources(self, documents: list[Any]) -> list[dict[str, Any]]:
        results = await self.platform.resources.apply_all(self.principal, documents)
        return [r.to_dict() for r in results]

    async def resources(self, kind: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = await self.platform.resources.list(self.principal, kind)
        return items

    async def resource(self, kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.platform.resources.get(self.principal, kind, name)
        return found

    async def delete_resource(self, kind: str, name: str) -> dict[str, Any]:
        gone: dict[str, Any] = await self.platform.resources.delete(self.principal, kind, name)
        return gone

    async def create_job(
        self, workflow: str, payload: Any, *, idempotency_key: str | None
    ) -> dict[str, Any]:
        job = await self.platform.jobs.create(
            self.principal, workflow, payload, idempotency_key=idempotency_key
        )
        return dict(job.model_dump(mode="json"))

    async def job(self, job_id: str, *, wait: float = 0) -> dict[str, Any]:
        jobs = self.platform.jobs
        job = await (
            jobs.wait(self.principal, job_id, wait) if wait else jobs.get(self.principal, job_id)
        )
        return dict(job.model_dump(mode="json"))

    async def jobs(self, **filters: Any) -> dict[str, Any]:
        page = await self.platform.jobs.list(self.principal, **filters)
        return dict(page.model_dump(mode="json"))


@contextlib.asynccontextmanager
async def remote_client(
    config: FluxoConfig, url: str, token: str | None
) -> AsyncIterator[HttpClient]:
    """The server at ``url``, with ``token`` or else the home's admin token."""
    if not token:
        token_file = config.home / "admin.token"
        token = await asyncio.to_thread(
            lambda: token_file.read_text().strip() if token_file.exists() else ""
        )
    if not token:
        raise ConfigError("FLUXO_URL is set but no token: set FLUXO_TOKEN (fluxo token ...)")
    client = HttpClient(url, token)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def open_client(
    config: FluxoConfig, url: str | None, token: str | None
) -> AsyncIterator[Client]:
    """The server at ``url`` if given, else the local database with an in-process platform."""
    if url:
        async with remote_client(config, url, token) as client:
            yield client
        return
    from fluxo.api.server import ADMIN_ACCOUNT, ADMIN_USER
    from fluxo.control.platform import build_platform, default_services, open_database

    db = await open_database(config)
    try:
        # Without the triggers: a CLI command does not fire cron slots while it runs.
        platform = build_platform(
            config, db, default_services(config, db), workers=1, run_triggers=False
        )
        await platform.accounts.ensure_account(ADMIN_ACCOUNT, "Default account")
        async with platform:
            yield LocalClient(platform, Principal(account_id=ADMIN_ACCOUNT, user_id=ADMIN_USER))
    finally:
        await db.close()


@dataclass
class Target:
    """Where a CLI command acts: the server (``client``, in the account of its token) or the
    local database (``db``, in ``account``)."""

    client: HttpClient | None
    db: Database | None
    account: str


@contextlib.asynccontextmanager
async def server_or_database(
    args: Any, config: FluxoConfig, *, account_on_server: bool = False
) -> AsyncIterator[Target]:
    """The server with ``FLUXO_URL`` set, else the local database (every right there).

    On the local database the account is ``--account`` or the platform's own, which is made as
    ``fluxo up`` makes it (other accounts must exist). On a server the account is the token's:
    ``--account`` is refused unless ``account_on_server`` (a command a platform admin's token
    points at another account, such as a credit), where it is passed on in ``account``.
    """
    url = os.environ.get("FLUXO_URL")
    named = getattr(args, "account", None)
    if url:
        if named and not account_on_server:
            raise ConfigError(
                "--account works on the local database; with FLUXO_URL the command acts in the "
                "account of FLUXO_TOKEN (unset FLUXO_URL, or use that account's token)"
            )
        async with remote_client(config, url, os.environ.get("FLUXO_TOKEN")) as client:
            yield Target(client, None, named or "")
        return
    db = await open_database(config)
    try:
        account = named or PLATFORM_ACCOUNT
        if account == PLATFORM_ACCOUNT:
            await AccountStore(db).ensure_account(PLATFORM_ACCOUNT, "Default account")
        yield Target(None, db, account)
    finally:
        await db.close()
