"""One process's share of the service runtime: transport, catalog, gateway and workers together.

``fluxo up``, ``fluxo worker``, the tests and the benchmarks all assemble the runtime here, so there
is one way to wire it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import ConfigError
from fluxo_core.storage import Database
from service_runtime.catalog import ServiceCatalog
from service_runtime.deferred import DeferredCalls
from service_runtime.gateway import Gateway
from service_runtime.interceptors import (
    Interceptor,
    InterceptorChain,
    Tracing,
    default_interceptors,
)
from service_runtime.janitor import Janitor
from service_runtime.sdk import Service
from service_runtime.terms import ServiceTerms
from service_runtime.transports import SqlTransport, Transport
from service_runtime.worker import Worker

__all__ = ["ServiceRuntime"]

log = logging.getLogger(__name__)


class ServiceRuntime:
    """Gateway plus ``workers`` worker loops for ``services`` over one database and transport.

    Args:
        db: the migrated database.
        services: the services this process runs (it may run none and only call others).
        transport: a transport instance; defaults to the SQL transport on ``db``.
        workers: concurrent worker loops (each claims its own batches).
        batch_size: messages a worker claims and commits together.
        lease_s: a claim's lease, renewed while its handlers run; a crashed worker's messages
            become visible again within it.
        janitor: housekeeping to run in this process (one per deployment is enough).
        interceptors: what runs at the named places of every call (admit, record, result), in
            this order; the gateway and the workers share them. Defaults to
            :func:`~service_runtime.interceptors.default_interceptors` (metering, tracing): a
            list without :class:`~service_runtime.interceptors.Metering` charges nothing.
        terms_ttl_s: how stale the terms the platform applied to services may get in this
            process (the catalog and the workers share one copy, read again when older).
        clock: what that expiry reads (a test moves a ManualClock).
    """

    def __init__(
        self,
        db: Database,
        services: Sequence[Service] = (),
        *,
        transport: Transport | None = None,
        workers: int = 1,
        batch_size: int = 500,
        lease_s: float = 5.0,
        max_packet_bytes: int = 1_048_576,
        interceptors: Sequence[Interceptor] | None = None,
        poll_interval_s: float = 1.0,
        janitor: Janitor | None = None,
        terms_ttl_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if workers < 0:
            raise ConfigError("workers must be zero or more")
        self.db = db
        self.services = list(services)
        self.transport: Transport = (
            transport
            if transport is not None
            else SqlTransport(db, poll_interval_s=poll_interval_s)
        )
        self.terms = ServiceTerms(db, ttl_s=terms_ttl_s, clock=clock)
        self.catalog = ServiceCatalog(db, self.terms)
        self.interceptors = InterceptorChain(
            default_interceptors() if interceptors is None else interceptors
        )
        # The chain's tracing, for the engines that end jobs (their spans); None without one.
        self.tracing: Tracing | None = next(
            (i for i in self.interceptors.interceptors if isinstance(i, Tracing)), None
        )
        self.gateway = Gateway(
            db,
            self.transport,
            self.catalog,
            max_packet_bytes=max_packet_bytes,
            interceptors=self.interceptors,
            poll_interval_s=poll_interval_s,
        )
        # Completes calls whose handlers answered DEFERRED, in the transaction ending their work.
        self.deferred = DeferredCalls(db, self.transport, self.interceptors)
        self.workers = [
            Worker(
                db,
                self.transport,
                self.services,
                batch_size=batch_size,
                lease_s=lease_s,
                interceptors=self.interceptors,
                terms=self.terms,
            )
            for _ in range(workers if self.services else 0)
        ]
        self.poll_interval_s = poll_interval_s
        self.janitor = janitor
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Publish the services and start the worker loops."""
        await self.transport.start()
        if self.services:
            await self.catalog.publish(self.services)
        self._stop.clear()
        for i, worker in enumerate(self.workers):
            self._tasks.append(
                asyncio.create_task(
                    worker.run(self._stop, idle_timeout_s=self.poll_interval_s),
                    name=f"fluxo-worker-{i}",
                )
            )

        if self.janitor is not None:
            self._tasks.append(
                asyncio.create_task(self.janitor.run(self._stop), name="fluxo-janitor")
            )

    async def stop(self) -> None:
        """Let the workers finish their current batch, then stop."""
        self._stop.set()
        for worker in self.workers:
            worker.request_stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.transport.close()
        if self.tracing is not None:
            await self.tracing.aclose()  # the spans of the last batches

    async def __aenter__(self) -> ServiceRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
