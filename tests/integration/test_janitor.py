"""Housekeeping removes only what has expired."""

from __future__ import annotations

import time

import sqlalchemy as sa

from fluxo_core.storage import Database, bulk_insert
from fluxo_core.storage.tables import inbox, queue_messages, quota_refusals
from service_runtime.janitor import Janitor


def message(queue: str, created_at: float, attempt: int = 0) -> dict[str, object]:
    return {
        "queue": queue,
        "message_id": f"{queue}-{created_at}-{attempt}",
        "body": b"{}",
        "headers": "{}",
        "attempt": attempt,
        "max_attempts": 5,
        "visible_at": created_at,
        "lease_token": None,
        "last_error": None,
        "created_at": created_at,
    }


async def test_expired_unread_outputs_and_old_inbox_rows_are_removed(db: Database) -> None:
    now = time.time()
    old, fresh = now - 7200, now - 10
    await db.transact(
        lambda tx: bulk_insert(
            tx,
            queue_messages,
            [
                message("svc.echo@1.out", old),  # expired, unread: goes
                message("svc.echo@1.out", fresh),  # fresh: stays
                message("svc.echo@1.out", old, attempt=1),  # being read by someone: stays
                message("svc.echo@1.in", old),  # input queues are never trimmed
                message("engine.step.results", old),  # nor a caller's reply queue
            ],
        )
    )
    await db.transact(
        lambda tx: bulk_insert(
            tx,
            inbox,
            [
                {"consumer": "c", "message_id": "old", "processed_at": now - 30 * 86400},
                {"consumer": "c", "message_id": "new", "processed_at": now - 60},
            ],
        )
    )
    await db.transact(
        lambda tx: bulk_insert(
            tx,
            quota_refusals,
            [
                {"call_id": "old", "account_id": "a", "quota": "q", "created_at": now - 2 * 86400},
                {"call_id": "new", "account_id": "a", "quota": "q", "created_at": now - 60},
            ],
        )
    )
    janitor = Janitor(db, output_retention_s=3600, inbox_retention_s=86400)
    assert await janitor.run_once(now) == (1, 2)
    left = await db.read(
        lambda c: c.execute(sa.select(queue_messages.c.queue, queue_messages.c.attempt)).all()
    )
    assert sorted((r.queue, r.attempt) for r in left) == [
        ("engine.step.results", 0),
        ("svc.echo@1.in", 0),
        ("svc.echo@1.out", 0),
        ("svc.echo@1.out", 1),
    ]
    ids = await db.read(lambda c: c.scalars(sa.select(inbox.c.message_id)).all())
    assert list(ids) == ["new"]
    marks = await db.read(lambda c: c.scalars(sa.select(quota_refusals.c.call_id)).all())
    assert list(marks) == ["new"]
    assert await janitor.run_once(now) == (0, 0)
