"""``fluxo``: the command line.

Commands work on the local database named by ``FLUXO_DATABASE_URL`` (default: SQLite under
``FLUXO_HOME``). Errors print one clear message to stderr and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from fluxo_core.config import FluxoConfig, normalize_database_url
from fluxo_core.errors import ConfigError, FluxoError
from fluxo_core.ir import json_schema
from fluxo_core.storage import Database
from service_runtime import Service, ServiceCatalog, ServiceRuntime
from service_runtime.transports import make_transport

__all__ = ["main"]

log = logging.getLogger("fluxo")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = FluxoConfig.from_env()
        if getattr(args, "database_url", None):
            config = config.model_copy(
                update={"database_url": normalize_database_url(args.database_url)}
            )
        result: int = asyncio.run(args.func(args, config))
        return result
    except FluxoError as exc:
        print(f"fluxo: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxo", description="Run and sell automations.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run Fluxo all-in-one: API, workers, built-in services")
    p.add_argument("--host", help="listen address (default FLUXO_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default FLUXO_PORT or 8240)")
    p.add_argument("--workers", type=int, default=2, help="worker loops (default 2)")
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("worker", help="run workers for services (built-ins, or --module)")
    p.add_argument(
        "--module",
        action="append",
        default=[],
        help="import services from MODULE (its SERVICES list); repeatable",
    )
    p.add_argument("--workers", type=int, default=1, help="worker loops in this process")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lease-margin", type=float, default=15.0, help="seconds added to leases")
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("services", help="list published services")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    p.set_defaults(func=_cmd_services)

    p = sub.add_parser("schema", help="print a JSON Schema (packet, workflow)")
    p.add_argument("name", choices=["packet", "workflow"])
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("token", help="create an API token for an account")
    p.add_argument("--account", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--name", default="cli")
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    p.set_defaults(func=_cmd_token)
    return parser


def load_services(modules: Sequence[str]) -> list[Service]:
    """Services from ``MODULE.SERVICES`` of each module."""
    found: list[Service] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot import service module {name!r}: {exc}") from exc
        services = getattr(module, "SERVICES", None)
        if not isinstance(services, list) or not all(isinstance(s, Service) for s in services):
            raise ConfigError(
                f"module {name!r} must define SERVICES, a list of services made with @service"
            )
        found.extend(services)
    return found


def default_services(config: FluxoConfig) -> list[Service]:
    from service_runtime.builtin import BuiltinConfig, builtin_services, demo_services

    builtin = builtin_services(
        BuiltinConfig(http_allow=config.http_allow, http_deny=config.http_deny)
    )
    return builtin + demo_services()


async def _open_db(config: FluxoConfig) -> Database:
    db = Database(config.database_url)
    await db.migrate()
    return db


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _cmd_worker(args: argparse.Namespace, config: FluxoConfig) -> int:
    services = load_services(args.module) if args.module else default_services(config)
    db = await _open_db(config)
    runtime = ServiceRuntime(
        db,
        services,
        transport=make_transport(
            config.transport,
            db,
            amqp_url=config.amqp_url,
            poll_interval_s=config.poll_interval_s,
        ),
        workers=args.workers,
        batch_size=args.batch_size,
        lease_margin_s=args.lease_margin,
        poll_interval_s=config.poll_interval_s,
    )
    try:
        async with runtime:
            names = ", ".join(s.ref for s in services)
            log.info("worker running %d loop(s) for %s", len(runtime.workers), names)
            print("ready", flush=True)
            await _until_signalled()
    finally:
        await db.close()
    return 0


async def _cmd_services(args: argparse.Namespace, config: FluxoConfig) -> int:
    db = await _open_db(config)
    try:
        infos = await ServiceCatalog(db).list()
    finally:
        await db.close()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
    else:
        for info in infos:
            price = info.price
            print(f"{info.ref:30} {price.per_call} {price.currency}/call  {info.description}")
    return 0


async def _cmd_schema(args: argparse.Namespace, config: FluxoConfig) -> int:
    print(json.dumps(json_schema(args.name), indent=2, sort_keys=True))
    return 0


async def _cmd_token(args: argparse.Namespace, config: FluxoConfig) -> int:
    from fluxo_core.storage import AccountStore

    db = await _open_db(config)
    try:
        store = AccountStore(db)
        await store.ensure_account(args.account)
        token = await store.issue_token(args.account, args.user, args.name)
    finally:
        await db.close()
    print(token)
    return 0


async def _cmd_up(args: argparse.Namespace, config: FluxoConfig) -> int:
    from fluxo_core.api.server import run_server

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    config = config.model_copy(update=overrides)
    db = await _open_db(config)
    try:
        await run_server(config, db, default_services(config), workers=args.workers)
    finally:
        await db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
