"""Blocks: placing, lifting and listing them, and the index admission decides with.

A block stops an account's work on one target: the whole account, a user, a workflow, a service
or a trigger. It is enforced by :class:`~fluxo.control.policy.Admission` when a job is created
and at every service call (gateway and worker), on every engine: a job it stops ends ``blocked``
(see :mod:`fluxo.control.job_control` for resuming it once the block is lifted).

Who may do what: a token of an account places and lifts blocks on its own users, workflows,
services and triggers. Blocking a whole account is platform-wide: only a token of the admin
account may (``account`` names the account). A block placed by the admin on another account is
lifted by the admin only. Engine tokens do neither.

The :class:`BlockIndex` keeps every live block in memory and reloads them at most every
``cache_s`` seconds (one query for all accounts, whatever the call rate), and at once after a
place or lift in this process: a block takes effect within ``cache_s`` in every process.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from fluxo.control.auth import acts_for_platform
from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import BlockedError, PermissionDeniedError, ValidationError
from fluxo_core.ir import new_packet_id
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.blocks import BLOCK_KINDS, BlockAuditRow, BlockKind, BlockRow, BlockStore
from service_runtime.interceptors import CallRequest

__all__ = [
    "ADMIN_ACCOUNT",
    "BlockAuditEntry",
    "BlockIndex",
    "BlockRecord",
    "BlockService",
]

ADMIN_ACCOUNT = "default"
"""The platform admin's account (the same as ``fluxo.api.common.ADMIN_ACCOUNT``)."""

MAX_REASON = 2000
MAX_TARGET = 200


