"""Quotas and limits, enforced at the named places of every call and at job creation.

:class:`QuotaEnforcer` is an interceptor the control plane puts right after admission (so it
never counts a call admission refused). Each kind of quota is held where it can be held exactly:

``calls`` (per UTC day or month)
    counted in the transaction that writes the calls (``on_record``), by one conditional upsert
    per quota that adds only while the total stays within the limit. A gateway submission that
    does not fit is refused whole (:class:`~fluxo_core.errors.QuotaExceededError`, nothing
    written); calls an engine writes in its own transaction (the step engine's next step) cannot
    be refused there, so those that do not fit are marked and the worker refuses them (the step
    fails with the same error). A job is refused at creation once a quota that covers it is
    used up.
``spend`` (per UTC day or month, in one currency)
    what a call costs is known only once it ran: added in the transaction that applies its
    result (``on_result``, exactly once, like the usage record), and new calls and jobs are
    refused once the total reached the limit (calls already running may take it past).
``concurrent_jobs``
    checked inside the transaction that creates the jobs (:meth:`QuotaEnforcer.admit_jobs`),
    with the quota's row locked on PostgreSQL: two creations never both take the last place
    (:class:`~fluxo_core.errors.ConcurrencyLimitError`).
``rate``
    a token bucket per quota in this process's memory, asked at the gateway and at job creation:
    fast, but per process: with N API processes an account gets up to N times the rate. The
    refusal (:class:`~fluxo_core.errors.RateLimitedError`, 429) says when the bucket has room
    again (``Retry-After``).

Quota definitions are cached per account for ``cache_s`` (a changed quota holds within that).
Reaching 80% and 100% of a calls or spend quota writes an event, once per quota and period
(:meth:`~fluxo_core.storage.quotas.QuotaStore.record_events_on`), reported to ``on_event`` after
the commit (the metrics count them).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import (
    ConcurrencyLimitError,
    FluxoError,
    QuotaExceededError,
    RateLimitedError,
    ValidationError,
)
from fluxo_core.storage import Transaction
from fluxo_core.storage.quotas import (
    RATE_PERIODS,
    Quota,
    QuotaEvent,
    QuotaSpec,
    QuotaStore,
    period_key,
)
from service_runtime.interceptors import (
    AdmitRequest,
    CallRequest,
    Interceptor,
    RecordRequest,
    ResultRequest,
)

__all__ = [
    "QuotaEnforcer",
    "QuotaEventHook",
    "RefusalHook",
    "event_json",
    "parse_quota_spec",
    "quota_answer",
    "quota_json",
    "quota_period",
    "quotas_answer",
]

QuotaEventHook = Callable[[Quota, int], None]
"""Told ``(quota, threshold)`` after the commit that recorded an 80% or 100% event."""
RefusalHook = Callable[[FluxoError, str, int], None]
"""Told ``(error, place, calls)`` when a submission is refused inside its transaction, where
no admit request shows it (the metrics count it)."""

UsageKey = tuple[str, str, str]  # account, quota name, period key


@dataclass(slots=True)
class _Bucket:
    """A token bucket: ``tokens`` (up to the limit) as of ``at`` (monotonic seconds)."""

    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class _Checks:
    """The quotas one call is checked against at admission: rates, and used-up quotas."""

    rates: list[Quota]
    used: list[tuple[Quota, UsageKey]]


class QuotaEnforcer(Interceptor):
    """Enforces an account's quotas (see the module's docstring for where each kind is held)."""

    MAX_BUCKETS = 100_000

    def __init__(
        self,
        store: QuotaStore,
        *,
        cache_s: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
        on_event: QuotaEventHook | None = None,
        on_refusal: RefusalHook | None = None,
    ) -> None:
        self.store = store
        self.on_refusal = on_refusal
        self.cache_s = cache_s
        self.clock = clock
        self.on_event = on_event
        # account -> (expiry, its quotas); an account without quotas is cached as ().
        self._quotas: dict[str, tuple[float, tuple[Quota, ...]]] = {}
        self._buckets: dict[tuple[str, str, int, str | None], _Bucket] = {}
        # What calls and spend quotas used, as last read: (expiry, used), for ``cache_s``.
        self._usage: dict[UsageKey, tuple[float, int]] = {}

    # -- definitions ---------------------------------------------------------------------------

    def _stale(self, accounts: set[str]) -> list[str]:
        now = self.clock.monotonic()
        return [a for a in accounts if (c := self._quotas.get(a)) is None or c[0] <= now]

    def _learn(self, accounts: list[str], found: dict[str, list[Quota]]) -> None:
        expiry = self.clock.monotonic() + self.cache_s
        for account_id in accounts:
            self._quotas[account_id] = (expiry, tuple(found.get(account_id, ())))

    async def _load(self, accounts: set[str]) -> None:
        stale = self._stale(accounts)
        if stale:
            self._learn(stale, await self.store.by_account(stale))

    def _load_on(self, tx: Transaction, accounts: set[str]) -> None:
        stale = self._stale(accounts)
        if stale:
            self._learn(stale, self.store.by_account_on(tx.conn, stale))

    def _of(self, account_id: str) -> tuple[Quota, ...]:
        cached = self._quotas.get(account_id)
        return cached[1] if cached is not None else ()

    # -- admit ---------------------------------------------------------------------------------

    async def admit(self, request: AdmitRequest) -> None:
        await self._load({c.account_id for _, c in request.pending()})
        checks = self._checks(request)
        if request.place != "worker":
            self._limit_rate(request, checks)
        stale = self._stale_usage(checks)
        if stale:
            self._learn_usage(await self.store.used(stale))
        ids = self._marked_candidates(request) if request.place == "worker" else []
        refused = await self.store.refused_calls(ids) if ids else {}
        self._decide(request, checks, refused)

    def admit_in_transaction(self, request: AdmitRequest, tx: Transaction) -> None:
        self._load_on(tx, {c.account_id for _, c in request.pending()})
        checks = self._checks(request)
        if request.place != "worker":
            self._limit_rate(request, checks)
        stale = self._stale_usage(checks)
        if stale:
            self._learn_usage(self.store.used_on(tx.conn, stale))
        ids = self._marked_candidates(request) if request.place == "worker" else []
        refused = self.store.refused_calls_on(tx.conn, ids) if ids else {}
        self._decide(request, checks, refused)

    def _checks(self, request: AdmitRequest) -> dict[int, _Checks]:
        """For each pending call, the quotas that concern it before it is admitted: rates (at
        the gateway and job creation), and the calls and spend quotas whose use is checked
        (at job creation both: a job that could make no call is refused; for a call the
        spend ones, its calls being counted exactly where they are written). Worked out once
        per account, service and workflow of the batch."""
        now = self.clock.time()
        periods = {p: period_key(p, now) for p in ("day", "month")}
        kinds = ("calls", "spend") if request.place == "job" else ("spend",)
        memo: dict[tuple[str, str, str | None], _Checks] = {}
        checks: dict[int, _Checks] = {}
        for index, call in request.pending():
            group = (call.account_id, call.service, call.workflow)
            found = memo.get(group)
            if found is None:
                rates, used = [], []
                for q in self._of(call.account_id):
                    if not _covers(q, call, request.place):
                        continue
                    if q.kind == "rate":
                        rates.append(q)
                    elif q.kind in kinds:
                        key = (q.account_id, q.name, periods[q.spec.period or "day"])
                        used.append((q, key))
                found = memo[group] = _Checks(rates, used)
            if found.rates or found.used:
                checks[index] = found
        return checks

    def _stale_usage(self, checks: dict[int, _Checks]) -> list[UsageKey]:
        now = self.clock.monotonic()
        keys = {key for c in checks.values() for _, key in c.used}
        return sorted(k for k in keys if (u := self._usage.get(k)) is None or u[0] <= now)

    def _learn_usage(self, used: dict[UsageKey, int]) -> None:
        expiry = self.clock.monotonic() + self.cache_s
        if len(self._usage) > self.MAX_BUCKETS:
            self._usage.clear()
        for key, value in used.items():
            self._usage[key] = (expiry, value)

    def _marked_candidates(self, request: AdmitRequest) -> list[str]:
        """Calls of jobs the worker is about to run whose account has a calls quota: an engine
        may have written them past it (direct calls are refused before they are written)."""
        return [
            c.call_id
            for _, c in request.pending()
            if c.call_id is not None
            and c.job_id is not None
            and any(q.kind == "calls" for q in self._of(c.account_id))
        ]

    def _decide(
        self, request: AdmitRequest, checks: dict[int, _Checks], refused: dict[str, str]
    ) -> None:
        for index, call in request.pending() if refused else ():
            if call.call_id is not None and call.call_id in refused:
                name = refused[call.call_id]
                quota = next((q for q in self._of(call.account_id) if q.name == name), None)
                limit = quota.limit if quota else None
                request.refuse(index, _exceeded(call.account_id, name, "calls", limit, None, None))
        # The calls of one group share their quotas and what those used: one decision each.
        decided: dict[int, QuotaExceededError | None] = {}
        for index, found in checks.items():
            if not found.used or request.refusals[index] is not None:
                continue
            group = id(found)
            if group not in decided:
                decided[group] = self._used_up(found)
            error = decided[group]
            if error is not None:
                request.refuse(index, error)

    def _used_up(self, found: _Checks) -> QuotaExceededError | None:
        for q, key in found.used:
            cached = self._usage.get(key)
            spent = cached[1] if cached is not None else 0
            if spent >= q.limit:
                return _exceeded(q.account_id, q.name, q.kind, q.limit, spent, key[2])
        return None

    def _limit_rate(self, request: AdmitRequest, checks: dict[int, _Checks]) -> None:
        """Take one token per call from each rate quota covering it; refuse the calls the
        buckets have no token for. The calls of one group take theirs together."""
        groups: dict[int, tuple[_Checks, list[int]]] = {}
        for index, found in checks.items():
            if found.rates:
                groups.setdefault(id(found), (found, []))[1].append(index)
        now = self.clock.monotonic()
        for found, indexes in groups.values():
            granted = len(indexes)
            wait_s, limiting = 0.0, None
            for q in found.rates:
                given, wait = self._take(q, granted, now)
                if given < granted:
                    granted, wait_s, limiting = given, wait, q
            if limiting is None:
                continue
            error = RateLimitedError(
                f"account {limiting.account_id!r} is over its rate limit {limiting.name!r} "
                f"({limiting.limit} per {limiting.spec.period}); retry after "
                f"{math.ceil(wait_s)} s, or raise the limit with 'fluxo quota set'",
                retry_after_s=wait_s,
                quota=limiting.name,
                limit=limiting.limit,
                reason="rate_limited",
            )
            for index in indexes[granted:]:
                request.refuse(index, error)

    def _take(self, quota: Quota, count: int, now: float) -> tuple[int, float]:
        """Take up to ``count`` tokens of ``quota``'s bucket: how many it gave, and (if fewer)
        the seconds until it has one again."""
        key = (quota.account_id, quota.name, quota.limit, quota.spec.period)
        rate = quota.limit / RATE_PERIODS[quota.spec.period or "second"]
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._buckets.clear()  # full buckets again: at worst one burst more
            bucket = self._buckets[key] = _Bucket(float(quota.limit), now)
        else:
            bucket.tokens = min(float(quota.limit), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
        given = min(count, int(bucket.tokens))
        bucket.tokens -= given
        if given == count:
            return given, 0.0
        return given, (1.0 - bucket.tokens) / rate

    # -- record: calls quotas ------------------------------------------------------------------

    def on_record(self, request: RecordRequest, tx: Transaction) -> None:
        if not request.calls:
            return
        self._load_on(tx, {c.account_id for c in request.calls})
        counted: dict[int, list[str]] = defaultdict(list)  # by id(quota), as in on_result
        chosen: dict[int, Quota] = {}
        service = request.service.name
        memo: dict[tuple[str, str | None], list[Quota]] = {}
        for call in request.calls:
            group = (call.account_id, call.workflow)
            quotas = memo.get(group)
            if quotas is None:
                quotas = memo[group] = [
                    q
                    for q in self._of(call.account_id)
                    if q.kind == "calls" and _covers_call(q, service, call.workflow)
                ]
            for q in quotas:
                counted[id(q)].append(call.id)
                chosen[id(q)] = q
        if not counted:
            return
        now = self.clock.time()
        refused: set[str] = set()
        for ident, ids in counted.items():
            q = chosen[ident]
            key = period_key(q.spec.period or "day", now)
            ids = [i for i in ids if i not in refused]
            used = self.store.add_on(tx, q, key, len(ids), within=True)
            if used is None and request.place == "gateway":
                # Nothing of the submission is written: the transaction rolls back whole.
                error = _exceeded(q.account_id, q.name, "calls", q.limit, None, key)
                if self.on_refusal is not None:
                    self.on_refusal(error, "gateway", len(request.calls))
                raise error
            if used is None:
                # An engine's calls: as many as fit are counted, the rest refused by the worker.
                room = q.limit - self.store.used_on(tx.conn, [(q.account_id, q.name, key)]).get(
                    (q.account_id, q.name, key), 0
                )
                fit = ids[: max(0, room)]
                used = self.store.add_on(tx, q, key, len(fit), within=True) if fit else None
                if used is None:
                    fit = []
                self.store.refuse_calls_on(tx, q, ids[len(fit) :])
                refused.update(ids[len(fit) :])
                if used is None:
                    continue
                ids = fit
            self._events(tx, q, key, used - len(ids), used, now)

    # -- result: spend quotas ------------------------------------------------------------------

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        succeeded = [r for r in request.results if r.status == "succeeded"]
        if not succeeded:
            return
        accounts = {r.packet.account_id for r in succeeded}
        self._load_on(tx, accounts)
        if not any(q.kind == "spend" for a in accounts for q in self._of(a)):
            return
        # Keyed by the quota's identity, not by the quota: hashing a dataclass, once per call,
        # costs more than the rest of this.
        spent: dict[int, int] = defaultdict(int)
        chosen: dict[int, Quota] = {}
        # A batch holds few services, accounts and workflows: what covers what, and what a
        # number of items costs, is worked out once for each.
        covering: dict[tuple[str, str, str, str | None], list[Quota]] = {}
        prices: dict[tuple[str, str, int], int] = {}
        for r in succeeded:
            svc, packet = r.service, r.packet
            group = (packet.account_id, svc.name, svc.version, packet.workflow)
            quotas = covering.get(group)
            if quotas is None:
                quotas = covering[group] = [
                    q
                    for q in self._of(packet.account_id)
                    if q.kind == "spend"
                    and q.spec.currency == svc.price.currency
                    and _covers_call(q, svc.name, packet.workflow)
                ]
            if not quotas:
                continue
            items = sum(len(p) if isinstance(p, list) else 1 for p in r.outputs)
            amount = prices.get((svc.name, svc.version, items))
            if amount is None:
                amount = prices[svc.name, svc.version, items] = svc.price.charge(items)[2]
            for q in quotas:
                spent[id(q)] += amount
                chosen[id(q)] = q
        now = self.clock.time()
        for ident, amount in spent.items():
            q = chosen[ident]
            if amount <= 0:
                continue
            key = period_key(q.spec.period or "day", now)
            used = self.store.add_on(tx, q, key, amount, within=False)
            if used is not None:
                self._events(tx, q, key, used - amount, used, now)

    # -- job creation: concurrent jobs ---------------------------------------------------------

    def admit_jobs(self, tx: Transaction, account_id: str, workflow: str, count: int) -> None:
        """Refuse ``count`` new jobs of ``workflow`` if they would run more jobs at once than a
        concurrency limit allows; inside the transaction that creates them.

        Raises:
            ConcurrencyLimitError: naming the limit and how many jobs run.
        """
        self._load_on(tx, {account_id})
        for q in self._of(account_id):
            if q.kind != "concurrent_jobs":
                continue
            if q.spec.scope == "workflow" and q.spec.target != workflow:
                continue
            running = self.store.running_jobs_on(tx, q)
            if running + count > q.limit:
                where = f"workflow {workflow!r}" if q.spec.scope == "workflow" else "the account"
                raise ConcurrencyLimitError(
                    f"{running} job(s) of {where} are queued or running, and the concurrency "
                    f"limit {q.name!r} allows {q.limit}; start it once one ends, or raise the "
                    "limit with 'fluxo quota set'",
                    quota=q.name,
                    limit=q.limit,
                    running=running,
                    reason="concurrency_limit",
                )

    # -- events --------------------------------------------------------------------------------

    def _events(
        self, tx: Transaction, quota: Quota, key: str, before: int, after: int, now: float
    ) -> None:
        recorded = self.store.record_events_on(tx, quota, key, before, after, now)
        hook = self.on_event
        if recorded and hook is not None:

            async def report() -> None:
                for threshold in recorded:
                    hook(quota, threshold)

            tx.after_commit(report)


def _covers(quota: Quota, call: CallRequest, place: str) -> bool:
    """Whether ``quota`` covers ``call`` (at job creation, the job being created)."""
    scope = quota.spec.scope
    if scope == "account":
        return True
    if scope == "workflow":
        return _workflow_name(call.workflow) == quota.spec.target
    return place != "job" and call.service == quota.spec.target


def _covers_call(quota: Quota, service: str, workflow: str | None) -> bool:
    scope = quota.spec.scope
    if scope == "account":
        return True
    if scope == "workflow":
        return _workflow_name(workflow) == quota.spec.target
    return service == quota.spec.target


def _workflow_name(ref: str | None) -> str | None:
    return None if ref is None else ref.partition("@")[0]


def _exceeded(
    account_id: str,
    name: str,
    kind: str,
    limit: int | None,
    used: int | None,
    key: str | None,
) -> QuotaExceededError:
    what = "calls" if kind == "calls" else "spend"
    period = f" for {key}" if key else ""
    return QuotaExceededError(
        f"account {account_id!r} used up its {what} quota {name!r}{period} (limit {limit}); "
        "raise it with 'fluxo quota set', or wait for the next period",
        quota=name,
        kind=kind,
        limit=limit,
        used=used,
        period=key,
        reason="quota_exceeded",
    )


def quota_period(quota: Quota, now: float) -> str | None:
    """The period ``now`` falls in for a calls or spend quota (None for the other kinds)."""
    if quota.kind in ("calls", "spend") and quota.spec.period is not None:
        return period_key(quota.spec.period, now)
    return None


# -- the quotas as the API and the CLI show and take them ------------------------------------------

_SPEC_FIELDS = ("kind", "limit", "scope", "target", "period", "currency")
_MICROS = Decimal(1_000_000)


def parse_quota_spec(body: Any) -> QuotaSpec:
    """A quota's spec from its JSON form: ``{"kind", "limit", "scope", "target", "period",
    "currency"}``; a spend ``limit`` is an exact decimal amount (``"12.50"``).

    Raises:
        ValidationError: every problem, located (``body.limit``).
    """
    if not isinstance(body, dict):
        raise ValidationError(
            "a quota is a JSON object: {kind, limit, scope, target, period, currency}",
            problems=[("body", "expected an object")],
        )
    problems = [(f"body.{k}", "unknown field") for k in sorted(set(body) - set(_SPEC_FIELDS))]
    for field in ("kind", "scope", "target", "period", "currency"):
        if body.get(field) is not None and not isinstance(body[field], str):
            problems.append((f"body.{field}", "a string"))
    if "kind" not in body:
        problems.append(("body.kind", "required: calls, spend, concurrent_jobs or rate"))
    if "limit" not in body:
        problems.append(("body.limit", "required"))
    if problems:
        raise ValidationError("the quota is not valid", problems=problems)
    kind = body["kind"]
    limit = _limit(body["limit"], spend=kind == "spend")
    spec = QuotaSpec(
        kind=kind,
        limit=limit if limit is not None else -1,
        scope=body.get("scope") or "account",
        target=body.get("target"),
        period=body.get("period"),
        currency=body.get("currency") or ("EUR" if kind == "spend" else None),
    )
    found = [(f"body.{where}", what) for where, what in spec.problems()]
    if limit is None:
        found = [p for p in found if p[0] != "body.limit"]
        found.append(
            (
                "body.limit",
                'a decimal amount, e.g. "12.50"' if kind == "spend" else "a whole number",
            )
        )
    if found:
        raise ValidationError("the quota is not valid", problems=found)
    return spec


def _limit(raw: Any, *, spend: bool) -> int | None:
    if isinstance(raw, bool):
        return None
    if not spend:
        return raw if isinstance(raw, int) else None
    if not isinstance(raw, str | int):
        return None
    try:
        micros = Decimal(str(raw)) * _MICROS
    except InvalidOperation:
        return None
    if not micros.is_finite() or micros != micros.to_integral_value():
        return None
    return int(micros)


def quota_json(quota: Quota, used: int | None, period: str | None) -> dict[str, Any]:
    """A quota as the API answers it: its spec, and for calls and spend what it used in the
    current period."""
    spec = quota.spec
    spend = spec.kind == "spend"
    return {
        "name": quota.name,
        "kind": spec.kind,
        "scope": spec.scope,
        "target": spec.target,
        "limit": _amount(spec.limit) if spend else spec.limit,
        "period": spec.period,
        "currency": spec.currency,
        "current_period": period,
        "used": None if used is None else (_amount(used) if spend else used),
        "created_at": datetime.fromtimestamp(quota.created_at, UTC).isoformat(),
        "updated_at": datetime.fromtimestamp(quota.updated_at, UTC).isoformat(),
    }


def _amount(micros: int) -> str:
    return f"{Decimal(micros).scaleb(-6).normalize():f}"


async def quotas_answer(store: QuotaStore, account_id: str, now: float) -> list[dict[str, Any]]:
    """The account's quotas as :func:`quota_json` shows them, with their current use."""
    found = await store.list(account_id)
    periods = {q.name: quota_period(q, now) for q in found}
    keys = [(account_id, q.name, p) for q in found if (p := periods[q.name]) is not None]
    used = await store.used(keys)
    return [
        quota_json(q, used.get((account_id, q.name, p)) if (p := periods[q.name]) else None, p)
        for q in found
    ]


async def quota_answer(store: QuotaStore, account_id: str, name: str, now: float) -> dict[str, Any]:
    quota = await store.get(account_id, name)
    period = quota_period(quota, now)
    used = None
    if period is not None:
        used = (await store.used([(account_id, name, period)]))[(account_id, name, period)]
    return quota_json(quota, used, period)


def event_json(event: QuotaEvent) -> dict[str, Any]:
    spend = event.kind == "spend"
    return {
        "quota": event.quota,
        "kind": event.kind,
        "period": event.period_key,
        "threshold": event.threshold,
        "used": _amount(event.used) if spend else event.used,
        "limit": _amount(event.limit) if spend else event.limit,
        "created_at": datetime.fromtimestamp(event.created_at, UTC).isoformat(),
    }
