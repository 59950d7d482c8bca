"""Blocks: what stops an account's work, kept with an audit log of who placed and lifted each.

A block targets one thing of one account: the whole ``account``, a ``user``, a ``workflow``, a
``service`` or a ``trigger`` (named by its id or name in ``target``). It holds from ``placed_at``
until it is lifted (``lifted_at``) or its optional ``ends_at`` passes. Rows are never deleted, and
every place and lift also writes a ``block_audit`` row in the same transaction.

Paused workflows live here too (``workflow_pauses``): like a block they hold a workflow's work,
but they only keep new jobs queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import sqlalchemy as sa

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import ConflictError, NotFoundError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import block_audit, blocks, workflow_pauses

__all__ = [
    "BLOCK_KINDS",
    "BlockAuditRow",
    "BlockKind",
    "BlockRow",
    "BlockStore",
    "PauseRow",
]

BlockKind = Literal["account", "user", "workflow", "service", "trigger"]
BLOCK_KINDS: Final = ("account", "user", "workflow", "service", "trigger")


@dataclass(frozen=True, slots=True)
class BlockRow:
    id: str
    account_id: str
    kind: str
    target: str
    reason: str
    placed_by: str
    placed_at: float
    ends_at: float | None
    lifted_by: str | None
    lifted_at: float | None

    def active_at(self, now: float) -> bool:
        """Whether the block holds at epoch time ``now``."""
        return self.lifted_at is None and (self.ends_at is None or now < self.ends_at)


@dataclass(frozen=True, slots=True)
class BlockAuditRow:
    seq: int
    block_id: str
    account_id: str
    action: str
    actor: str
    at: float
    detail: str | None


@dataclass(frozen=True, slots=True)
class PauseRow:
    account_id: str
    workflow: str
    paused_by: str
    paused_at: float


def _block(row: Any) -> BlockRow:
    return BlockRow(
        row.id,
        row.account_id,
        row.kind,
        row.target,
        row.reason,
        row.placed_by,
        row.placed_at,
        row.ends_at,
        row.lifted_by,
        row.lifted_at,
    )


class BlockStore:
    """The ``blocks``, ``block_audit`` and ``workflow_pauses`` tables."""

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock
        self._live = sa.select(blocks).where(blocks.c.lifted_at.is_(None))

    # -- blocks ----------------------------------------------------------------------------------

    async def place(
        self,
        *,
        block_id: str,
        account_id: str,
        kind: BlockKind,
        target: str,
        reason: str,
        placed_by: str,
        ends_at: float | None = None,
    ) -> BlockRow:
        now = self.clock.time()
        row = BlockRow(
            block_id, account_id, kind, target, reason, placed_by, now, ends_at, None, None
        )

        def run(tx: Transaction) -> BlockRow:
            tx.execute(
                sa.insert(blocks).values(
                    id=row.id,
                    account_id=account_id,
                    kind=kind,
                    target=target,
                    reason=reason,
                    placed_by=placed_by,
                    placed_at=now,
                    ends_at=ends_at,
                )
            )
            self._audit(tx, row.id, account_id, "place", placed_by, now, reason)
            tx.notify("policy")
            return row

        return await self.db.transact(run)

    async def lift(self, account_id: str | None, block_id: str, *, lifted_by: str) -> BlockRow:
        """Lift a block (``account_id`` None: of any account, for the platform admin).

        Raises:
            NotFoundError: no such block (in that account).
            ConflictError: the block was lifted before.
        """
        now = self.clock.time()

        def run(tx: Transaction) -> BlockRow:
            found = self._get_on(tx.conn, account_id, block_id)
            if found.lifted_at is not None:
                raise ConflictError(
                    f"block {block_id} was lifted already (by {found.lifted_by}); nothing to lift",
                    block_id=block_id,
                )
            tx.execute(
                sa.update(blocks)
                .where(blocks.c.id == block_id, blocks.c.lifted_at.is_(None))
                .values(lifted_at=now, lifted_by=lifted_by)
            )
            self._audit(tx, block_id, found.account_id, "lift", lifted_by, now, None)
            tx.notify("policy")
            return BlockRow(
                found.id,
                found.account_id,
                found.kind,
                found.target,
                found.reason,
                found.placed_by,
                found.placed_at,
                found.ends_at,
                lifted_by,
                now,
            )

        return await self.db.transact(run)

    async def get(self, account_id: str | None, block_id: str) -> BlockRow:
        return await self.db.read(lambda conn: self._get_on(conn, account_id, block_id))

    def _get_on(self, conn: sa.Connection, account_id: str | None, block_id: str) -> BlockRow:
        query = sa.select(blocks).where(blocks.c.id == block_id)
        if account_id is not None:
            query = query.where(blocks.c.account_id == account_id)
        row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(
                f"no block {block_id!r} in this account; list them with `fluxo block list`",
                block_id=block_id,
            )
        return _block(row)

    async def find(
        self, account_id: str | None, *, active_only: bool = False, limit: int = 500
    ) -> list[BlockRow]:
        """Blocks newest first (``account_id`` None: every account's)."""
        query = sa.select(blocks).order_by(blocks.c.placed_at.desc(), blocks.c.id).limit(limit)
        if account_id is not None:
            query = query.where(blocks.c.account_id == account_id)
        if active_only:
            query = query.where(blocks.c.lifted_at.is_(None))
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        found = [_block(r) for r in rows]
        if active_only:
            now = self.clock.time()
            found = [b for b in found if b.active_at(now)]
        return found

    async def live(self) -> list[BlockRow]:
        """Every block not lifted, of every account (expired ones included: the reader compares
        ``ends_at`` with its own clock). What the admission cache holds."""
        return await self.db.read(self.live_on)

    def live_on(self, conn: sa.Connection) -> list[BlockRow]:
        return [_block(r) for r in conn.execute(self._live).all()]

    async def audit(self, account_id: str | None, *, limit: int = 500) -> list[BlockAuditRow]:
        """The audit log, newest first."""
        query = sa.select(block_audit).order_by(block_audit.c.seq.desc()).limit(limit)
        if account_id is not None:
            query = query.where(block_audit.c.account_id == account_id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [
            BlockAuditRow(r.seq, r.block_id, r.account_id, r.action, r.actor, r.at, r.detail)
            for r in rows
        ]

    @staticmethod
    def _audit(
        tx: Transaction,
        block_id: str,
        account_id: str,
        action: str,
        actor: str,
        at: float,
        detail: str | None,
    ) -> None:
        tx.execute(
            sa.insert(block_audit).values(
                block_id=block_id,
                account_id=account_id,
                action=action,
                actor=actor,
                at=at,
                detail=detail,
            )
        )

    # -- paused workflows ------------------------------------------------------------------------

    async def pause(self, account_id: str, workflow: str, *, paused_by: str) -> PauseRow:
        """Pause a workflow (pausing a paused one keeps the first pause)."""
        now = self.clock.time()

        def run(tx: Transaction) -> PauseRow:
            found = self.pause_on(tx.conn, account_id, workflow)
            if found is not None:
                return found
            tx.execute(
                sa.insert(workflow_pauses).values(
                    account_id=account_id, workflow=workflow, paused_by=paused_by, paused_at=now
                )
            )
            return PauseRow(account_id, workflow, paused_by, now)

        return await self.db.transact(run)

    def unpause(self, tx: Transaction, account_id: str, workflow: str) -> bool:
        """Remove the pause in the caller's transaction; False if it was not paused."""
        result = tx.execute(
            sa.delete(workflow_pauses).where(
                workflow_pauses.c.account_id == account_id,
                workflow_pauses.c.workflow == workflow,
            )
        )
        return bool(result.rowcount)

    def pause_on(self, conn: sa.Connection, account_id: str, workflow: str) -> PauseRow | None:
        row = conn.execute(
            sa.select(workflow_pauses).where(
                workflow_pauses.c.account_id == account_id,
                workflow_pauses.c.workflow == workflow,
            )
        ).first()
        return (
            None
            if row is None
            else PauseRow(row.account_id, row.workflow, row.paused_by, row.paused_at)
        )

    async def paused(self, account_id: str) -> Sequence[PauseRow]:
        query = sa.select(workflow_pauses).where(workflow_pauses.c.account_id == account_id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [PauseRow(r.account_id, r.workflow, r.paused_by, r.paused_at) for r in rows]
