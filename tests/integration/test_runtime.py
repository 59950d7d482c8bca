"""The service runtime end to end, on SQLite and PostgreSQL: gateway -> queue -> worker -> ledger."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fluxo_core.errors import (
    ConflictError,
    PayloadSchemaError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceError,
    UnknownServiceError,
)
from fluxo_core.ir import MAX_ATTEMPTS_HEADER, Packet
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import calls, queue_messages, usage_records
from service_runtime import (
    Call,
    CallRecord,
    RetryPolicy,
    Service,
    ServiceRuntime,
    Worker,
    service,
)
from service_runtime.transports import OutgoingMessage, dead_letter_queue
from service_runtime.worker import (
    CALL_ID_HEADER,
    OUTPUT_COUNT_HEADER,
    STATUS_HEADER,
    TIMEOUT_HEADER,
)
from tests.support import services as svc

ACTOR = {"user": {"id": "u-1", "name": "Ada"}, "account": {"id": "acme"}}


def packet(payload: object, **extra: object) -> Packet:
    return Packet.model_validate({"actor": ACTOR, "payload": payload, **extra})


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.log"
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(path))
    return path


@pytest.fixture
async def runtime(db: Database) -> AsyncIterator[ServiceRuntime]:
    rt = ServiceRuntime(db, svc.SERVICES, workers=2, batch_size=50, poll_interval_s=0.2)
    async with rt:
        yield rt


async def usage_rows(db: Database) -> list[sa.Row[tuple[object, ...]]]:
    return await db.read(lambda c: c.execute(sa.select(usage_records)).all())


async def test_one_call_returns_its_result_and_bills_once(runtime: ServiceRuntime) -> None:
    record = await runtime.gateway.call("echo", packet({"hello": "world"}), wait=10)
    assert record.status == "succeeded"
    assert record.result is not None
    (out,) = record.result
    assert out.payload == {"hello": "world"}
    assert out.actor.account.id == "acme"
    assert out.trace_id == record.result[0].trace_id
    (usage,) = await usage_rows(runtime.db)
    assert (usage.call_id, usage.account_id, usage.service, usage.units) == (
        record.id,
        "acme",
        "echo",
        1,
    )
    assert usage.amount_micros == 1000


async def test_one_to_n_outputs_each_reach_the_output_queue(runtime: ServiceRuntime) -> None:
    call = packet({"items": ["a", "b", "c"]}, job_id="job-1", step_id="split")
    record = await runtime.gateway.call("fan-out", call, wait=10)
    assert record.status == "succeeded"
    assert [p.payload for p in record.result or []] == [
        {"item": "a", "index": 0},
        {"item": "b", "index": 1},
        {"item": "c", "index": 2},
    ]
    # Envelope copied by the runtime: same job, step, trace; distinct ids.
    assert {p.job_id for p in record.result or []} == {"job-1"}
    assert len({p.id for p in record.result or []}) == 3
    out = await runtime.transport.claim(["svc.fan-out@1.out"], limit=10, lease_s=5)
    assert len(out) == 3
    assert {d.headers[CALL_ID_HEADER] for d in out} == {call.id}
    assert {d.headers[OUTPUT_COUNT_HEADER] for d in out} == {"3"}
    # Priced per item: 0.01 per call + 3 x 0.002.
    (usage,) = await usage_rows(runtime.db)
    assert (usage.units, usage.unit_price_micros, usage.amount_micros) == (3, 2000, 16000)


async def test_reply_to_routes_results_to_the_callers_queue(runtime: ServiceRuntime) -> None:
    record = await runtime.gateway.call(
        "echo", packet({"x": 1}), wait=10, reply_to="engine.step.results"
    )
    assert record.status == "succeeded"
    (delivery,) = await runtime.transport.claim(["engine.step.results"], limit=5, lease_s=5)
    assert delivery.headers[STATUS_HEADER] == "succeeded"
    assert await runtime.transport.depth("svc.echo@1.out") == 0


async def test_retry_with_backoff_then_success(runtime: ServiceRuntime, effects: Path) -> None:
    record = await runtime.gateway.call("flaky", packet({"n": 1, "fail_times": 2}), wait=15)
    assert record.status == "succeeded"
    assert record.attempts == 3
    assert record.result
    assert record.result[0].payload == {"n": 1, "attempts": 3}
    assert effects.read_text().split("\n").count("try 1") == 3
    assert len(await usage_rows(runtime.db)) == 1


async def test_retries_exhausted_go_to_the_dead_letter_queue(
    runtime: ServiceRuntime, effects: Path
) -> None:
    record = await runtime.gateway.call("flaky", packet({"n": 2, "fail_times": 99}), wait=15)
    assert record.status == "failed"
    assert record.attempts == 4  # RetryPolicy(max_attempts=4)
    assert record.error is not None
    assert "transient failure 4" in record.error["message"]
    assert effects.read_text().split("\n").count("try 2") == 4
    assert await runtime.transport.depth(dead_letter_queue("svc.flaky@1.in")) == 1
    assert await runtime.transport.depth("svc.flaky@1.in") == 0
    assert await usage_rows(runtime.db) == []  # failed calls are not billed
    (failure,) = await runtime.transport.claim(["svc.flaky@1.out"], limit=5, lease_s=5)
    assert failure.headers[STATUS_HEADER] == "failed"


async def test_backoff_grows_between_attempts(db: Database) -> None:
    stamps: list[float] = []

    @service("stamp", inline=True, retry=RetryPolicy(max_attempts=4, backoff_base_s=0.2))
    def stamp(payload: dict[str, object]) -> dict[str, object]:
        stamps.append(time.monotonic())
        raise RuntimeError("always")

    async with ServiceRuntime(db, [stamp], poll_interval_s=0.05) as rt:
        record = await rt.gateway.call("stamp", packet({}), wait=15)
    assert record.status == "failed"
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # Equal jitter: the n-th retry waits at least half of 0.2 * 2**(n-1).
    assert len(gaps) == 3
    for n, gap in enumerate(gaps, start=1):
        assert gap >= 0.2 * 2 ** (n - 1) / 2 - 0.01


async def test_non_retryable_error_dead_letters_at_once(runtime: ServiceRuntime) -> None:
    record = await runtime.gateway.call("broken", packet({}), wait=10)
    assert record.status == "failed"
    assert record.attempts == 1
    assert record.error is not None
    assert record.error["retryable"] is False


async def test_expired_lease_is_delivered_again(db: Database) -> None:
    rt = ServiceRuntime(db, svc.SERVICES, workers=0)
    async with rt:
        call_id = (await rt.gateway.submit("echo", [packet({"v": 1})]))[0]
        # A consumer claims with a short lease, then dies without settling.
        (first,) = await rt.transport.claim(["svc.echo@1.in"], limit=1, lease_s=0.3)
        assert first.attempt == 1
        assert await rt.transport.claim(["svc.echo@1.in"], limit=1, lease_s=0.3) == []
        await asyncio.sleep(0.4)
        worker = Worker(db, rt.transport, svc.SERVICES)
        assert await worker.run_once() == 1
        record = await rt.gateway.get(call_id)
    assert record.status == "succeeded"
    assert record.attempts == 2
    assert len(await usage_rows(db)) == 1


async def test_a_handler_longer_than_its_lease_keeps_its_claim_and_runs_once(
    db: Database, effects: Path
) -> None:
    # Leases are short (0.3 s here) and the handler takes 1.2 s: the heartbeat renews the claim
    # while it runs, so the second worker never gets the message (without it, it would run the
    # handler again after 0.3 s).
    rt = ServiceRuntime(db, svc.SERVICES, workers=2, lease_s=0.3, poll_interval_s=0.1)
    async with rt:
        record = await rt.gateway.call("slow", packet({"n": 1, "sleep": 1.2}), wait=20)
    assert (record.status, record.attempts) == ("succeeded", 1)
    assert effects.read_text().splitlines() == ["start 1", "end 1"]


async def test_the_callers_timeout_bounds_each_run_and_is_not_retried(
    runtime: ServiceRuntime, effects: Path
) -> None:
    # `slow` allows 3 s and 5 attempts; the caller (a step with timeout_s) allows 0.3 s per run:
    # the call fails at once, for the caller to retry or not (a step's own retry policy).
    timed = packet({"n": 1, "sleep": 2}, headers={TIMEOUT_HEADER: "0.3", "x": "y"})
    record = await runtime.gateway.call("slow", timed, wait=20)
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.error is not None
    assert record.error["code"] == "service_timeout"
    assert "did not finish within 0.3s" in record.error["message"]
    assert record.error["retryable"] is False
    assert effects.read_text().splitlines() == ["start 1"]


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
async def test_a_callers_timeout_that_is_not_a_positive_number_fails_the_call_naming_it(
    runtime: ServiceRuntime, effects: Path, value: str
) -> None:
    bad = packet({"n": 1}, headers={TIMEOUT_HEADER: value})
    record = await runtime.gateway.call("slow", bad, wait=20)
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.error is not None
    assert record.error["code"] == "invalid_packet"
    assert record.error["problems"][0]["location"] == f"headers.{TIMEOUT_HEADER}"
    assert not effects.exists()  # the handler never ran


@pytest.mark.parametrize(("cap", "runs"), [(None, 4), ("1", 1), ("2", 2), ("9", 4)])
async def test_the_callers_max_attempts_caps_the_services_retries(
    runtime: ServiceRuntime, effects: Path, cap: str | None, runs: int
) -> None:
    # flaky's RetryPolicy allows 4 attempts; the caller may allow fewer (a step that retries
    # itself sends 1), never more.
    headers = {MAX_ATTEMPTS_HEADER: cap} if cap is not None else {}
    call = packet({"n": 1, "fail_times": 100}, headers=headers)
    record = await runtime.gateway.call("flaky", call, wait=20)
    assert (record.status, record.attempts) == ("failed", runs)
    assert effects.read_text().splitlines() == ["try 1"] * runs


@pytest.mark.parametrize("value", ["0", "-1", "one", "1.5", "\N{ARABIC-INDIC DIGIT ONE}"])
async def test_a_callers_max_attempts_that_is_not_a_whole_number_fails_the_call_naming_it(
    runtime: ServiceRuntime, effects: Path, value: str
) -> None:
    record = await runtime.gateway.call(
        "flaky", packet({"n": 1}, headers={MAX_ATTEMPTS_HEADER: value}), wait=20
    )
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.error is not None
    assert record.error["code"] == "invalid_packet"
    assert record.error["problems"][0]["location"] == f"headers.{MAX_ATTEMPTS_HEADER}"
    assert not effects.exists()  # the handler never ran


async def test_a_retried_call_gives_its_handler_the_same_idempotency_key(
    runtime: ServiceRuntime, effects: Path
) -> None:
    # The first send fails after the provider may have acted: the retry must be recognisable.
    call = packet({"n": 1, "fail_times": 1}, job_id="job-7", step_id="send")
    record = await runtime.gateway.call("deliver", call, wait=20)
    assert (record.status, record.attempts) == ("succeeded", 2)
    assert effects.read_text().splitlines() == [f"deliver 1 {call.id} 1", f"deliver 1 {call.id} 2"]
    assert record.result is not None
    assert record.result[0].payload == {"n": 1, "key": call.id, "job": "job-7"}


async def test_a_handler_that_takes_the_packet_also_gets_the_call(db: Database) -> None:
    @service("both", inline=True, takes="packet")
    def both(packet: Packet, call: Call) -> dict[str, object]:
        return {"same": packet.id == call.idempotency_key, "attempt": call.attempt}

    async with ServiceRuntime(db, [both], workers=1, poll_interval_s=0.1) as rt:
        record = await rt.gateway.call("both", packet({}), wait=10)
    assert record.result is not None
    assert record.result[0].payload == {"same": True, "attempt": 1}


async def calls_through_one_worker(
    db: Database, svc_: Service, count: int, *, handler_threads: int = 16, async_calls: int = 100
) -> list[CallRecord]:
    """Submit ``count`` calls of ``svc_``, run them with one worker (batch of 500) and return
    their records once done."""
    rt = ServiceRuntime(db, [svc_], workers=0, poll_interval_s=0.2)
    async with rt:
        ids = await rt.gateway.submit(svc_.name, [packet({"n": n}) for n in range(count)])
        worker = Worker(
            db,
            rt.transport,
            [svc_],
            batch_size=500,
            handler_threads=handler_threads,
            async_calls=async_calls,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        records = [await rt.gateway.wait(call_id, 20) for call_id in ids]
        stop.set()
        worker.request_stop()
        await running
    return records


async def test_more_slow_calls_than_handler_threads_each_run_once_within_timeout(
    db: Database,
) -> None:
    # A claim of thread-run services takes no more messages than there are threads: claimed
    # together with 8 calls, 2 threads would start the last ones after their 0.5 s timeout had
    # run out (and a slower batch would outlive its lease and run again elsewhere).
    runs: list[int] = []

    @service("slow", timeout_s=0.5, retry=RetryPolicy(max_attempts=3, backoff_base_s=0.05))
    def slow(payload: dict[str, int]) -> dict[str, int]:
        time.sleep(0.3)
        runs.append(payload["n"])
        return payload

    records = await calls_through_one_worker(db, slow, 8, handler_threads=2)
    assert [(r.status, r.attempts) for r in records] == [("succeeded", 1)] * 8
    assert sorted(runs) == list(range(8))


async def test_a_claim_runs_at_most_async_calls_async_handlers_at_once(db: Database) -> None:
    running, most = 0, 0

    @service("fetch")
    async def fetch(payload: dict[str, int]) -> dict[str, int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.1)
        running -= 1
        return payload

    records = await calls_through_one_worker(db, fetch, 9, async_calls=3)
    assert [r.status for r in records] == ["succeeded"] * 9
    assert most == 3  # three at a time: the cap, not the batch size of 500


@pytest.mark.parametrize(
    "name",
    [
        "echo",  # inline: run again for the copies, applied once by the commit's inbox row
        "slow",  # async, with an effect: the copies are recognised before the handler runs
    ],
)
async def test_message_delivered_twice_has_one_effect(
    db: Database, effects: Path, name: str
) -> None:
    rt = ServiceRuntime(db, svc.SERVICES, workers=0)
    queue = f"svc.{name}@1"
    async with rt:
        call = packet({"dup": True, "n": 7})
        await rt.gateway.submit(name, [call])
        # The same message arrives a second time (e.g. a relay re-published it after a crash).
        original = await db.read(
            lambda c: c.execute(
                sa.select(queue_messages).where(queue_messages.c.message_id == call.id)
            ).one()
        )
        duplicate = OutgoingMessage(
            queue=original.queue, message_id=call.id, body=original.body, max_attempts=5
        )
        await db.transact(lambda tx: rt.transport.enqueue(tx, [duplicate]))
        assert await rt.transport.depth(f"{queue}.in") == 2
        worker = Worker(db, rt.transport, svc.SERVICES)
        while await worker.run_once():
            pass
        # And once more after it completed.
        await db.transact(lambda tx: rt.transport.enqueue(tx, [duplicate]))
        while await worker.run_once():
            pass
        assert worker.stats.succeeded == 1
        assert worker.stats.duplicates == 2
        assert await rt.transport.depth(f"{queue}.in") == 0
        assert await rt.transport.depth(f"{queue}.out") == 1
    assert len(await usage_rows(db)) == 1
    if name == "slow":
        assert effects.read_text().splitlines() == ["start 7", "end 7"]


async def test_the_same_packet_sent_twice_is_one_call(runtime: ServiceRuntime) -> None:
    call = packet({"once": 1})
    first = await runtime.gateway.call("echo", call, wait=10)
    again = await runtime.gateway.call("echo", call, wait=10)
    assert first.id == again.id
    assert again.status == "succeeded"
    assert len(await usage_rows(runtime.db)) == 1
    count = await runtime.db.read(lambda c: c.scalar(sa.select(sa.func.count()).select_from(calls)))
    assert count == 1


async def test_a_packet_id_reused_for_another_service_is_a_conflict(
    runtime: ServiceRuntime,
) -> None:
    call = packet({"x": 1})
    await runtime.gateway.submit("echo", [call])
    with pytest.raises(ConflictError, match="already used"):
        await runtime.gateway.submit(
            "fan-out", [call.model_copy(update={"payload": {"items": []}})]
        )


async def assert_nothing_enqueued(rt: ServiceRuntime) -> None:
    total = await rt.db.read(
        lambda c: c.scalar(sa.select(sa.func.count()).select_from(queue_messages))
    )
    assert total == 0


async def test_unknown_service_is_refused(db: Database) -> None:
    async with ServiceRuntime(db, svc.SERVICES, workers=0) as rt:
        with pytest.raises(UnknownServiceError, match=r"no service named 'ecko'.*echo"):
            await rt.gateway.call("ecko", packet({}))
        await assert_nothing_enqueued(rt)


async def test_oversized_packet_is_refused(db: Database) -> None:
    rt = ServiceRuntime(db, svc.SERVICES, workers=0, max_packet_bytes=2048)
    async with rt:
        with pytest.raises(PayloadTooLargeError, match="over the limit of 2048 bytes"):
            await rt.gateway.call("echo", packet({"blob": "x" * 5000}))
        await assert_nothing_enqueued(rt)


async def test_packet_of_another_account_is_refused(db: Database) -> None:
    async with ServiceRuntime(db, svc.SERVICES, workers=0) as rt:
        with pytest.raises(PermissionDeniedError, match="token belongs to account 'other'"):
            await rt.gateway.call(
                "echo", packet({}), principal=Principal(account_id="other", user_id="mallory")
            )
        await assert_nothing_enqueued(rt)


async def test_payload_not_matching_the_input_schema_is_refused(db: Database) -> None:
    typed = service(
        "typed",
        input_schema={
            "type": "object",
            "required": ["sku"],
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
        },
    )(lambda payload: payload)
    async with ServiceRuntime(db, [typed], workers=0) as rt:
        with pytest.raises(PayloadSchemaError) as info:
            await rt.gateway.call("typed", packet([{"sku": "A"}, {"qty": "two"}]))
        await assert_nothing_enqueued(rt)
    locations = [loc for loc, _ in info.value.problems]
    assert locations == ["payload[1]", "payload[1].qty"]


async def test_an_output_json_cannot_hold_fails_its_call_not_the_batch(db: Database) -> None:
    @service("odd", inline=True)
    def odd(payload: dict[str, int]) -> dict[str, object]:
        return {"n": payload["n"], "handle": object()} if payload["n"] == 1 else payload

    records = await calls_through_one_worker(db, odd, 3)
    assert [r.status for r in records] == ["succeeded", "failed", "succeeded"]
    error = records[1].error or {}
    assert "not JSON" in error["message"]
    assert error["retryable"] is False
    assert len(await usage_rows(db)) == 2  # the failed call is not billed


async def test_inline_handlers_retry_with_their_attempt_counted_then_dead_letter(
    db: Database,
) -> None:
    # Inline handlers run inside the transaction that takes their messages (no lease): a retry
    # must still count the attempt, or a failing handler would be retried for ever.
    seen: list[tuple[int, int]] = []

    @service(
        "wobbly",
        inline=True,
        takes="packet",
        retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02),
    )
    def wobbly(packet: Packet) -> dict[str, int]:
        n = packet.payload["n"] if isinstance(packet.payload, dict) else -1
        seen.append((n, packet.attempt))
        if n == 1 or packet.attempt < 2:  # call 1 always fails; call 0 fails once
            raise ServiceError(f"not yet ({packet.attempt})", retryable=True)
        return {"n": n}

    first, second = await calls_through_one_worker(db, wobbly, 2)
    assert (first.status, first.attempts) == ("succeeded", 2)
    assert (second.status, second.attempts) == ("failed", 3)
    assert sorted(seen) == [(0, 1), (0, 2), (1, 1), (1, 2), (1, 3)]
    assert (
        await db.read(
            lambda c: c.scalar(
                sa.select(sa.func.count())
                .select_from(queue_messages)
                .where(queue_messages.c.queue == dead_letter_queue("svc.wobbly@1.in"))
            )
        )
        == 1
    )
    assert len(await usage_rows(db)) == 1
