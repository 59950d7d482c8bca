"""Prometheus metrics of one platform: its state read from storage, its events counted as they pass.

Two kinds of metric, kept apart on purpose:

- **State** (jobs by workflow, engine and status; calls by service and status; queue depth and
  the age of the oldest visible message; outbox lag; usage units and amount) is in the database
  already, shared by every process. :meth:`PlatformMetrics.scrape` reads it at scrape time, in one
  read-only snapshot, and hands it to a custom collector: a restarted process, or another
  replica, reports the same numbers, and nothing is counted on the hot path.
- **Events** (how long each handler run took, per service; admission refusals by reason) are
  stored nowhere: :class:`MetricsInterceptor` counts them at the named places of a call, in this
  process (a ``fluxo worker`` process does not serve them). So are the errors external engines
  (Node-RED, Argo) answer when a job is started or cancelled on them
  (:meth:`PlatformMetrics.engine_error`, which the remote-job runner calls).

Each :class:`PlatformMetrics` has a :class:`~prometheus_client.CollectorRegistry` of its own, never
the global default one, so several platforms in one process (tests, benchmarks) do not collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import FluxoError
from fluxo_core.storage import (
    CallStore,
    Database,
    OutboxStore,
    QueueStore,
    Transaction,
    UsageLedger,
)
from fluxo_core.storage.jobs import JobStore
from fluxo_core.storage.quotas import Quota
from service_runtime.interceptors import AdmitRequest, Interceptor, ResultRequest

__all__ = ["CONTENT_TYPE", "MetricsInterceptor", "PlatformMetrics", "StorageSnapshot"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Prometheus text format's content type, as ``/metrics`` answers it."""

MICROS = 1_000_000
# Handler runs take from well under a millisecond (inline transforms) up to a service's timeout.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class StorageSnapshot:
    """What storage holds, as one scrape read it (``now``: epoch seconds of the read)."""

    now: float
    jobs: list[tuple[str, str, str, int]]  # workflow, engine, status, jobs
    calls: list[tuple[str, str, int]]  # service, status, calls
    queues: list[tuple[str, int, float | None]]  # queue, messages, oldest visible created_at
    outbox: tuple[int, float | None]  # rows, oldest created_at
    usage: list[tuple[str, str, int, int]]  # service, currency, units, amount in micros


class _StorageCollector(Collector):
    """Yields the latest :class:`StorageSnapshot` as metric families (nothing before the first)."""

    def __init__(self) -> None:
        self.snapshot: StorageSnapshot | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s is None:
            return
        jobs = GaugeMetricFamily(
            "fluxo_jobs",
            "Jobs by workflow, engine and status (all accounts).",
            labels=["workflow", "engine", "status"],
        )
        for workflow, engine, status, count in s.jobs:
            jobs.add_metric([workflow, engine, status], count)
        calls = GaugeMetricFamily(
            "fluxo_calls", "Service calls by service and status.", labels=["service", "status"]
        )
        for service, status, count in s.calls:
            calls.add_metric([service, status], count)
        depth = GaugeMetricFamily(
            "fluxo_queue_depth",
            "Messages in a queue of the SQL transport (leased and delayed ones too).",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "fluxo_queue_oldest_age_seconds",
            "Age of the oldest message ready to deliver in a queue (0: none is ready).",
            labels=["queue"],
        )
        for queue, count, oldest in s.queues:
            depth.add_metric([queue], count)
            age.add_metric([queue], _age(s.now, oldest))
        rows, oldest = s.outbox
        outbox = GaugeMetricFamily(
            "fluxo_outbox_messages", "Outbox rows the relay has not published yet.", value=rows
        )
        lag = GaugeMetricFamily(
            "fluxo_outbox_lag_seconds",
            "Age of the oldest unpublished outbox row (0: the outbox is empty).",
            value=_age(s.now, oldest),
        )
        units = CounterMetricFamily(
            "fluxo_usage_units",
            "Units charged by the usage ledger, by service and currency.",
            labels=["service", "currency"],
        )
        amount = CounterMetricFamily(
            "fluxo_usage_amount",
            "Amount charged by the usage ledger, in units of the currency.",
            labels=["service", "currency"],
        )
        for service, currency, charged_units, micros in s.usage:
            units.add_metric([service, currency], charged_units)
            amount.add_metric([service, currency], micros / MICROS)
        yield from (jobs, calls, depth, age, outbox, lag, units, amount)


