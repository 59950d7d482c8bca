"""The runtime's storage repositories: each writes its rows and reads them back typed, on SQLite
and PostgreSQL (calls, usage ledger, outbox, inbox, queue messages, services)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fluxo_core.errors import StorageError
from fluxo_core.storage import (
    OUTBOX_CHANNEL,
    CallOutcome,
    CallRow,
    CallStore,
    Database,
    InboxStore,
    NewCall,
    NewOutboxMessage,
    OutboxStore,
    QueueStore,
    ServiceRow,
    ServiceStore,
    UsageLedger,
    UsageRecord,
    bulk_insert,
)
from fluxo_core.storage.tables import inbox, jobs, queue_messages
from tests.support.rows import JobRowToWrite


def new_call(call_id: str, account: str = "acc", *, job_id: str | None = None) -> NewCall:
    return NewCall(
        id=call_id,
        account_id=account,
        user_id="u1",
        service="echo",
        version="1",
        job_id=job_id,
        step_id="s1" if job_id else None,
        request=b'{"id": "' + call_id.encode() + b'"}',
        reply_to=None,
        created_at=100.0,
    )


# -- calls ----------------------------------------------------------------------------------------


async def test_a_new_call_reads_back_queued_with_every_column(db: Database) -> None:
    store = CallStore(db)
    inserted = await db.transact(lambda tx: store.insert(tx, [new_call("c1", job_id="j1")]))
    assert inserted == {"c1"}
    row = await store.get("c1")
    assert row == CallRow(
        id="c1",
        account_id="acc",
        user_id="u1",
        service="echo",
        version="1",
        job_id="j1",
        step_id="s1",
        status="queued",
        request=b'{"id": "c1"}',
        result=None,
        error=None,
        attempts=0,
        reply_to=None,
        created_at=100.0,
        finished_at=None,
    )


async def test_an_existing_call_id_is_skipped_not_overwritten(db: Database) -> None:
    store = CallStore(db)
    await db.transact(lambda tx: store.insert(tx, [new_call("c1")]))
    again = new_call("c1")._replace(account_id="other", request=b"{}")
    inserted = await db.transact(lambda tx: store.insert(tx, [again, new_call("c2")]))
    assert inserted == {"c2"}
    first = await store.get("c1")
    assert first is not None
    assert (first.account_id, first.request) == ("acc", b'{"id": "c1"}')


async def test_a_scoped_lookup_finds_no_call_of_another_account(db: Database) -> None:
    store = CallStore(db)
    await db.transact(lambda tx: store.insert(tx, [new_call("c1", "acc")]))
    assert await store.get("c1", account_id="acc") is not None
    assert await store.get("c1", account_id="other") is None
    assert await store.get("missing") is None


async def test_the_calls_of_a_job_are_its_accounts_oldest_first(db: Database) -> None:
    store = CallStore(db)
    calls = [
        new_call("late", job_id="j1")._replace(created_at=300.0),
        new_call("early", job_id="j1")._replace(created_at=200.0),
        new_call("foreign", "other", job_id="j1"),  # names the job from another account
        new_call("unrelated", job_id="j2"),
    ]
    await db.transact(lambda tx: store.insert(tx, calls))
    rows = await store.of_job("j1", account_id="acc")
    assert [r.id for r in rows] == ["early", "late"]
    assert all(isinstance(r, CallRow) for r in rows)


async def test_owners_name_the_account_and_service_of_known_ids(db: Database) -> None:
    store = CallStore(db)
    await db.transact(lambda tx: store.insert(tx, [new_call("c1"), new_call("c2", "acc2")]))
    owners = await db.transact(lambda tx: store.owners(tx, ["c1", "c2", "c3", "c1"]))
    assert {k: (o.account_id, o.service) for k, o in owners.items()} == {
        "c1": ("acc", "echo"),
        "c2": ("acc2", "echo"),
    }
    assert await db.transact(lambda tx: store.owners(tx, [])) == {}


async def test_outcomes_overwrite_status_result_error_and_attempts(db: Database) -> None:
    store = CallStore(db)
    await db.transact(lambda tx: store.insert(tx, [new_call("ok"), new_call("bad")]))
    outcomes = [
        CallOutcome("ok", "succeeded", b"[]", None, 1, 200.0),
        CallOutcome("bad", "retrying", None, '{"code": "x"}', 2, None),
    ]
    await db.transact(lambda tx: store.record_outcomes(tx, outcomes))
    ok, bad = await store.get("ok"), await store.get("bad")
    assert ok is not None
    assert bad is not None
    assert (ok.status, ok.result, ok.error, ok.attempts, ok.finished_at) == (
        "succeeded",
        b"[]",
        None,
        1,
        200.0,
    )
    assert (bad.status, bad.result, bad.error, bad.attempts, bad.finished_at) == (
        "retrying",
        None,
        '{"code": "x"}',
        2,
        None,
    )


async def test_reopening_queues_failed_calls_only(db: Database) -> None:
    store = CallStore(db)
    await db.transact(lambda tx: store.insert(tx, [new_call("f"), new_call("s")]))
    outcomes = [
        CallOutcome("f", "failed", None, "{}", 5, 200.0),
        CallOutcome("s", "succeeded", b"[]", None, 1, 200.0),
    ]
    await db.transact(lambda tx: store.record_outcomes(tx, outcomes))
    await db.transact(lambda tx: store.reopen_failed(tx, ["f", "s"]))
    failed, succeeded = await store.get("f"), await store.get("s")
    assert failed is not None
    assert (failed.status, failed.finished_at) == ("queued", None)
    assert succeeded is not None
    assert succeeded.status == "succeeded"


async def test_a_plain_tuple_row_is_refused_with_the_fix(db: Database) -> None:
    with pytest.raises(StorageError, match="named tuples"):
        await db.transact(lambda tx: bulk_insert(tx, inbox, [("c", "m", 1.0)]))


# -- usage ledger ---------------------------------------------------------------------------------


async def test_usage_records_read_back_per_account_in_order(db: Database) -> None:
    ledger = UsageLedger(db)

    def record(call_id: str, account: str) -> UsageRecord:
        return UsageRecord(
            call_id, account, "u1", "echo", "1", None, None, 2, 500, 1000, "EUR", 1.5
        )

    written = [record("c1", "acc"), record("c2", "other"), record("c3", "acc")]
    await db.transact(lambda tx: UsageLedger.record(tx, written))
    await db.transact(lambda tx: UsageLedger.record(tx, []))  # nothing to write is no error
    assert await ledger.of_account("acc") == [written[0], written[2]]
    assert await ledger.of_account("nobody") == []


# -- outbox ---------------------------------------------------------------------------------------


def outgoing(message_id: str, *, delay_s: float = 0.0, created_at: float) -> NewOutboxMessage:
    return NewOutboxMessage(
        queue="q",
        message_id=message_id,
        body=b"\x00body",
        headers={"h": "v"},
        max_attempts=3,
        delay_s=delay_s,
        created_at=created_at,
    )


async def test_outbox_hands_out_due_messages_oldest_first_and_tells_the_next_due(
    db: Database,
) -> None:
    store = OutboxStore(db)
    now = time.time()
    messages = [
        outgoing("m1", created_at=now - 5),
        outgoing("later", delay_s=60, created_at=now),
        outgoing("m2", created_at=now - 1),
    ]
    await db.transact(lambda tx: store.write(tx, messages))
    due, next_due = await store.due(now, 10)
    assert [m.message_id for m in due] == ["m1", "m2"]
    assert (due[0].queue, due[0].body, due[0].headers, due[0].max_attempts) == (
        "q",
        b"\x00body",
        {"h": "v"},
        3,
    )
    assert next_due == pytest.approx(now + 60)
    # A full batch says nothing of the next due row: more may be due already.
    first, unknown = await store.due(now, 1)
    assert [m.message_id for m in first] == ["m1"]
    assert unknown is None
    await store.remove([m.id for m in due])
    assert await store.count() == 1
    assert (await store.due(now, 10))[0] == []


async def test_an_outbox_write_wakes_the_relay_once_committed(db: Database) -> None:
    store = OutboxStore(db)
    with await db.subscribe([OUTBOX_CHANNEL]) as sub:
        await db.transact(lambda tx: store.write(tx, [outgoing("m", created_at=time.time())]))
        assert await sub.wait(5.0)


# -- inbox ----------------------------------------------------------------------------------------


async def test_inbox_claims_each_message_once(db: Database) -> None:
    store = InboxStore(db)
    first = [("q", "a"), ("q", "b")]
    assert await db.transact(lambda tx: store.claim(tx, first, 10.0)) == set(first)
    again = [("q", "b"), ("q", "c"), ("q", "c"), ("q2", "a")]
    new = await db.transact(lambda tx: store.claim(tx, again, 11.0))
    assert new == {("q", "c"), ("q2", "a")}
    assert await store.seen(["q"], ["a", "c", "z"]) == {("q", "a"), ("q", "c")}
    assert await store.seen([], ["a"]) == set()


async def test_a_forgotten_message_can_be_claimed_again(db: Database) -> None:
    store = InboxStore(db)
    keys = [("q", "a"), ("other", "a")]
    await db.transact(lambda tx: store.claim(tx, keys, 10.0))
    await db.transact(lambda tx: store.forget(tx, "q", ["a"]))
    assert await store.seen(["q", "other"], ["a"]) == {("other", "a")}
    assert await db.transact(lambda tx: store.claim(tx, keys, 12.0)) == {("q", "a")}


async def test_inbox_expiry_deletes_old_rows_in_bounded_chunks(db: Database) -> None:
    store = InboxStore(db)
    old = [("q", f"old{i}") for i in range(3)]
    await db.transact(lambda tx: store.claim(tx, old, 10.0))
    await db.transact(lambda tx: store.claim(tx, [("q", "new")], 100.0))
    assert await db.transact(lambda tx: store.expire(tx, 50.0, 2)) == 2
    assert await db.transact(lambda tx: store.expire(tx, 50.0, 2)) == 1
    assert await db.transact(lambda tx: store.expire(tx, 50.0, 2)) == 0
    assert await store.seen(["q"], ["new"]) == {("q", "new")}


# -- queue messages -------------------------------------------------------------------------------


def message(queue: str, message_id: str, *, created_at: float = 1.0, attempt: int = 0) -> Any:
    return {
        "queue": queue,
        "message_id": message_id,
        "body": b"{}",
        "headers": "{}",
        "attempt": attempt,
        "max_attempts": 5,
        "visible_at": created_at,
        "lease_token": "lease" if attempt else None,
        "last_error": f"error of {message_id}",
        "created_at": created_at,
    }


async def test_dead_letters_list_with_their_job_and_go_back_to_their_queue(db: Database) -> None:
    queues, calls = QueueStore(db), CallStore(db)
    rows = [message("q.dlq", "direct"), message("q.dlq", "step"), message("r.dlq", "elsewhere")]
    job = JobRowToWrite("j1", "acc", "u1", "wf", 1, "step", "failed", b"{}", 0, 1.0)

    def setup(tx: Any) -> None:
        bulk_insert(tx, queue_messages, rows)
        calls.insert(tx, [new_call("direct"), new_call("step", job_id="j1")])
        bulk_insert(tx, jobs, [job])

    await db.transact(setup)
    letters = await queues.dead_letters(queue="q.dlq", suffix=".dlq", limit=10)
    assert [(r.queue, r.message_id, r.error, r.job_id) for r in letters] == [
        ("q.dlq", "direct", "error of direct", None),
        ("q.dlq", "step", "error of step", "j1"),
    ]
    every = await queues.dead_letters(suffix=".dlq", limit=10)
    assert [r.message_id for r in every] == ["direct", "step", "elsewhere"]
    assert len(await queues.dead_letters(suffix=".dlq", limit=1)) == 1

    owners = await db.transact(lambda tx: queues.letter_owners(tx, "q.dlq"))
    assert {(o.message_id, o.job_id, o.job_status) for o in owners} == {
        ("direct", None, None),
        ("step", "j1", "failed"),
    }
    picked = await db.transact(lambda tx: queues.letter_owners(tx, "q.dlq", ["step"]))
    assert [o.message_id for o in picked] == ["step"]

    await db.transact(lambda tx: queues.requeue(tx, "q.dlq", "q", ["direct"], 50.0))
    remaining = await queues.dead_letters(queue="q.dlq", suffix=".dlq", limit=10)
    assert [r.message_id for r in remaining] == ["step"]
    back = await db.read(
        lambda conn: conn.execute(
            queue_messages.select().where(queue_messages.c.message_id == "direct")
        ).one()
    )
    assert (back.queue, back.attempt, back.visible_at, back.lease_token) == ("q", 0, 50.0, None)


async def test_only_unread_old_messages_of_matching_queues_are_deleted(db: Database) -> None:
    queues = QueueStore(db)
    rows = [
        message("svc.a@1.out", "old1", created_at=1.0),
        message("svc.a@1.out", "old2", created_at=2.0),
        message("svc.a@1.out", "fresh", created_at=100.0),
        message("svc.a@1.out", "leased", created_at=1.0, attempt=1),
        message("svc.a@1.in", "input", created_at=1.0),
    ]
    await db.transact(lambda tx: bulk_insert(tx, queue_messages, rows))
    assert await db.transact(lambda tx: queues.delete_unread(tx, "svc.%.out", 50.0, 1)) == 1
    assert await db.transact(lambda tx: queues.delete_unread(tx, "svc.%.out", 50.0, 10)) == 1
    left = await db.read(
        lambda conn: sorted(
            conn.scalars(queue_messages.select().with_only_columns(queue_messages.c.message_id))
        )
    )
    assert left == ["fresh", "input", "leased"]


# -- services -------------------------------------------------------------------------------------


def service(version: str, updated_at: float, description: str = "") -> ServiceRow:
    return ServiceRow(
        name="echo",
        version=version,
        description=description,
        input_schema={"type": "object"},
        output_schema=None,
        price_per_call_micros=1000,
        price_per_item_micros=0,
        currency="EUR",
        max_attempts=3,
        timeout_s=2.5,
        updated_at=updated_at,
    )


async def test_services_publish_as_upserts_and_resolve_newest_or_exact(db: Database) -> None:
    store = ServiceStore(db)
    await store.publish([service("1", 10.0), service("2", 20.0)])
    await store.publish([service("1", 30.0, "republished")])
    assert await store.find("echo", "1") == service("1", 30.0, "republished")
    newest = await store.find("echo")
    assert newest is not None
    assert newest.version == "1"  # published last
    assert await store.find("echo", "3") is None
    assert await store.find("nope") is None
    assert [(s.name, s.version) for s in await store.all()] == [("echo", "1"), ("echo", "2")]
