"""What a service output trigger reads: the output messages of an account's calls of a service.

A call's output messages are the packets of its result (``calls.result``), committed in the
transaction that also writes them to the service's output queue. The output queue is shared by
every account and a reader there would take messages from others; the call records are the
same messages, durable whatever the transport, and carry the account. So a trigger reads them
by ``(account, service, finish time)`` (:data:`ix_calls_account_service_finished`), never
another account's.

A poison output (one no job can start with) is buried in a dead-letter queue of the SQL queue
table with its reason, once: the inbox row keyed by the trigger and the output's id is claimed
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import orjson
import sqlalchemy as sa

from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.inbox import InboxStore
from fluxo_core.storage.tables import calls, queue_messages, trigger_state

__all__ = ["FinishedCall", "ServiceOutputStore"]


class FinishedCall(NamedTuple):
    """A succeeded call of the service, with its output packets as stored (a JSON array)."""

    id: str
    version: str
    user_id: str
    job_id: str | None
    finished_at: float
    result: bytes | None


class ServiceOutputStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._inbox = InboxStore(db)
        self._page = (
            sa.select(
                calls.c.id,
                calls.c.version,
                calls.c.user_id,
                calls.c.job_id,
                calls.c.finished_at,
                calls.c.result,
            )
            .where(
                calls.c.account_id == sa.bindparam("account_id"),
                calls.c.service == sa.bindparam("service"),
                calls.c.status == "succeeded",
                sa.or_(
                    calls.c.finished_at > sa.bindparam("after"),
                    sa.and_(
                        calls.c.finished_at == sa.bindparam("after"),
                        calls.c.id > sa.bindparam("after_id"),
                    ),
                ),
            )
            .order_by(calls.c.finished_at, calls.c.id)
            .limit(sa.bindparam("lim", type_=sa.Integer))
        )

    async def finished(
        self,
        account_id: str,
        service: str,
        *,
        after: float,
        after_id: str = "",
        limit: int = 500,
    ) -> list[FinishedCall]:
        """The account's succeeded calls of ``service`` that finished after ``(after,
        after_id)``, in that order (keyset pages)."""
        params = {
            "account_id": account_id,
            "service": service,
            "after": after,
            "after_id": after_id,
            "lim": limit,
        }
        rows = await self.db.read(lambda conn: conn.execute(self._page, params).all())
        return [FinishedCall(*r) for r in rows]

    async def move_cursor(self, account_id: str, name: str, position: float) -> None:
        """Move trigger ``name``'s read position forward to ``position`` (never back)."""
        query = (
            sa.update(trigger_state)
            .where(
                trigger_state.c.account_id == account_id,
                trigger_state.c.name == name,
                sa.or_(trigger_state.c.cursor.is_(None), trigger_state.c.cursor < position),
            )
            .values(cursor=position)
        )
        await self.db.transact(lambda tx: tx.execute(query))

    async def bury(
        self,
        consumer: str,
        dead_queue: str,
        message_id: str,
        body: bytes,
        headers: dict[str, str],
        reason: str,
        now: float,
    ) -> bool:
        """Put one output in ``dead_queue`` with ``reason``, once per ``(consumer,
        message_id)``; False if it was buried before."""

        def run(tx: Transaction) -> bool:
            if not self._inbox.claim(tx, [(consumer, message_id)], now):
                return False
            tx.execute(
                sa.insert(queue_messages).values(
                    queue=dead_queue,
                    message_id=message_id,
                    body=body,
                    headers=orjson.dumps(headers).decode(),
                    attempt=0,
                    max_attempts=0,
                    visible_at=now,
                    last_error=reason,
                    created_at=now,
                )
            )
            return True

        return await self.db.transact(run)

    async def buried(self, dead_queue: str) -> Sequence[tuple[str, str | None, bytes]]:
        """``(message id, reason, body)`` of what lies in ``dead_queue``, oldest first."""
        query = (
            sa.select(
                queue_messages.c.message_id, queue_messages.c.last_error, queue_messages.c.body
            )
            .where(queue_messages.c.queue == dead_queue)
            .order_by(queue_messages.c.id)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [(r[0], r[1], bytes(r[2])) for r in rows]
