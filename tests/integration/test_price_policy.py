"""The price policy of a service: which calls that did not succeed are billed (by default none).

Each case runs real workers on the real databases: a service declares its policy in its
``Price``, the worker applies the outcome, and Metering writes (or does not write) the charge
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from fluxo.control.policy import Admission
from fluxo_core.errors import ServiceError
from fluxo_core.ir import Packet
from fluxo_core.storage import AccountStore, Database, ServiceStore, bulk_insert
from fluxo_core.storage.ledger import UsageFilter, UsageLedger
from fluxo_core.storage.tables import jobs, usage_records
from service_runtime import Price, RetryPolicy, Service, ServiceRuntime, service
from service_runtime.catalog import ServiceCatalog
from service_runtime.dead_letters import DeadLetters
from service_runtime.interceptors import Metering
from tests.support.rows import JobRowToWrite

pytestmark = pytest.mark.timeout(60)

ACTOR = {"user": {"id": "u-1"}, "account": {"id": "acme"}}
FAST = RetryPolicy(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.02)


def failing(name: str, price: Price) -> Service:
    @service(name, price=price, retry=FAST)
    async def handler(payload: dict[str, Any]) -> dict[str, Any]:
        raise ServiceError("this input can never work", retryable=False)

    return handler


def failing_twice(name: str, price: Price) -> Service:
    runs: dict[int, int] = {}

    @service(name, price=price, retry=FAST)
    async def handler(payload: dict[str, Any]) -> dict[str, Any]:
        runs[payload["n"]] = runs.get(payload["n"], 0) + 1
        if runs[payload["n"]] <= 2:
            raise ServiceError("transient", retryable=True)
        return {"n": payload["n"]}

    return handler


async def charges(db: Database, service_name: str) -> list[tuple[str, int, int, int]]:
    """``(outcome, attempt, units, amount_micros)`` of the service's records, in order."""
    u = usage_records
    query = (
        sa.select(u.c.outcome, u.c.attempt, u.c.units, u.c.amount_micros)
        .where(u.c.service == service_name)
        .order_by(u.c.attempt, u.c.id)
    )
    return [tuple(r) for r in await db.read(lambda c: c.execute(query).all())]  # type: ignore[misc]


async def run_calls(db: Database, svc: Service, count: int = 1) -> list[str]:
    await AccountStore(db).ensure_account("acme")
    async with ServiceRuntime(db, [svc], workers=1, poll_interval_s=0.05) as rt:
        packets = [
            Packet.model_validate({"actor": ACTOR, "payload": {"n": i}}) for i in range(count)
        ]
        ids = await rt.gateway.submit(svc.name, packets)
        for call_id in ids:
            await rt.gateway.wait(call_id, 30)
    return ids


async def test_by_default_only_succeeded_calls_are_billed(db: Database) -> None:
    await run_calls(db, failing("fails-free", Price(per_call="0.25")))
    await run_calls(db, failing_twice("retries-free", Price(per_call="0.1")))
    assert await charges(db, "fails-free") == []
    # Two failed attempts, then success: only the success is billed.
    assert await charges(db, "retries-free") == [("succeeded", 0, 1, 100_000)]


async def test_a_service_that_bills_failed_calls_charges_its_per_call_price_once(
    db: Database,
) -> None:
    await run_calls(db, failing("fails-billed", Price(per_call="0.25", bill_failed=True)), 2)
    assert await charges(db, "fails-billed") == [("failed", 0, 1, 250_000)] * 2
    [total] = await UsageLedger(db).sums("acme", UsageFilter(service="fails-billed"))
    assert (total.calls, total.amount_micros) == (2, 500_000)


async def test_a_service_that_bills_retries_charges_each_retried_attempt_once(
    db: Database,
) -> None:
    await run_calls(db, failing_twice("retries-billed", Price(per_call="0.1", bill_retried=True)))
    assert await charges(db, "retries-billed") == [
        ("succeeded", 0, 1, 100_000),
        ("retried", 1, 1, 100_000),
        ("retried", 2, 1, 100_000),
    ]
    # One call, three charges.
    [total] = await UsageLedger(db).sums("acme", UsageFilter(service="retries-billed"))
    assert (total.calls, total.amount_micros) == (1, 300_000)