def _age(now: float, since: float | None) -> float:
    # Clamped: another host's clock may run a little ahead of this one.
    return 0.0 if since is None else max(0.0, now - since)


class MetricsInterceptor(Interceptor):
    """Counts what happens to calls in this process: handler latency and admission refusals.

    Placed after admission and any extra interceptors (quotas), so it sees every refusal of
    theirs. Latencies are observed after the commit that applies their runs: a batch that rolls
    back (and runs again) is not counted twice.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "fluxo_call_duration_seconds",
            "How long a service's handler ran, per run (retried attempts included).",
            ["service", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._latency_of: dict[tuple[str, str], Histogram] = {}
        self.refusals = Counter(
            "fluxo_admission_refusals",
            "Calls refused admission, by reason and by where (gateway, job, worker).",
            ["reason", "place"],
            registry=registry,
        )

    async def admit(self, request: AdmitRequest) -> None:
        self._count_refusals(request)

    def admit_in_transaction(self, request: AdmitRequest, tx: Transaction) -> None:
        self._count_refusals(request)

    def _count_refusals(self, request: AdmitRequest) -> None:
        for refusal in request.refusals:
            if refusal is not None:
                self.refusals.labels(refusal_reason(refusal), request.place).inc()

    def count_refusal(self, refusal: FluxoError, place: str, calls: int = 1) -> None:
        """Count ``calls`` refused where no admit request shows it (a calls quota refuses a
        gateway submission inside the transaction that would have written it)."""
        self.refusals.labels(refusal_reason(refusal), place).inc(calls)

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        if not request.results:
            return
        runs = [(r.service.name, r.status, r.duration_s) for r in request.results]
        children = self._latency_of

        async def observe() -> None:
            for service, status, duration_s in runs:
                # The labelled child, looked up once per (service, status): labels() costs
                # more than the observation itself, once per call on the worker's path.
                child = children.get((service, status))
                if child is None:
                    child = children[service, status] = self.latency.labels(service, status)
                child.observe(duration_s)

        tx.after_commit(observe)


def refusal_reason(error: FluxoError) -> str:
    """A refusal's reason as a label: the ``reason`` its interceptor gave, else its error code."""
    reason = error.context.get("reason")
    return reason if isinstance(reason, str) else error.code


class PlatformMetrics:
    """The metrics of one platform: a registry of its own, the interceptor that counts its
    events, and the storage read of each scrape."""

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.interceptor = MetricsInterceptor(self.registry)
        self.quota_events = Counter(
            "fluxo_quota_events",
            "Quotas that reached 80% or 100% of their limit in a period, by kind and threshold "
            "(recorded by this process; each quota, period and threshold once platform-wide).",
            ["kind", "threshold"],
            registry=self.registry,
        )
        self._storage = _StorageCollector()
        self.registry.register(self._storage)
        self.engine_errors = Counter(
            "fluxo_engine_errors",
            "Errors an engine answered the control plane with, by engine, operation and code.",
            ["engine", "operation", "code"],
            registry=self.registry,
        )

    def engine_error(self, engine: str, operation: str, error: FluxoError) -> None:
        """Count an error ``engine`` answered ``operation`` (start, cancel) with."""
        self.engine_errors.labels(engine, operation, error.code).inc()

    def count_quota_event(self, quota: Quota, threshold: int) -> None:
        """Count a quota event once its transaction committed (the enforcer's ``on_event``)."""
        self.quota_events.labels(quota.kind, str(threshold)).inc()

    async def snapshot(self) -> StorageSnapshot:
        """What storage holds now, in one read-only transaction."""
        now = self.clock.time()
        return await self.db.read(
            lambda conn: StorageSnapshot(
                now=now,
                jobs=JobStore.counts_by_status_on(conn),
                calls=CallStore.counts_by_status_on(conn),
                queues=QueueStore.depths_on(conn, now),
                outbox=OutboxStore.lag_on(conn),
                usage=UsageLedger.totals_on(conn),
            )
        )

    async def scrape(self) -> bytes:
        """Every metric in the Prometheus text format (content type :data:`CONTENT_TYPE`)."""
        snapshot = await self.snapshot()
        # No await between setting the snapshot and rendering it: a concurrent scrape cannot
        # slip its own snapshot in between.
        self._storage.snapshot = snapshot
        return generate_latest(self.registry)
