"""Interceptors at the named places of real calls, on SQLite and PostgreSQL: what each place sees
on every engine path, refusals, metering's exactly-once charge, and tracing's spans."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fluxo.control.platform import Platform
from fluxo_core.errors import AdmissionDeniedError, CallNotFoundError, StorageError
from fluxo_core.ir import Packet
from fluxo_core.storage import Database, Principal, Transaction
from fluxo_core.storage.tables import queue_messages, usage_records
from service_runtime import ServiceRuntime, Worker
from service_runtime.interceptors import (
    AdmitRequest,
    Interceptor,
    Metering,
    RecordRequest,
    ResultRequest,
    Span,
    Tracing,
)
from service_runtime.transports import OutgoingMessage
from tests.support import services as svc

ME = Principal(account_id="acme", user_id="ada")


def packet(payload: Any, account: str = "acme") -> Packet:
    actor = {"user": {"id": "ada"}, "account": {"id": account}}
    return Packet.model_validate({"actor": actor, "payload": payload})


class Spy(Interceptor):
    """Notes what it sees at each place (admits: ``(place, service, step)``)."""

    def __init__(self) -> None:
        self.admitted: list[tuple[str, str, str | None]] = []
        self.recorded: list[str] = []  # call ids
        self.results: list[tuple[str, str]] = []  # (call id, status)

    async def admit(self, request: AdmitRequest) -> None:
        self.admitted += [(request.place, c.service, c.step_id) for _, c in request.pending()]

    def admit_in_transaction(self, request: AdmitRequest, tx: Transaction) -> None:
        self.admitted += [(request.place, c.service, c.step_id) for _, c in request.pending()]

    def on_record(self, request: RecordRequest, tx: Transaction) -> None:
        self.recorded += [c.id for c in request.calls]

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        self.results += [(r.packet.id, r.status) for r in request.results]


class Blocks(Interceptor):
    """Refuses the calls of one account (a quota, say); decides outside transactions only."""

    def __init__(self, account: str) -> None:
        self.account = account

    async def admit(self, request: AdmitRequest) -> None:
        for index, call in request.pending():
            if call.account_id == self.account:
                error = AdmissionDeniedError(f"account {self.account!r} is over its quota")
                request.refuse(index, error)


class FailsOnce(Interceptor):
    """Fails the first result transaction it is in (a database error, say)."""

    def __init__(self) -> None:
        self.failed = False

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        if not self.failed:
            self.failed = True
            raise StorageError("the database went away")


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.log"
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(path))
    return path


@pytest.fixture
async def spied(db: Database, effects: Path) -> AsyncIterator[tuple[Platform, Spy]]:
    spy = Spy()
    platform = Platform(
        db, svc.SERVICES, workers=2, poll_interval_s=0.2, admission_cache_s=0, interceptors=[spy]
    )
    await platform.accounts.ensure_account("acme")
    async with platform:
        yield platform, spy


async def usage_rows(db: Database) -> Sequence[Any]:
    return await db.read(lambda c: c.execute(sa.select(usage_records)).all())


async def test_an_interceptor_sees_every_call_of_a_direct_call_and_of_a_step_engine_job(
    spied: tuple[Platform, Spy],
) -> None:
    fluxo, spy = spied
    direct = await fluxo.runtime.gateway.call("echo", packet({"hello": "world"}), wait=10)
    assert direct.status == "succeeded"
    doc = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": "twice"},
        "spec": {
            "engine": "step",
            "steps": [
                {"id": "one", "kind": "service", "service": "inc", "next": ["two"]},
                {"id": "two", "kind": "service", "service": "inc"},
            ],
        },
    }
    await fluxo.jobs.apply(doc, ME)
    job = await fluxo.jobs.wait(ME, (await fluxo.jobs.create(ME, "twice", {"n": 1})).id, 20)
    assert job.status == "succeeded", job.error
    step_calls = [s.call_id for s in job.steps or []]
    every_call = {direct.id, *step_calls}
    assert len(every_call) == 3
    # Recorded (the gateway's transaction, the step engine's), finished (the worker's), charged.
    assert set(spy.recorded) == every_call
    assert sorted(spy.results) == sorted((c, "succeeded") for c in every_call)
    assert {u.call_id for u in await usage_rows(fluxo.db)} == every_call
    # Admitted where each path admits: the direct call at the gateway, the job when created,
    # and every call again in the worker before its handler ran.
    assert sorted(spy.admitted) == [
        ("gateway", "echo", None),
        ("job", "workflow:twice", None),
        ("worker", "echo", None),
        ("worker", "inc", "one"),
        ("worker", "inc", "two"),
    ]


async def test_a_call_refused_at_the_gateway_writes_nothing_and_later_interceptors_skip_it(
    db: Database, effects: Path
) -> None:
    spy = Spy()
    rt = ServiceRuntime(db, svc.SERVICES, workers=0, interceptors=[Blocks("globex"), spy])
    async with rt:
        refused = packet({"n": 1}, account="globex")
        with pytest.raises(AdmissionDeniedError, match="'globex' is over its quota"):
            await rt.gateway.submit("slow", [refused])
        with pytest.raises(CallNotFoundError):
            await rt.gateway.get(refused.id)
        assert await rt.transport.depth("svc.slow@1.in") == 0
    assert spy.admitted == []  # refused before the spy's turn: the spy never counted it
    assert spy.recorded == []


async def test_a_call_refused_in_the_worker_fails_without_running_or_charging(
    db: Database, effects: Path
) -> None:
    # Submitted by a runtime without the block (another process, or before the block began).
    async with ServiceRuntime(db, svc.SERVICES, workers=0) as api:
        blocked, allowed = await api.gateway.submit(
            "slow", [packet({"n": 1}, account="globex"), packet({"n": 2})]
        )
        spy = Spy()
        worker = Worker(
            db, api.transport, svc.SERVICES, interceptors=[Blocks("globex"), spy, Metering()]
        )
        while await worker.run_once():
            pass
        refused, served = await api.gateway.get(blocked), await api.gateway.get(allowed)
    assert refused.status == "failed"
    assert refused.error is not None
    assert refused.error["code"] == "admission_denied"
    assert served.status == "succeeded"
    assert effects.read_text().splitlines() == ["start 2", "end 2"]  # globex's never ran
    assert spy.admitted == [("worker", "slow", None)]  # only the call still pending
    assert sorted(spy.results) == sorted([(blocked, "failed"), (allowed, "succeeded")])
    assert [u.call_id for u in await usage_rows(db)] == [allowed]


async def test_metering_charges_a_call_once_however_often_its_message_is_delivered(
    db: Database,
) -> None:
    spy = Spy()
    rt = ServiceRuntime(db, svc.SERVICES, workers=0, interceptors=[Metering(), spy])
    async with rt:
        call = packet({"items": ["a", "b", "c"]})
        await rt.gateway.submit("fan-out", [call])
        original = await db.read(
            lambda c: c.execute(
                sa.select(queue_messages).where(queue_messages.c.message_id == call.id)
            ).one()
        )
        again = OutgoingMessage(
            queue=original.queue, message_id=call.id, body=original.body, max_attempts=5
        )
        # Delivered again in the same batch, then once more after the first was applied (a
        # relay re-publishing after a crash, a broker redelivering after a lost ack).
        await db.transact(lambda tx: rt.transport.enqueue(tx, [again]))
        worker = Worker(db, rt.transport, svc.SERVICES, interceptors=rt.interceptors)
        while await worker.run_once():
            pass
        await db.transact(lambda tx: rt.transport.enqueue(tx, [again]))
        while await worker.run_once():
            pass
        assert worker.stats.duplicates == 2
    (usage,) = await usage_rows(db)
    # 0.01 per call + 3 items x 0.002, charged once.
    assert (usage.call_id, usage.units, usage.amount_micros) == (call.id, 3, 16000)
    assert spy.results == [(call.id, "succeeded")]  # the copies never reached on_result


async def test_a_result_transaction_that_fails_leaves_no_charge_and_its_retry_charges_once(
    db: Database,
) -> None:
    rt = ServiceRuntime(db, svc.SERVICES, workers=0, interceptors=[Metering(), FailsOnce()])
    async with rt:
        (call_id,) = await rt.gateway.submit("echo", [packet({"x": 1})])
        worker = Worker(db, rt.transport, svc.SERVICES, interceptors=rt.interceptors)
        with pytest.raises(StorageError):
            await worker.run_once()
        # Metering's row rolled back with the result: nothing charged, nothing settled.
        assert await usage_rows(db) == []
        assert (await rt.gateway.get(call_id)).status == "queued"
        while await worker.run_once():
            pass
        assert (await rt.gateway.get(call_id)).status == "succeeded"
    assert [u.call_id for u in await usage_rows(db)] == [call_id]


async def test_tracing_exports_one_span_per_run_linked_to_the_calls_trace_and_outputs(
    db: Database, effects: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spans: list[Span] = []
    tracing = Tracing(export=spans.extend)
    caplog.set_level(logging.DEBUG, logger="service_runtime.interceptors.tracing")
    async with ServiceRuntime(db, svc.SERVICES, workers=1, interceptors=[tracing]) as rt:
        call = packet({"n": 1, "fail_times": 1})
        record = await rt.gateway.call("flaky", call, wait=15)
    assert (record.status, record.attempts) == ("succeeded", 2)
    assert [(s.call_id, s.status, s.attempt) for s in spans] == [
        (call.id, "retrying", 1),
        (call.id, "succeeded", 2),
    ]
    assert {s.trace_id for s in spans} == {call.trace_id}
    assert spans[0].error == "service_failed"
    assert len({s.span_id for s in spans}) == 2
    # The outputs name the run that made them as their parent: the trace links up.
    assert record.result is not None
    assert record.result[0].parent_id == spans[1].span_id
    assert spans[1].traceparent == f"00-{call.trace_id}-{spans[1].span_id}-01"
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("span ")]
    assert len(logged) == 2
    assert logged[1].startswith(f"span {spans[1].traceparent} ")
    assert f"call={call.id} service=flaky@1" in logged[1]
