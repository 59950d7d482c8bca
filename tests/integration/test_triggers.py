"""Triggers on SQLite and PostgreSQL: cron slots fire jobs that complete on the step engine,
once each, across two schedulers on one database and across a restart; missed slots are made
up as the catch-up rule says; held triggers create nothing; webhooks are signed, deduplicated,
bounded, and answer with the job.

The clock is a ManualClock: the tests move it past a slot and ask the scheduler to look
(:meth:`TriggerSupervisor.tick`) instead of waiting for minutes to pass.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo.control.triggers.webhook import sign
from fluxo_core.clock import ManualClock
from fluxo_core.errors import PermissionDeniedError, ValidationError
from fluxo_core.storage import Database, Principal, Role
from fluxo_core.storage.secrets import SecretKey, SecretStore
from tests.support import services as svc

pytestmark = pytest.mark.timeout(90)

ACME = Principal(account_id="acme", user_id="ada")
GLOBEX = Principal(account_id="globex", user_id="gus")
# 2027-01-15 08:00:00 UTC: a whole minute, so "* * * * *" slots are at +60 s, +120 s, ...
START = 1_800_000_000.0 - (1_800_000_000 % 60)
KEY = SecretKey.parse("a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=", "test key")
HOOK_SECRET = "whsec-3f9c0a7d"

COUNT_UP = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "count-up"},
    "spec": {"engine": "step", "steps": [{"id": "up", "kind": "service", "service": "inc"}]},
}


def trigger(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"workflow": "count-up", **spec},
    }


def every_minute(**cron: Any) -> dict[str, Any]:
    return trigger(
        "minutely",
        {"type": "cron", "schedule": "* * * * *", "input": {"n": 1}, "cron": cron},
    )


@dataclass
class World:
    db: Database
    clock: ManualClock
    platform: Platform
    secrets: SecretStore

    async def jobs(self, who: Principal = ACME) -> list[Any]:
        page = await self.platform.jobs.list(who)
        return [j for j in page.items if j.user_id.startswith("trigger:")]

    async def settled(self, who: Principal = ACME) -> list[Any]:
        """The trigger jobs of ``who``, each once it ended."""
        return [await self.platform.jobs.wait(who, j.id, 20) for j in await self.jobs(who)]


def platform_on(db: Database, clock: ManualClock, secrets: SecretStore) -> Platform:
    # run_triggers off: each test drives the scheduler itself (tick), so no slot fires while
    # it arranges the world.
    return Platform(
        db,
        svc.SERVICES,
        workers=2,
        poll_interval_s=0.1,
        admission_cache_s=0,
        clock=clock,
        secrets=secrets,
        run_triggers=False,
    )


@pytest.fixture
async def world(db: Database, tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock(START + 5)
    secrets = SecretStore(db, KEY)
    platform = platform_on(db, clock, secrets)
    for account in ("acme", "globex"):
        await platform.accounts.ensure_account(account)
    async with platform:
        await platform.jobs.apply(COUNT_UP, ACME)
        await platform.jobs.apply(COUNT_UP, GLOBEX)
        yield World(db, clock, platform, secrets)


def conditions(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in document["status"]["conditions"]}


# --- cron ----------------------------------------------------------------------------------------


async def test_a_cron_trigger_fires_each_slot_once_and_its_jobs_complete(world: World) -> None:
    applied = await world.platform.resources.apply(ACME, every_minute())
    assert conditions(applied.document) == {"Ready": ("True", "Scheduled")}
    assert applied.document["status"]["nextFireTime"] == "2027-01-15T08:01:00Z"
    supervisor = world.platform.trigger_supervisor
    assert await supervisor.tick() == 0  # not yet
    world.clock.advance(60)
    assert await supervisor.tick() == 1
    assert await supervisor.tick() == 0  # the same slot again: nothing
    world.clock.advance(60)
    assert await supervisor.tick() == 1
    jobs = await world.settled()
    assert sorted(j.status for j in jobs) == ["succeeded", "succeeded"]
    assert all(j.result == {"n": 2} for j in jobs)
    keys = sorted(j.idempotency_key for j in jobs)
    assert keys == [
        "trigger:minutely:2027-01-15T08:01:00Z",
        "trigger:minutely:2027-01-15T08:02:00Z",
    ]
    state = await world.platform.triggers.get(ACME, "minutely")
    assert (state.jobs_created, state.health, state.last_error) == (2, "connected", None)
    assert state.next_fire_at == START + 180
    assert state.lag_s == 5.0  # the slot at +60 fired when the clock said +65


async def test_a_bad_schedule_or_time_zone_is_refused_where_it_is(world: World) -> None:
    with pytest.raises(ValidationError) as bad:
        await world.platform.resources.apply(
            ACME, trigger("t", {"type": "cron", "schedule": "every day"})
        )
    assert bad.value.problems[0][0] == "spec.schedule"
    with pytest.raises(ValidationError) as zone:
        await world.platform.resources.apply(
            ACME,
            trigger(
                "t", {"type": "cron", "schedule": "0 9 * * *", "cron": {"timeZone": "Mars/Base"}}
            ),
        )
    assert zone.value.problems[0][0] == "spec.cron.timeZone"
    assert "Europe/Paris" in zone.value.problems[0][1]


async def test_a_schedule_fires_in_its_time_zone(world: World) -> None:
    applied = await world.platform.resources.apply(
        ACME,
        trigger(
            "paris-nine",
            {"type": "cron", "schedule": "0 9 * * *", "cron": {"timeZone": "Europe/Paris"}},
        ),
    )
    # Winter: nine in Paris is eight UTC, the same day (the clock is 08:00:05 UTC, past it).
    assert applied.document["status"]["nextFireTime"] == "2027-01-16T08:00:00Z"


@pytest.mark.parametrize(
    ("rule", "expected"), [("skip", 1), ("once", 2), ("all", 4)], ids=["skip", "once", "all"]
)
async def test_slots_missed_while_down_are_made_up_as_the_rule_says(
    world: World, rule: str, expected: int
) -> None:
    await world.platform.resources.apply(ACME, every_minute(catchUp=rule, maxCatchUp=3))
    # Ten slots passed while nothing ran: the last (5 s ago) is on time and fires whatever the
    # rule; of the nine missed, skip fires none, once the latest, all the latest three.
    world.clock.advance(10 * 60)
    assert await world.platform.trigger_supervisor.tick() == expected
    state = await world.platform.triggers.get(ACME, "minutely")
    assert state.next_fire_at == START + 11 * 60  # the next slot to come, not a missed one
    keys = sorted(j.idempotency_key for j in await world.jobs())
    assert keys == [f"trigger:minutely:2027-01-15T08:{m:02d}:00Z" for m in range(11 - expected, 11)]


async def test_two_schedulers_on_one_database_fire_each_slot_once(
    world: World, database_url: str
) -> None:
    """A second Fluxo process: its own Database (connections) and Platform, the same data."""
    await world.platform.resources.apply(ACME, every_minute(catchUp="all", maxCatchUp=5))
    other_db = Database(database_url)
    other = platform_on(other_db, world.clock, SecretStore(other_db, KEY))
    try:
        async with other:
            for _ in range(3):
                world.clock.advance(60)
                fired = await asyncio.gather(
                    world.platform.trigger_supervisor.tick(), other.trigger_supervisor.tick()
                )
                assert sum(fired) >= 1
    finally:
        await other_db.close()
    jobs = await world.settled()
    assert len(jobs) == 3
    assert len({j.idempotency_key for j in jobs}) == 3
    state = await world.platform.triggers.get(ACME, "minutely")
    assert state.jobs_created == 3
    assert state.next_fire_at == START + 4 * 60


async def test_a_restart_carries_on_from_the_stored_slot(world: World, database_url: str) -> None:
    await world.platform.resources.apply(ACME, every_minute(catchUp="all"))
    world.clock.advance(60)
    assert await world.platform.trigger_supervisor.tick() == 1
    await world.platform.stop()  # "down": two slots pass
    world.clock.advance(120)
    second_db = Database(database_url)
    restarted = platform_on(second_db, world.clock, SecretStore(second_db, KEY))
    try:
        async with restarted:
            assert await restarted.trigger_supervisor.tick() == 2
            assert await restarted.trigger_supervisor.tick() == 0
            page = await restarted.jobs.list(ACME)
            keys = sorted(j.idempotency_key or "" for j in page.items)
    finally:
        await second_db.close()
        await world.platform.start()
    assert keys == [f"trigger:minutely:2027-01-15T08:0{m}:00Z" for m in (1, 2, 3)]


async def test_a_held_cron_trigger_fires_nothing_then_catches_up_once(world: World) -> None:
    platform = world.platform
    await platform.resources.apply(ACME, every_minute(catchUp="once"))
    await platform.triggers.pause(ACME, "minutely")
    world.clock.advance(5 * 60)
    assert await platform.trigger_supervisor.tick() == 0
    state = await platform.triggers.get(ACME, "minutely")
    assert "paused" in (state.held or "")
    assert await world.jobs() == []
    await platform.triggers.resume(ACME, "minutely")
    # The slots missed while paused are made up once, and the one due now fires.
    assert await platform.trigger_supervisor.tick() == 2
    # A paused workflow holds its triggers too, and so does a block of the trigger.
    await platform.job_control.pause_workflow(ACME, "count-up")
    world.clock.advance(60)
    assert await platform.trigger_supervisor.tick() == 0
    assert "workflow 'count-up' is paused" in (await platform.triggers.get(ACME, "minutely")).held
    await platform.job_control.resume_workflow(ACME, "count-up")
    block = await platform.blocks.place(ACME, kind="trigger", target="minutely", reason="noisy")
    assert await platform.trigger_supervisor.tick() == 0
    held = (await platform.triggers.get(ACME, "minutely")).held
    assert "noisy" in (held or "")
    assert block.id in (held or "")
    await platform.blocks.lift(ACME, block.id)
    assert await platform.trigger_supervisor.tick() == 1
    assert len(await world.jobs()) == 3


SLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "count-up"},
    "spec": {"engine": "step", "steps": [{"id": "wait", "kind": "service", "service": "slow"}]},
}


def slow_minutely(concurrency: str) -> dict[str, Any]:
    return trigger(
        "minutely",
        {
            "type": "cron",
            "schedule": "* * * * *",
            "input": {"n": 1, "sleep": 2.5},
            "cron": {"concurrency": concurrency},
        },
    )


async def test_forbid_skips_a_slot_while_the_last_job_runs(world: World) -> None:
    platform = world.platform
    await platform.jobs.apply(SLOW, ACME)
    await platform.resources.apply(ACME, slow_minutely("forbid"))
    world.clock.advance(60)
    assert await platform.trigger_supervisor.tick() == 1
    world.clock.advance(60)
    assert await platform.trigger_supervisor.tick() == 0  # the first still runs
    (job,) = await world.jobs()
    await platform.jobs.cancel(ACME, job.id)


async def test_replace_cancels_the_running_job_for_the_new_slot(world: World) -> None:
    platform = world.platform
    await platform.jobs.apply(SLOW, ACME)
    await platform.resources.apply(ACME, slow_minutely("replace"))
    world.clock.advance(60)
    assert await platform.trigger_supervisor.tick() == 1
    (first,) = await world.jobs()
    world.clock.advance(60)
    assert await platform.trigger_supervisor.tick() == 1
    ended = await platform.jobs.wait(ACME, first.id, 20)
    assert ended.status == "cancelled"
    state = await platform.triggers.get(ACME, "minutely")
    assert state.last_job_id != first.id
    await platform.jobs.cancel(ACME, state.last_job_id or "")


# --- firing by hand, and the resource's life ----------------------------------------------------


async def test_fire_by_hand_with_an_event_id_makes_one_job(world: World) -> None:
    platform = world.platform
    await platform.resources.apply(ACME, every_minute())
    first = await platform.triggers.fire_now(ACME, "minutely", {"n": 5}, event_id="e-1")
    again = await platform.triggers.fire_now(ACME, "minutely", {"n": 5}, event_id="e-1")
    assert (first.created, again.created) == (True, False)
    assert first.job_id == again.job_id
    job = await platform.jobs.wait(ACME, first.job_id, 20)
    assert (job.status, job.result) == ("succeeded", {"n": 6})
    viewer = Principal(account_id="acme", user_id="vic", role=Role.VIEWER)
    with pytest.raises(PermissionDeniedError):
        await platform.triggers.fire_now(viewer, "minutely", None)


async def test_deleting_a_trigger_stops_it(world: World) -> None:
    await world.platform.resources.apply(ACME, every_minute())
    await world.platform.resources.delete(ACME, "trigger", "minutely")
    world.clock.advance(120)
    assert await world.platform.trigger_supervisor.tick() == 0
    assert await world.platform.triggers.list(ACME) == []


async def test_the_supervisor_fires_due_slots_by_itself(db: Database, tmp_path: Path) -> None:
    """``fluxo up``'s loop: a slot that comes due is fired without anyone asking."""
    clock = ManualClock(START + 5)
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.1,
        clock=clock,
        secrets=SecretStore(db, KEY),
        trigger_tick_s=0.05,
    )
    await platform.accounts.ensure_account("acme")
    async with platform:
        await platform.jobs.apply(COUNT_UP, ACME)
        await platform.resources.apply(ACME, every_minute())
        clock.advance(60)
        for _ in range(200):
            state = await platform.triggers.get(ACME, "minutely")
            if state.jobs_created:
                break
            await asyncio.sleep(0.05)
        assert state.jobs_created == 1


