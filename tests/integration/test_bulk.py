"""bulk_insert with skip_conflicts and returning: which rows went in, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fluxo_core.storage import Database, Transaction, bulk_insert, bulk_update, one_of
from fluxo_core.storage.tables import inbox, job_joins


def _rows(*ids: str) -> list[dict[str, Any]]:
    return [{"consumer": "c", "message_id": i, "processed_at": 1.0} for i in ids]


async def _stored(db: Database) -> list[str]:
    query = sa.select(inbox.c.message_id).where(inbox.c.consumer == "c")
    return sorted(await db.read(lambda conn: list(conn.scalars(query))))


async def test_returns_every_row_when_none_collides(db: Database) -> None:
    got = await db.transact(
        lambda tx: bulk_insert(
            tx, inbox, _rows("a", "b", "c"), skip_conflicts=True, returning=["message_id"]
        )
    )
    assert [r.message_id for r in got] == ["a", "b", "c"]
    assert await _stored(db) == ["a", "b", "c"]


async def test_returns_only_the_rows_that_went_in(db: Database) -> None:
    await db.transact(lambda tx: bulk_insert(tx, inbox, _rows("b")))
    # "b" exists already, and "d" comes twice in the batch: only its first copy goes in.
    got = await db.transact(
        lambda tx: bulk_insert(
            tx, inbox, _rows("a", "b", "d", "d", "e"), skip_conflicts=True, returning=["message_id"]
        )
    )
    assert [r.message_id for r in got] == ["a", "d", "e"]
    assert await _stored(db) == ["a", "b", "d", "e"]


async def test_a_collision_rolls_back_nothing_else_of_the_transaction(db: Database) -> None:
    # A skipped row is skipped alone: what the transaction wrote before stays, and so does
    # every row of the batch that did not collide.
    def run(tx: Transaction) -> list[Any]:
        bulk_insert(tx, inbox, _rows("x"))
        return bulk_insert(
            tx, inbox, _rows("x", "y"), skip_conflicts=True, returning=["message_id"]
        )

    got = await db.transact(run)
    assert [r.message_id for r in got] == ["y"]
    assert await _stored(db) == ["x", "y"]


async def test_one_of_matches_exactly_the_listed_values(db: Database) -> None:
    await db.transact(lambda tx: bulk_insert(tx, inbox, _rows("a", "b", "c", "it's")))
    match = one_of(inbox.c.message_id, "ids", sqlite=db.is_sqlite)
    query = sa.select(inbox.c.message_id).where(match).order_by(inbox.c.message_id)

    async def found(ids: list[str]) -> list[str]:
        return list(await db.read(lambda conn: conn.scalars(query, {"ids": ids}).all()))

    assert await found(["c", "a", "zz", "a"]) == ["a", "c"]
    assert await found(["it's"]) == ["it's"]  # bound as data, never as SQL text
    assert await found([]) == []


async def test_values_round_trip_exactly_bytes_nulls_and_floats(db: Database) -> None:
    # On PostgreSQL the rows travel as JSON (bytes as hex): nothing may change on the way.
    raw = bytes(range(256))
    rows = [
        {"job_id": "j", "join_key": "k", "idx": 0, "payload": raw},
        {"job_id": "j", "join_key": "k", "idx": 1, "payload": b""},
    ]
    stamp = 1764748800.123456789
    await db.transact(lambda tx: bulk_insert(tx, job_joins, rows))
    await db.transact(lambda tx: bulk_insert(tx, inbox, [{**_rows("t")[0], "processed_at": stamp}]))
    update = [{"job_id": "j", "join_key": "k", "idx": 1, "payload": b"\x00\xffnew"}]
    await db.transact(lambda tx: bulk_update(tx, job_joins, ["job_id", "join_key", "idx"], update))

    def read(conn: Any) -> tuple[list[bytes], float]:
        payloads = conn.scalars(sa.select(job_joins.c.payload).order_by(job_joins.c.idx)).all()
        when = conn.scalar(sa.select(inbox.c.processed_at).where(inbox.c.message_id == "t"))
        return list(payloads), when

    assert await db.read(read) == ([raw, b"\x00\xffnew"], stamp)
