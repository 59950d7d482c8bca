"""``fluxo demo`` (and ``fluxo up --demo``): the server with a living demo running in it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from fluxo.control.demo import (
    PASSWORD_ENV,
    DemoDriver,
    DemoOptions,
    check_demo_allowed,
)
from fluxo.control.platform import Platform, default_services, open_database
from fluxo_core.config import FluxoConfig
from fluxo_core.storage import AccountStore

__all__ = ["add_parser", "serve"]

# The examples of a checkout, wherever the command runs from (an installed Fluxo passes
# --examples).
_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run Fluxo with a living demo: two accounts, the examples, a stream of jobs",
        description="Serve Fluxo (as `fluxo up`) and keep a demo running in it: accounts acme "
        "and globex with an admin user each, the examples applied on every engine, a job "
        "every few seconds (most succeed, some fail), globex blocked and unblocked now and "
        f"then, a quota reaching 80 %%. Passwords are printed once (or taken from {PASSWORD_ENV}). "
        "Refused when FLUXO_ENV=production, and on a database with other accounts unless --force.",
    )
    add_options(p)
    p.add_argument("--host", help="listen address (default FLUXO_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default FLUXO_PORT or 8240)")
    p.add_argument("--workers", type=int, default=2, help="worker loops (default 2)")
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    p.set_defaults(func=serve, module=[])


def add_options(p: argparse.ArgumentParser) -> None:
    """The demo's own options (``fluxo demo``; ``fluxo up --demo`` takes them too)."""
    p.add_argument("--seed", type=int, default=0, help="the same seed makes the same jobs")
    p.add_argument(
        "--interval", type=_seconds, default=2.0, help="seconds between two jobs (default 2)"
    )
    p.add_argument(
        "--force", action="store_true", help="run on a database that has other accounts too"
    )
    p.add_argument("--examples", type=Path, default=_EXAMPLES, help="the examples folder")


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError("give between 0.05 and 3600 seconds")
    return value


async def serve(args: argparse.Namespace, config: FluxoConfig, *, extra: Any = ()) -> int:
    """Check the demo may run here, then serve with the demo's driver running."""
    from fluxo.api.server import run_server

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    config = config.model_copy(update=overrides)
    options = DemoOptions(
        seed=args.seed,
        interval_s=args.interval,
        examples=args.examples,
        nodered_token_file=config.home / "demo-nodered.env",
    )
    db = await open_database(config)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start_demo(platform: Platform, token: str) -> None:
        driver = DemoDriver(platform, options, report=_say)
        for credential in await driver.setup():
            if credential.password is None:
                _say(
                    f"demo: sign in as {credential.user_id} of {credential.account_id} with the "
                    f"password shown when it was set (or set {PASSWORD_ENV} and restart)"
                )
            else:
                _say(
                    f"demo: sign in as {credential.user_id} of {credential.account_id}, "
                    f"password (shown this once): {credential.password}"
                )
        _say(f"demo: one job every {options.interval_s:g} s; stop with Ctrl-C")
        tasks.append(asyncio.create_task(driver.run(stop), name="demo"))

    try:
        await check_demo_allowed(config, AccountStore(db), force=args.force)
        services = default_services(config, db) + list(extra)
        await run_server(config, db, services, workers=args.workers, on_ready=start_demo, stop=stop)
    finally:
        stop.set()
        for task in tasks:
            # The platform has stopped under it: a tick it was in can only fail now.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await db.close()
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
