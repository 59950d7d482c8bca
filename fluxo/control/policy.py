"""Admission: may this account make this call now?

An interceptor the control plane hands to the runtime at start-up, first in its chain (the runtime
never imports the control plane). It admits at the gateway, at job creation and again in the
worker before each handler runs, so blocking an account stops its in-flight work at its next call,
on any engine.
What decisions rest on (an account's block, a job's status) is cached for ``cache_s`` (well under
a second), so a block or a cancel takes effect within that, as measured by the injected clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from fluxo.control.blocks import BlockIndex, blocked_error
from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import AdmissionDeniedError
from fluxo_core.storage import AccountStore, Transaction
from fluxo_core.storage.blocks import BlockStore
from fluxo_core.storage.jobs import JobStore
from service_runtime.interceptors import AdmitRequest, CallRequest, Interceptor

__all__ = ["Admission"]


class Admission(Interceptor):
    """The admission policy: calls of blocked accounts, and the steps of cancelled or failed
    jobs, are refused. (Quotas will be an interceptor of their own, after this one.)"""

    # Job statuses cached at most; a worker sees an unbounded stream of job ids.
    MAX_CACHED_JOBS = 10_000

    def __init__(
        self, accounts: AccountStore, *, cache_s: float = 0.5, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.accounts = accounts
        self.clock = clock
        self._jobs = JobStore(accounts.db)
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, str | None]] = {}
        # job id -> (expiry, status), in expiry order: a refreshed entry moves to the end.
        self._statuses: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        # Blocks (fluxo block): every live one in memory, reloaded at most every cache_s.
        self.blocks = BlockIndex(BlockStore(accounts.db, clock=clock), cache_s=cache_s, clock=clock)

    async def admit(self, request: AdmitRequest) -> None:
        # Two queries for the whole batch (only what the caches miss), not two per call.
        accounts, jobs = self._stale(request.calls)
        reasons = await self.accounts.blocked_reasons(accounts) if accounts else {}
        await self.blocks.refresh()
        statuses = await self._jobs.statuses(jobs) if jobs else {}
        self._learn(reasons, jobs, statuses)
        self._decide(request)

    def admit_in_transaction(self, request: AdmitRequest, tx: Transaction) -> None:
        # For a worker that runs inline handlers in its write transaction: from the caches,
        # the rest read through the transaction's connection.
        accounts, jobs = self._stale(request.calls)
        reasons = self.accounts.blocked_reasons_on(tx.conn, accounts)
        self.blocks.refresh_on(tx.conn)
        self._learn(reasons, jobs, self._jobs.statuses_on(tx.conn, jobs))
        self._decide(request)

    def _decide(self, request: AdmitRequest) -> None:
        for index, call in request.pending():
            refusal = self._refusal(call)
            if refusal is not None:
                request.refuse(index, refusal)

    def _stale(self, requests: Sequence[CallRequest]) -> tuple[list[str], list[str]]:
        """The accounts and jobs of ``requests`` whose cached answer is missing or expired."""
        now = self.clock.monotonic()
        accounts = {r.account_id for r in requests}
        jobs = {r.job_id for r in requests if r.job_id is not None}
        return (
            [a for a in accounts if (c := self._cache.get(a)) is None or c[0] <= now],
            [j for j in jobs if (c := self._statuses.get(j)) is None or c[0] <= now],
        )

    def _learn(
        self, reasons: dict[str, str | None], jobs: list[str], statuses: dict[str, str]
    ) -> None:
        """Cache block reasons by account and the statuses of ``jobs`` (absent: unknown)."""
        now = self.clock.monotonic()
        for account_id, reason in reasons.items():
            self._cache[account_id] = (now + self.cache_s, reason)
        for job_id in jobs:
            self._remember(job_id, statuses.get(job_id), now)

    def _refusal(self, request: CallRequest) -> AdmissionDeniedError | None:
        """Why ``request`` may not run, from the caches (filled by the caller just before)."""
        cached = self._cache.get(request.account_id)
        reason = cached[1] if cached is not None else None
        if reason is not None:
            return AdmissionDeniedError(
                f"account {request.account_id!r} may not call {request.service}: {reason}",
                account_id=request.account_id,
                service=request.service,
                job_id=request.job_id,
                reason="account_blocked",
            )
        block = self.blocks.match(request)
        if block is not None:
            return blocked_error(block, request)
        if request.job_id is not None:
            known = self._statuses.get(request.job_id)
            status = known[1] if known is not None else None
            if status in ("cancelled", "failed"):
                return AdmissionDeniedError(
                    f"job {request.job_id} is {status}; its remaining steps do not run",
                    job_id=request.job_id,
                    service=request.service,
                    reason=f"job_{status}",
                )
        return None

    def forget_job(self, job_id: str) -> None:
        """Drop what is cached of a job (it was resumed or retried: read its status again)."""
        self._statuses.pop(job_id, None)

    def _remember(self, job_id: str, status: str | None, now: float) -> None:
        self._statuses[job_id] = (now + self.cache_s, status)
        self._statuses.move_to_end(job_id)
        if len(self._statuses) > self.MAX_CACHED_JOBS:
            # Expired entries first (they are the oldest), then the oldest live ones if need be.
            while self._statuses:
                expiry, _ = next(iter(self._statuses.values()))
                if expiry > now and len(self._statuses) <= self.MAX_CACHED_JOBS:
                    break
                self._statuses.popitem(last=False)
