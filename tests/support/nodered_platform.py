"""A platform that runs imported Node-RED flows on the step engine, for the step-engine tests
of Node-RED semantics (context, node state, files, events, self-calls, loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fluxo.control.platform import Platform
from fluxo_core.storage import Database
from services import nodered_node_service

__all__ = ["nodered_platform"]


@asynccontextmanager
async def nodered_platform(
    db: Database, accounts: Iterable[str] = ("acme", "other")
) -> AsyncIterator[Platform]:
    """A running platform on ``db`` with the ``nodered-node`` service, quick to poll and with
    no admission cache (a test's change of limits applies at once), ``accounts`` created."""
    platform = Platform(
        db, [nodered_node_service()], workers=2, poll_interval_s=0.05, admission_cache_s=0
    )
    for account in accounts:
        await platform.accounts.ensure_account(account)
    async with platform:
        yield platform
