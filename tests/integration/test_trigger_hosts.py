"""Triggers reach only the hosts the platform's host policy allows (FLUXO_HTTP_ALLOW/DENY), as
outbound HTTP does: a mailbox or broker on loopback, the cloud metadata address or a private
network is refused when the trigger is applied, naming the field; a name that resolves to an
internal address only later (DNS rebinding) is refused when the source connects, before any
connection is made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from fluxo.control.hosts import refuse_internal_hosts
from fluxo.control.platform import Platform
from fluxo.control.triggers.queue import queue_sources
from fluxo_core.errors import ValidationError
from fluxo_core.ir.documents import DocumentLimits
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.accounts import AccountStore
from fluxo_core.storage.secrets import SecretKey, SecretStore
from services.http.policy import HostPolicy
from tests.support import services as svc
from tests.support.connections import close_left_open, track_connections

pytestmark = pytest.mark.timeout(60)

ACME = Principal(account_id="acme", user_id="ada")
KEY = SecretKey.parse("a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=", "test key")
ECHO = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "take"},
    "spec": {"engine": "step", "steps": [{"id": "take", "kind": "service", "service": "echo"}]},
}


def trigger(kind: str, config: dict[str, Any], name: str = "t") -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"workflow": "take", "type": kind, kind: config},
    }


def email(host: str) -> dict[str, Any]:
    return trigger(
        "email", {"host": host, "port": 993, "username": "ada", "passwordSecret": "imap"}
    )


def rabbit(host: str) -> dict[str, Any]:
    return trigger("queue", {"source": "rabbitmq", "host": host, "queue": "orders"})


def mqtt(host: str) -> dict[str, Any]:
    return trigger("queue", {"source": "mqtt", "host": host, "topic": "sensors/#"})


class Rebinding:
    """A resolver whose first answer is a public address and every later one loopback (so
    nothing ever connects to the public one)."""

    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked += 1
        return ["93.184.215.14" if self.asked == 1 else "127.0.0.1"]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The shared fixture's database, checked to have closed every connection it opened once
    it closed: a trigger source the platform's exit cancels must not leave one behind."""
    database = Database(database_url)
    opened = track_connections(database)
    await database.migrate()
    yield database
    await database.close()
    left = close_left_open(opened)
    assert left == 0, f"{left} database connection(s) still open once the database closed"


@pytest.fixture
async def secrets(db: Database) -> SecretStore:
    await AccountStore(db).ensure_account("acme")
    return SecretStore(db, KEY)


def platform_on(db: Database, secrets: SecretStore, policy: HostPolicy) -> Platform:
    return Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.1,
        admission_cache_s=0,
        secrets=secrets,
        trigger_tick_s=0.1,
        trigger_sources=queue_sources(
            secrets, DocumentLimits(), policy=policy, reconnect_min_s=0.1, reconnect_max_s=0.2
        ),
        host_policy=policy,
    )


@pytest.fixture
async def platform(db: Database, secrets: SecretStore) -> AsyncIterator[Platform]:
    """A platform whose operator allowed nothing: the default policy."""
    running = Platform(db, svc.SERVICES, workers=1, secrets=secrets, run_triggers=False)
    async with running:
        await running.jobs.apply(ECHO, ACME)
        yield running


@pytest.mark.parametrize(
    ("document", "field", "why"),
    [
        (email("127.0.0.1"), "spec.email.host", "a loopback address"),
        (email("localhost"), "spec.email.host", "a loopback address"),
        (rabbit("169.254.169.254"), "spec.queue.host", "a link-local address"),
        (rabbit("10.1.2.3"), "spec.queue.host", "a private address"),
        (mqtt("192.168.0.7"), "spec.queue.host", "a private address"),
        (mqtt("[::1]"), "spec.queue.host", "a loopback address"),
    ],
)
async def test_a_trigger_on_an_internal_host_is_refused_by_default(
    platform: Platform, document: dict[str, Any], field: str, why: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await platform.resources.apply(ACME, document)
    assert [location for location, _ in refused.value.problems] == [field]
    assert why in refused.value.message
    assert "FLUXO_HTTP_ALLOW" in refused.value.message
    assert await platform.triggers.list(ACME) == []


async def test_the_operator_allow_list_lets_a_trigger_reach_an_internal_host() -> None:
    allowed = HostPolicy(allow=["10.1.0.0/16", "127.0.0.1"])
    await refuse_internal_hosts(allowed, rabbit("10.1.2.3")["spec"])
    await refuse_internal_hosts(allowed, email("127.0.0.1")["spec"])
    with pytest.raises(ValidationError):
        await refuse_internal_hosts(allowed, mqtt("10.2.0.1")["spec"])
    denied = HostPolicy(allow=["127.0.0.1"], deny=["127.0.0.0/8"])  # deny wins
    with pytest.raises(ValidationError) as refused:
        await refuse_internal_hosts(denied, email("127.0.0.1")["spec"])
    assert "FLUXO_HTTP_DENY" in refused.value.message


async def test_a_broker_name_that_rebinds_to_loopback_is_refused_when_connecting(
    db: Database, secrets: SecretStore
) -> None:
    resolver = Rebinding()
    running = platform_on(db, secrets, HostPolicy(resolver=resolver))
    async with running:
        await running.jobs.apply(ECHO, ACME)
        # Public when applied: accepted (nothing is connected to at apply); loopback by the
        # time the source connects.
        await running.resources.apply(ACME, rabbit("broker.example.test"))
        deadline = time.monotonic() + 20
        while True:
            row = await running.triggers.get(ACME, "t")
            if row.health == "degraded" and row.last_error:
                break
            assert time.monotonic() < deadline, f"not degraded within 20 s: {row}"
            await asyncio.sleep(0.1)
    assert "refused to connect to broker.example.test (127.0.0.1)" in row.last_error
    assert "FLUXO_HTTP_ALLOW" in row.last_error
