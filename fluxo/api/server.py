"""Serve Fluxo all-in-one: the API plus the service runtime in this process (``fluxo up``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from fluxo.api.app import HOME, Face, create_app
from fluxo.api.common import ADMIN_ACCOUNT
from fluxo.control.platform import Platform, build_platform, tune_gc_for_serving
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError
from fluxo_core.redaction import install_log_redaction
from fluxo_core.storage import AccountStore, Database, Role, UserStore
from service_runtime import Service

__all__ = ["ADMIN_ACCOUNT", "ensure_admin_token", "run_server"]

log = logging.getLogger(__name__)

ADMIN_USER = "admin"


async def ensure_admin_token(accounts: AccountStore, home: Path) -> tuple[str, bool]:
    """The admin token of this Fluxo home: created on first start, kept in a 0600 file.

    Returns ``(token, created)``.
    """
    path = home / "admin.token"
    saved = await asyncio.to_thread(_read_token, path)
    if saved:
        return saved, False
    await accounts.ensure_account(ADMIN_ACCOUNT, "Default account")
    await UserStore(accounts.db, accounts).ensure(ADMIN_ACCOUNT, ADMIN_USER, Role.PLATFORM_ADMIN)
    token = await accounts.issue_token(ADMIN_ACCOUNT, ADMIN_USER, "admin (fluxo up)")
    await asyncio.to_thread(_write_token, path, token)
    return token, True


def _read_token(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _write_token(path: Path, token: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Created 0600 from the start: the token is never readable by other users, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")


async def run_server(
    config: FluxoConfig,
    db: Database,
    services: Sequence[Service],
    *,
    workers: int = 2,
    on_ready: Callable[[Platform, str], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
    terminal: bool | None = None,
    faces: Sequence[Face] = (),
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``): API on ``config.host:port``, workers, engines.

    ``faces``: what to mount beside the API (the CLI hands in the web console).
    ``terminal``: whether standard output is a terminal (default: ask it). The admin token is
    printed once, when it is made, and only to a terminal: output that goes to a file or a log
    collector gets the path of the token file instead.
    """
    install_log_redaction()
    await asyncio.to_thread(config.ensure_home)
    # Bound before the engines are built: they are told the port it got (the system picks one
    # for port 0), so their gateway calls come here unless FLUXO_PUBLIC_URL says otherwise.
    sock = await _listen(config.host, config.port)
    config = config.model_copy(update={"port": sock.getsockname()[1]})
    try:
        platform = build_platform(config, db, services, workers=workers)
        token, created = await ensure_admin_token(platform.accounts, config.home)
    except BaseException:
        sock.close()
        raise
    app = create_app(platform, max_packet_bytes=config.max_packet_bytes, faces=faces)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with platform:
        tune_gc_for_serving()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            url = f"http://{config.host}:{config.port}"
            print(f"Fluxo is running at {url}", flush=True)
            if HOME in app:
                print(f"  console: {url}{app[HOME]}", flush=True)
            print(f"  database: {db.display_url}", flush=True)
            if set(config.engines) - {"step"}:
                print(f"  engines call it at: {config.gateway_url}", flush=True)
            print(
                _admin_token_line(token, created, config.home / "admin.token", terminal),
                flush=True,
            )
            if on_ready is not None:
                await on_ready(platform, token)
            await stop.wait()
        finally:
            await runner.cleanup()


async def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (the first address the host resolves to)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's sites do
            sock.bind(address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is another Fluxo running "
            "there? Stop it, or choose another port with --port or FLUXO_PORT",
            setting="FLUXO_PORT",
        ) from exc
    sock.setblocking(False)
    return sock


def _admin_token_line(token: str, created: bool, path: Path, terminal: bool | None) -> str:
    if not created:
        return f"  admin token: in {path}"
    if terminal if terminal is not None else sys.stdout.isatty():
        return f"  admin token (shown this once; saved in {path}): {token}"
    return f"  admin token: created and saved in {path} (not printed: the output is not a terminal)"
