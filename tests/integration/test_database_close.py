"""Closing the database returns and closes every pooled connection, even one a cancelled caller's
transaction still holds: the database thread goes on with the transaction after its caller
stopped waiting (a trigger source cancelled at the platform's exit), and closing waits for it,
where it used to close the pool under it and leave the connection to the garbage collector (an
"unclosed connection" warning in whichever test ran next).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from fluxo_core.storage import Database, Transaction
from tests.support.connections import close_left_open, track_connections

pytestmark = pytest.mark.timeout(60)


async def cancelled_midway(db: Database, work: Callable[[Callable[[], None]], Any]) -> None:
    """Start ``work`` (given a function that blocks its database thread for a while), cancel
    its caller once the thread is inside it, and see the caller stop waiting at once."""
    inside = threading.Event()

    def hold() -> None:
        inside.set()
        time.sleep(0.4)

    task = asyncio.create_task(work(hold))
    assert await asyncio.to_thread(inside.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("how", ["transact", "read"])
async def test_closing_waits_for_a_cancelled_callers_transaction_and_closes_its_connection(
    pg_schema_url: str, how: str
) -> None:
    db = Database(pg_schema_url)
    opened = track_connections(db)
    await db.migrate()

    def in_transaction(hold: Callable[[], None]) -> Any:
        def run(tx: Transaction) -> None:
            tx.execute(sa.text("SELECT 1"))
            hold()

        return db.transact(run)

    def in_read(hold: Callable[[], None]) -> Any:
        def run(conn: sa.Connection) -> None:
            conn.execute(sa.text("SELECT 1"))
            hold()

        return db.read(run)

    await cancelled_midway(db, in_transaction if how == "transact" else in_read)
    assert db.engine.pool.checkedout() == 1  # the thread goes on with the connection
    await db.close()
    assert close_left_open(opened) == 0, "the database closed with a connection still out"