class BlockRecord(BaseModel):
    """A block as the API shows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    account_id: str
    kind: BlockKind
    target: str
    reason: str
    placed_by: str
    placed_at: datetime
    ends_at: datetime | None = None
    lifted_by: str | None = None
    lifted_at: datetime | None = None
    active: bool


class BlockAuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int
    block_id: str
    account_id: str
    action: str
    actor: str
    at: datetime
    reason: str | None = None


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def block_record(row: BlockRow, now: float) -> BlockRecord:
    return BlockRecord(
        id=row.id,
        account_id=row.account_id,
        kind=row.kind,  # the column holds only BLOCK_KINDS
        target=row.target,
        reason=row.reason,
        placed_by=row.placed_by,
        placed_at=datetime.fromtimestamp(row.placed_at, UTC),
        ends_at=_ts(row.ends_at),
        lifted_by=row.lifted_by,
        lifted_at=_ts(row.lifted_at),
        active=row.active_at(now),
    )


def _audit_entry(row: BlockAuditRow) -> BlockAuditEntry:
    return BlockAuditEntry(
        seq=row.seq,
        block_id=row.block_id,
        account_id=row.account_id,
        action=row.action,
        actor=row.actor,
        at=datetime.fromtimestamp(row.at, UTC),
        reason=row.detail,
    )


def workflow_name(ref: str | None) -> str | None:
    """``name`` of a ``name@version`` reference."""
    return None if ref is None else ref.partition("@")[0]


class BlockIndex:
    """Every live block, in memory, by account: what admission matches each call against.

    Args:
        store: where blocks are kept.
        cache_s: how stale the index may get (it reloads when older, and after a change made
            through :class:`BlockService` in this process).
    """

    def __init__(self, store: BlockStore, *, cache_s: float = 0.5, clock: Clock = SYSTEM_CLOCK):
        self.store = store
        self.cache_s = cache_s
        self.clock = clock
        self._expires = float("-inf")
        self._by_account: dict[str, dict[tuple[str, str], list[BlockRow]]] = {}

    @property
    def stale(self) -> bool:
        return self.clock.monotonic() >= self._expires

    def invalidate(self) -> None:
        """Reload before the next decision (a block was placed or lifted here)."""
        self._expires = float("-inf")

    async def refresh(self) -> None:
        if self.stale:
            self._load(await self.store.live())

    def refresh_on(self, conn: Any) -> None:
        """:meth:`refresh` through a connection the caller holds (inside its transaction)."""
        if self.stale:
            self._load(self.store.live_on(conn))

    def _load(self, rows: list[BlockRow]) -> None:
        by_account: dict[str, dict[tuple[str, str], list[BlockRow]]] = defaultdict(dict)
        for row in rows:
            by_account[row.account_id].setdefault((row.kind, row.target), []).append(row)
        self._by_account = dict(by_account)
        self._expires = self.clock.monotonic() + self.cache_s

    def match(self, request: CallRequest) -> BlockRow | None:
        """The block that holds ``request`` now, if any (from the index as last loaded)."""
        targets = self._by_account.get(request.account_id)
        if targets is None:  # the common case: nothing of this account is blocked
            return None
        keys = [
            ("account", request.account_id),
            ("user", request.user_id),
            ("service", request.service),
        ]
        workflow = workflow_name(request.workflow)
        if workflow is not None:
            keys.append(("workflow", workflow))
        if request.service.startswith("workflow:"):  # a job being created
            keys.append(("workflow", request.service.removeprefix("workflow:")))
        return self._first(targets, keys)

    def match_trigger(self, account_id: str, trigger: str) -> BlockRow | None:
        """The block that holds trigger ``trigger`` of the account (or the whole account)."""
        targets = self._by_account.get(account_id)
        if targets is None:
            return None
        return self._first(targets, [("account", account_id), ("trigger", trigger)])

    def _first(
        self, targets: dict[tuple[str, str], list[BlockRow]], keys: list[tuple[str, str]]
    ) -> BlockRow | None:
        now: float | None = None
        for key in keys:
            for row in targets.get(key, ()):
                if row.ends_at is None:
                    return row
                now = self.clock.time() if now is None else now
                if now < row.ends_at:
                    return row
        return None


def blocked_error(block: BlockRow, request: CallRequest) -> BlockedError:
    """The refusal of ``request`` by ``block``: names the block, its reason and the lift."""
    where = f" (job {request.job_id}, step {request.step_id})" if request.job_id else ""
    return BlockedError(
        f"{block.kind} {block.target!r} is blocked: {block.reason} (block {block.id}); the call "
        f"of {request.service}{where} was refused. Lift it with `fluxo block lift {block.id}`, "
        "then resume the job with `fluxo jobs resume JOB`",
        block_id=block.id,
        block_reason=block.reason,
        target=f"{block.kind}/{block.target}",
        job_id=request.job_id,
        service=request.service,
        reason="blocked",
    )


class BlockService:
    """Blocks as the API and the CLI handle them, scoped to the caller's account."""

    def __init__(self, db: Database, index: BlockIndex, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = index.store
        self.index = index
        self.clock = clock
        self.db = db

    async def place(
        self,
        principal: Principal,
        *,
        kind: Any,
        target: Any = None,
        reason: Any,
        ends_at: Any = None,
        account: Any = None,
    ) -> BlockRecord:
        """Place a block; see the module docstring for who may block what."""
        _no_engine(principal, "place blocks")
        problems: list[tuple[str, str]] = []
        if kind not in BLOCK_KINDS:
            problems.append(("kind", f"one of {', '.join(BLOCK_KINDS)}"))
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            problems.append(("reason", f"a non-empty text of at most {MAX_REASON} characters"))
        if account is not None and not (isinstance(account, str) and account):
            problems.append(("account", "an account id"))
        account_id = account if isinstance(account, str) and account else principal.account_id
        if kind == "account" and target is None:
            target = account_id
        if not isinstance(target, str) or not target or len(target) > MAX_TARGET:
            problems.append(("target", f"the blocked thing's name, 1 to {MAX_TARGET} characters"))
        end = _end_time(ends_at, problems)
        if end is not None and end <= self.clock.time():
            problems.append(("ends_at", "in the past; give a time to come, or none"))
        if problems:
            raise ValidationError(
                "invalid block: " + "; ".join(f"{loc}: {msg}" for loc, msg in problems),
                problems=problems,
            )
        if kind == "account" and target != account_id:
            raise ValidationError(
                "an account block's target is the account itself; give `account` (or leave "
                "target out)",
                problems=[("target", f"expected {account_id!r}")],
            )
        is_admin = acts_for_platform(principal)
        if (kind == "account" or account_id != principal.account_id) and not is_admin:
            raise PermissionDeniedError(
                "blocking a whole account, or anything of another account, is platform-wide: "
                "use a token of the admin account (fluxo up prints it)"
            )
        row = await self.store.place(
            block_id="blk-" + new_packet_id(),
            account_id=account_id,
            kind=kind,
            target=target,
            reason=reason.strip(),
            placed_by=_actor(principal),
            ends_at=end,
        )
        self.index.invalidate()
        return block_record(row, self.clock.time())

    async def lift(self, principal: Principal, block_id: str) -> BlockRecord:
        _no_engine(principal, "lift blocks")
        is_admin = acts_for_platform(principal)
        row = await self.store.get(None if is_admin else principal.account_id, block_id)
        placed_by_account = row.placed_by.partition("/")[0]
        if not is_admin and (row.kind == "account" or placed_by_account != principal.account_id):
            raise PermissionDeniedError(
                f"block {block_id} was placed by the platform admin; only a token of the admin "
                "account may lift it"
            )
        lifted = await self.store.lift(row.account_id, block_id, lifted_by=_actor(principal))
        self.index.invalidate()
        return block_record(lifted, self.clock.time())

    async def get(self, principal: Principal, block_id: str) -> BlockRecord:
        _no_engine(principal, "read blocks")
        row = await self.store.get(principal.account_id, block_id)
        return block_record(row, self.clock.time())

    async def find(self, principal: Principal, *, active_only: bool = False) -> list[BlockRecord]:
        """The account's blocks, newest first (the admin account's tokens see every account's)."""
        _no_engine(principal, "read blocks")
        account = None if acts_for_platform(principal) else principal.account_id
        rows = await self.store.find(account, active_only=active_only)
        now = self.clock.time()
        return [block_record(r, now) for r in rows]

    async def audit(self, principal: Principal) -> list[BlockAuditEntry]:
        _no_engine(principal, "read blocks")
        account = None if acts_for_platform(principal) else principal.account_id
        return [_audit_entry(r) for r in await self.store.audit(account)]


def _actor(principal: Principal) -> str:
    return f"{principal.account_id}/{principal.user_id}"


def _no_engine(principal: Principal, what: str) -> None:
    if principal.engine is not None:
        raise PermissionDeniedError(f"an engine's token may not {what}; use a user's token")


def _end_time(value: Any, problems: list[tuple[str, str]]) -> float | None:
    """``ends_at`` as epoch seconds: an RFC 3339 time with its offset, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.timestamp()
    problems.append(("ends_at", "an RFC 3339 time with its offset, e.g. 2026-12-31T18:00:00Z"))
    return None