async def cancelled_call(db: Database, svc: Service) -> None:
    """A call of a job that is cancelled while the call waits in its queue: the worker's
    admission refuses it (reason ``job_cancelled``)."""
    accounts = AccountStore(db)
    await accounts.ensure_account("acme")
    row = JobRowToWrite("j-1", "acme", "u-1", "wf", 1, "step", "running", b"{}", 1, 1.0)
    await db.transact(lambda tx: bulk_insert(tx, jobs, [row]))
    packet = Packet.model_validate({"actor": ACTOR, "job_id": "j-1", "payload": {"n": 1}})
    async with ServiceRuntime(db, [svc], workers=0) as rt:  # the gateway only
        [call_id] = await rt.gateway.submit(svc.name, [packet])
    await db.transact(
        lambda tx: tx.execute(sa.update(jobs).where(jobs.c.id == "j-1").values(status="cancelled"))
    )
    chain = [Admission(accounts, cache_s=0), Metering()]
    async with ServiceRuntime(db, [svc], workers=1, interceptors=chain, poll_interval_s=0.05) as rt:
        record = await rt.gateway.wait(call_id, 30)
    assert record.status == "failed"


@pytest.mark.parametrize(("bill", "expected"), [(False, []), (True, [("cancelled", 0, 1, 70_000)])])
async def test_a_cancelled_call_is_billed_only_if_its_service_says_so(
    db: Database, bill: bool, expected: list[Any]
) -> None:
    ran: list[int] = []

    @service("cancellable", price=Price(per_call="0.07", bill_cancelled=bill))
    async def cancellable(payload: dict[str, Any]) -> dict[str, Any]:
        ran.append(payload["n"])
        return payload

    await cancelled_call(db, cancellable)
    assert ran == []  # refused before its handler ran
    assert await charges(db, "cancellable") == expected


@pytest.mark.parametrize("make", [failing, failing_twice], ids=["failed", "retried"])
async def test_the_policy_is_stored_with_the_published_service(
    db: Database, make: Callable[[str, Price], Service]
) -> None:
    price = Price(per_call="0.1", bill_failed=True, bill_retried=False, bill_cancelled=True)
    svc = make("published", price)
    async with ServiceRuntime(db, [svc], workers=0):
        pass
    # As another process (an API server that does not run the service) resolves it.
    info = await ServiceCatalog(db).resolve("published")
    row = await ServiceStore(db).find("published")
    assert row is not None
    assert (row.bill_failed, row.bill_retried, row.bill_cancelled) == (True, False, True)
    assert info.to_dict()["price"]["policy"] == {
        "failed": "billed",
        "retried": "free",
        "cancelled": "billed",
    }


async def test_a_replayed_dead_letter_is_billed_for_its_failure_once_and_its_success(
    db: Database,
) -> None:
    # Its failure was billed; replayed, it fails again (not billed twice, and the worker goes
    # on), then, fixed and replayed again, succeeds (billed as a success).
    healthy = {"ok": False}

    @service("picky-billed", price=Price(per_call="0.3", bill_failed=True), retry=FAST)
    async def picky(payload: dict[str, Any]) -> dict[str, Any]:
        if not healthy["ok"]:
            raise ServiceError("downstream rejects this", retryable=False)
        return {"done": payload["n"]}

    await AccountStore(db).ensure_account("acme")
    async with ServiceRuntime(db, [picky], workers=1, poll_interval_s=0.05) as rt:
        letters = DeadLetters(db, rt.transport)
        packet = Packet.model_validate({"actor": ACTOR, "payload": {"n": 1}})
        first = await rt.gateway.call("picky-billed", packet, wait=10)
        assert first.status == "failed"
        assert (await letters.replay(picky.input_queue)).replayed == 1
        # The replay re-opened the call: this waits for its second outcome.
        assert (await rt.gateway.wait(first.id, 10)).status == "failed"
        healthy["ok"] = True
        assert (await letters.replay(picky.input_queue)).replayed == 1
        assert (await rt.gateway.wait(first.id, 10)).status == "succeeded"
    assert await charges(db, "picky-billed") == [
        ("failed", 0, 1, 300_000),
        ("succeeded", 0, 1, 300_000),
    ]