# --- webhooks ------------------------------------------------------------------------------------


@pytest.fixture
async def http(world: World) -> AsyncIterator[TestClient[Any, Any]]:
    await world.secrets.put("acme", "orders-hook", HOOK_SECRET)
    await world.platform.resources.apply(
        ACME,
        trigger(
            "orders",
            {"type": "webhook", "webhook": {"secret": "orders-hook", "maxBodyBytes": 4096}},
        ),
    )
    async with TestClient(TestServer(create_app(world.platform, max_packet_bytes=65536))) as client:
        yield client


def signed(
    body: bytes,
    stamp: int,
    *,
    secret: str = HOOK_SECRET,
    delivery: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    headers = {
        "Content-Type": content_type,
        "X-Fluxo-Timestamp": str(stamp),
        "X-Fluxo-Signature": sign(secret, stamp, body),
    }
    if delivery is not None:
        headers["X-Fluxo-Delivery"] = delivery
    return headers


async def test_a_signed_webhook_makes_a_job_that_completes(
    world: World, http: TestClient[Any, Any]
) -> None:
    body = json.dumps({"order": 42}).encode()
    stamp = int(world.clock.time())
    response = await http.post(
        "/hooks/acme/orders?source=shop&wait=20", data=body, headers=signed(body, stamp)
    )
    answer = await response.json()
    assert response.status == 200, answer
    assert answer["status"] == "succeeded"
    job = await world.platform.jobs.get(ACME, answer["job_id"])
    assert job.input["body"] == {"order": 42}
    assert job.input["query"] == {"source": "shop"}
    assert "x-fluxo-signature" not in job.input["headers"]
    assert job.input["headers"]["x-fluxo-timestamp"] == str(stamp)
    # Without wait: 202 at once.
    other = json.dumps({"order": 43}).encode()
    response = await http.post("/hooks/acme/orders", data=other, headers=signed(other, stamp))
    assert response.status == 202
    state = await world.platform.triggers.get(ACME, "orders")
    assert state.jobs_created == 2


async def test_the_same_delivery_three_times_makes_one_job(
    world: World, http: TestClient[Any, Any]
) -> None:
    stamp = int(world.clock.time())
    ids = set()
    for n in range(3):
        # Signed anew each time (a sender's retry): the delivery id makes it the same event.
        body = json.dumps({"order": 7}).encode()
        world.clock.advance(1)
        response = await http.post(
            "/hooks/acme/orders", data=body, headers=signed(body, stamp + n, delivery="dlv-7")
        )
        answer = await response.json()
        assert response.status == 202, answer
        assert answer["duplicate"] is (n > 0)
        ids.add(answer["job_id"])
    assert len(ids) == 1
    assert len(await world.jobs()) == 1
    assert (await world.platform.triggers.get(ACME, "orders")).jobs_created == 1


async def test_form_and_text_bodies_become_the_payload(
    world: World, http: TestClient[Any, Any]
) -> None:
    stamp = int(world.clock.time())
    form = b"name=Ada&tag=a&tag=b"
    response = await http.post(
        "/hooks/acme/orders",
        data=form,
        headers=signed(form, stamp, content_type="application/x-www-form-urlencoded"),
    )
    job = await world.platform.jobs.get(ACME, (await response.json())["job_id"])
    assert job.input["body"] == {"name": "Ada", "tag": ["a", "b"]}
    text = "hello ✓".encode()
    response = await http.post(
        "/hooks/acme/orders", data=text, headers=signed(text, stamp, content_type="text/plain")
    )
    job = await world.platform.jobs.get(ACME, (await response.json())["job_id"])
    assert (job.input["body"], job.input["contentType"]) == ("hello ✓", "text/plain")


async def test_bad_webhooks_are_refused_clearly_and_create_nothing(
    world: World, http: TestClient[Any, Any]
) -> None:
    now = int(world.clock.time())
    body = b'{"order": 1}'
    deep = ("[" * 150 + "]" * 150).encode()
    cases = [
        ("wrong secret", body, signed(body, now, secret="guess"), 401, "does not match"),
        ("stale", body, signed(body, now - 301), 401, "replays"),
        ("unsigned", body, {"Content-Type": "application/json"}, 401, "required"),
        ("tampered", b'{"order": 2}', signed(body, now), 401, "does not match"),
        ("malformed", b'{"order": ', signed(b'{"order": ', now), 400, "JSON"),
        ("too deep", deep, signed(deep, now), 422, "deep"),
        (
            "oversized",
            b"x" * 5000,
            signed(b"x" * 5000, now, content_type="text/plain"),
            413,
            "maxBodyBytes",
        ),
    ]
    for what, data, headers, status, says in cases:
        response = await http.post("/hooks/acme/orders", data=data, headers=headers)
        text = await response.text()
        assert response.status == status, (what, text)
        assert says in text, (what, text)
    assert await world.jobs() == []
    assert (await world.platform.triggers.get(ACME, "orders")).jobs_created == 0


async def test_another_accounts_trigger_answers_as_a_wrong_signature(
    world: World, http: TestClient[Any, Any]
) -> None:
    """Globex's hook, signed with acme's secret, and a trigger that does not exist: the same
    401 as a wrong signature, and nothing is created in either account."""
    await world.secrets.put("globex", "orders-hook", "globex-secret-value")
    await world.platform.resources.apply(
        GLOBEX, trigger("orders", {"type": "webhook", "webhook": {"secret": "orders-hook"}})
    )
    now = int(world.clock.time())
    body = b'{"order": 1}'
    answers = set()
    bearer = {"Authorization": "Bearer whsec-3f9c0a7d", "Content-Type": "application/json"}
    for headers in (signed(body, now), bearer):
        for path in ("/hooks/globex/orders", "/hooks/globex/nothing-here", "/hooks/nobody/orders"):
            response = await http.post(path, data=body, headers=headers)
            assert response.status == 401
            answers.add(json.dumps(await response.json()))
    wrong = await http.post("/hooks/acme/orders", data=body, headers=signed(body, now, secret="x"))
    answers.add(json.dumps(await wrong.json()))
    assert len(answers) == 1  # one answer, signed or not: which names exist is not told
    assert "globex-secret-value" not in answers.pop()
    assert await world.jobs(GLOBEX) == []
    assert await world.jobs() == []


async def test_a_held_webhook_answers_423_and_creates_nothing(
    world: World, http: TestClient[Any, Any]
) -> None:
    platform = world.platform
    now = int(world.clock.time())
    body = b'{"order": 1}'
    await platform.triggers.pause(ACME, "orders")
    response = await http.post("/hooks/acme/orders", data=body, headers=signed(body, now))
    answer = await response.json()
    assert response.status == 423
    assert "fluxo triggers resume orders" in answer["error"]["message"]
    await platform.triggers.resume(ACME, "orders")
    await platform.blocks.place(ACME, kind="workflow", target="count-up", reason="audit")
    response = await http.post("/hooks/acme/orders", data=body, headers=signed(body, now))
    assert response.status == 423
    assert "audit" in (await response.json())["error"]["message"]
    assert await world.jobs() == []


async def test_a_bearer_webhook(world: World, http: TestClient[Any, Any]) -> None:
    await world.platform.resources.apply(
        ACME,
        trigger(
            "bearer", {"type": "webhook", "webhook": {"secret": "orders-hook", "auth": "bearer"}}
        ),
    )
    ok = await http.post(
        "/hooks/acme/bearer", json={"a": 1}, headers={"Authorization": f"Bearer {HOOK_SECRET}"}
    )
    assert ok.status == 202
    bad = await http.post(
        "/hooks/acme/bearer", json={"a": 1}, headers={"Authorization": "Bearer x"}
    )
    assert bad.status == 401
    assert len(await world.jobs()) == 1


async def test_a_webhook_without_its_secret_says_so_and_refuses_everything(
    world: World, http: TestClient[Any, Any]
) -> None:
    applied = await world.platform.resources.apply(
        ACME, trigger("nosecret", {"type": "webhook", "webhook": {"secret": "not-set"}})
    )
    assert conditions(applied.document) == {"Ready": ("False", "SecretMissing")}
    body = b"{}"
    stamp = int(world.clock.time())
    for secret in ("", "not-set"):
        response = await http.post(
            "/hooks/acme/nosecret", data=body, headers=signed(body, stamp, secret=secret)
        )
        assert response.status == 401
    assert await world.jobs() == []


async def test_the_trigger_routes(world: World, http: TestClient[Any, Any]) -> None:
    token = await world.platform.accounts.issue_token("acme", "ada")
    auth = {"Authorization": f"Bearer {token}"}
    listed = await (await http.get("/v1/triggers", headers=auth)).json()
    assert [t["name"] for t in listed["items"]] == ["orders"]
    fired = await http.post("/v1/triggers/orders/fire", json={"input": {"n": 1}}, headers=auth)
    assert fired.status == 201
    paused = await http.post("/v1/triggers/orders/pause", headers=auth)
    assert (await paused.json())["paused"] is True
    held = await http.post("/v1/triggers/orders/fire", headers=auth)
    assert held.status == 423
    resumed = await http.post("/v1/triggers/orders/resume", headers=auth)
    assert (await resumed.json())["paused"] is False
    described = await (await http.get("/v1/triggers/orders", headers=auth)).json()
    assert (described["jobsCreated"], described["health"]) == (1, "connected")


async def test_a_failing_trigger_says_so_in_its_resource_status(world: World) -> None:
    platform = world.platform
    ghost = every_minute()
    ghost["spec"]["workflow"] = "not-applied"
    applied = await platform.resources.apply(ACME, ghost)
    assert conditions(applied.document) == {"Ready": ("False", "WorkflowNotFound")}
    assert applied.document["status"]["health"] == "connected"
    world.clock.advance(60)
    await platform.trigger_supervisor.tick()  # the slot passes, its error recorded
    state = await platform.triggers.get(ACME, "minutely")
    assert (state.health, state.jobs_created) == ("failing", 0)
    assert "not-applied" in (state.last_error or "")
    document = await platform.resources.get(ACME, "trigger", "minutely")
    assert document["status"]["health"] == "failing"
    assert document["status"]["lastError"] == state.last_error
    # Fixed: the next slot fires, and the status says connected again.
    await platform.resources.apply(ACME, every_minute())
    world.clock.advance(60)
    assert await platform.trigger_supervisor.tick() == 1
    document = await platform.resources.get(ACME, "trigger", "minutely")
    assert document["status"]["health"] == "connected"
    assert "lastError" not in document["status"]
