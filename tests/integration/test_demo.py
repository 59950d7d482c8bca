"""The living demo (``fluxo demo``): set up, a stream of jobs, a block cycle, and its refusals.

The driver runs on a real platform (SQLite and PostgreSQL) for a few dozen ticks with no wait
between them; its counters are checked against what the database says happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fluxo.cli import main
from fluxo.control.auth import Auth
from fluxo.control.demo import (
    BLOCKED_ACCOUNT,
    DEMO_ACCOUNTS,
    DEMO_USER,
    PASSWORD_ENV,
    DemoDriver,
    DemoOptions,
    check_demo_allowed,
    write_nodered_tokens,
)
from fluxo.control.platform import Platform
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError, ServiceError
from fluxo_core.storage import Database
from fluxo_core.storage.accounts import PLATFORM_ACCOUNT, Role
from fluxo_core.storage.users import UserStore
from services import builtin_services, demo_services

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_WORKFLOWS = {"order-intake", "lead-enrichment", "invoice-reminder", "order-alerts"}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def platform(db: Database) -> AsyncIterator[Platform]:
    services = [*builtin_services(), *demo_services()]
    fluxo = Platform(db, services, workers=2, poll_interval_s=0.1, admission_cache_s=0)
    async with fluxo:
        yield fluxo


def options(**changes: object) -> DemoOptions:
    base = {"seed": 7, "examples": EXAMPLES, "interval_s": 0.01}
    return DemoOptions(**{**base, **changes})  # type: ignore[arg-type]


def config_for(tmp_path: Path, **changes: object) -> FluxoConfig:
    return FluxoConfig(home=tmp_path, database_url=f"sqlite:///{tmp_path}/x.db", **changes)  # type: ignore[arg-type]


async def test_setup_makes_two_accounts_whose_admins_sign_in_with_the_printed_password(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    driver = DemoDriver(platform, options(), report=lambda _: None)
    credentials = await driver.setup()
    assert [(c.account_id, c.user_id) for c in credentials] == [
        ("acme", DEMO_USER),
        ("globex", DEMO_USER),
    ]
    auth = Auth(platform.db, platform.accounts)
    for credential in credentials:
        assert credential.password is not None
        signed_in = await auth.sign_in(credential.account_id, DEMO_USER, credential.password)
        assert signed_in.session.role is Role.ACCOUNT_ADMIN
        assert signed_in.session.account_id == credential.account_id
        applied = await platform.workflows.list(credential.account_id)
        assert {w.workflow.metadata.name for w in applied} == EXAMPLE_WORKFLOWS
    assert set(driver.workflows) == EXAMPLE_WORKFLOWS
    assert driver.stats.skipped == []

    # A second run keeps the passwords (they were shown once), unless one is given.
    again = await DemoDriver(platform, options(), report=lambda _: None).setup()
    assert [c.password for c in again] == [None, None]
    monkeypatch.setenv(PASSWORD_ENV, "chosen-demo-password")
    given = await DemoDriver(platform, options(), report=lambda _: None).setup()
    assert [c.password for c in given] == ["chosen-demo-password"] * 2
    signed_in = await auth.sign_in("globex", DEMO_USER, "chosen-demo-password")
    assert signed_in.session.account_id == "globex"


async def test_the_stream_succeeds_fails_for_a_real_cause_and_blocks_then_resumes(
    platform: Platform,
) -> None:
    lines: list[str] = []
    driver = DemoDriver(
        platform,
        options(block_every=6, block_for=4, quota_calls=35, failure_rate=0.25),
        report=lines.append,
    )
    await driver.setup()
    for _ in range(40):  # blocked during ticks 6-9, 12-15, ...; lifted at the start of tick 40
        await driver.tick()
        await asyncio.sleep(0)  # let the engine and the workers take their turn
    await driver.drain()
    stats = driver.stats

    # Every created job ended, most of them well, some not.
    assert sum(stats.outcomes.values()) == stats.submitted > 15
    assert stats.outcomes["succeeded"] > stats.outcomes["failed"] > 0
    for account_id in DEMO_ACCOUNTS:
        principal = DemoDriver.principal(account_id)
        assert (await platform.jobs.list(principal, status="blocked")).items == []
    failed = [
        job
        for account_id in DEMO_ACCOUNTS
        for job in (
            await platform.jobs.list(DemoDriver.principal(account_id), status="failed")
        ).items
    ]
    assert len(failed) == stats.outcomes["failed"]
    for job in failed:  # the real cause: enrich-customer refuses a customer on credit hold
        assert job.error is not None
        assert job.error["step"] == "enrich"
        assert "mallory@example.com is on credit hold" in job.error["message"]

    # The blocked account's submissions during a block were refused by the real admission,
    # and its jobs the block caught running were resumed after it.
    assert stats.refused["blocked"] > 0
    assert stats.resumed > 0
    assert stats.blocks_placed == stats.blocks_lifted >= 6
    admin = driver.admin
    audit = await platform.blocks.audit(admin)
    mine = [e for e in audit if e.account_id == BLOCKED_ACCOUNT]
    assert [e.action for e in mine].count("place") == stats.blocks_placed
    assert [e.action for e in mine].count("lift") == stats.blocks_lifted
    assert await platform.blocks.find(admin, active_only=True) == []

    # The quota reached 80 % and was raised before it refused anything.
    events = await platform.quotas.events(BLOCKED_ACCOUNT)
    assert [e.threshold for e in events] == [80]
    assert stats.quota_raised >= 1
    assert any("demo:" in line and "jobs/min" not in line for line in lines)


async def test_a_job_that_ended_blocked_is_resumed_once_no_block_holds_it(
    platform: Platform,
) -> None:
    driver = DemoDriver(platform, options(block_every=1000), report=lambda _: None)
    await driver.setup()
    principal = DemoDriver.principal(BLOCKED_ACCOUNT)
    # A block of the notify step's service stops the job at that step, whatever the timing.
    held = await platform.blocks.place(
        principal, kind="service", target="notify-log", reason="mail relay down"
    )
    order = {
        "id": "SO-9",
        "customer": {"email": "ada@example.com"},
        "items": [{"sku": "KB-1", "qty": 1, "price": "49.50"}],
    }
    job = await platform.jobs.create(principal, "order-intake", order)
    driver.follow(BLOCKED_ACCOUNT, job.id)
    assert (await platform.jobs.wait(principal, job.id, 20)).status == "blocked"

    await driver.tick()  # a block still holds it: left blocked, not resumed
    assert driver.stats.resumed == 0
    assert (await platform.jobs.get(principal, job.id, steps=False)).status == "blocked"

    await platform.blocks.lift(principal, held.id)
    await driver.drain()
    assert driver.stats.resumed == 1
    ended = await platform.jobs.get(principal, job.id)
    assert ended.status == "succeeded"
    assert ended.result is not None
    assert ended.result["order_id"] == "SO-9"


async def test_the_nodered_token_file_holds_an_engine_token_per_demo_account(
    db: Database, tmp_path: Path
) -> None:
    from fluxo_core.storage import AccountStore

    accounts = AccountStore(db)
    for account_id, name in DEMO_ACCOUNTS.items():
        await accounts.ensure_account(account_id, name)
    path = tmp_path / "home" / "demo-nodered.env"
    await write_nodered_tokens(accounts, path)
    assert path.stat().st_mode & 0o777 == 0o600
    lines = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert set(lines) == {"FLUXO_TOKEN_ACME", "FLUXO_TOKEN_GLOBEX"}
    for account_id in DEMO_ACCOUNTS:
        who = await accounts.authenticate(lines[f"FLUXO_TOKEN_{account_id.upper()}"])
        assert (who.account_id, who.engine) == (account_id, "nodered")


def test_enrich_customer_refuses_a_customer_on_credit_hold_for_good() -> None:
    from services import enrich_customer

    with pytest.raises(ServiceError, match=r"mallory@example\.com is on credit hold") as caught:
        enrich_customer.handler({"customer": {"email": " Mallory@Example.com"}})
    assert caught.value.retryable is False


async def test_the_same_seed_makes_the_same_inputs(platform: Platform) -> None:
    first = DemoDriver(platform, options(seed=3))
    second = DemoDriver(platform, options(seed=3))
    other = DemoDriver(platform, options(seed=4))
    examples = sorted(EXAMPLE_WORKFLOWS) * 5
    made = [first.sample_input(e) for e in examples]
    assert made == [second.sample_input(e) for e in examples]
    assert made != [other.sample_input(e) for e in examples]


async def test_a_database_with_other_accounts_is_refused_without_force(
    db: Database, tmp_path: Path
) -> None:
    from fluxo_core.storage import AccountStore

    accounts = AccountStore(db)
    config = config_for(tmp_path)
    await accounts.ensure_account(PLATFORM_ACCOUNT)
    for account_id, name in DEMO_ACCOUNTS.items():
        await accounts.ensure_account(account_id, name)
    await check_demo_allowed(config, accounts, force=False)  # only the demo's: allowed
    await accounts.ensure_account("initech", "Initech")
    with pytest.raises(ConfigError, match=r"initech.*--force"):
        await check_demo_allowed(config, accounts, force=False)
    await check_demo_allowed(config, accounts, force=True)


async def test_an_account_named_like_the_demos_but_not_made_by_it_is_not_the_demos(
    db: Database, tmp_path: Path
) -> None:
    from fluxo_core.storage import AccountStore

    accounts = AccountStore(db)
    await accounts.ensure_account("acme", "ACME Inc.")
    await UserStore(db, accounts).ensure("acme", "ada", Role.ACCOUNT_ADMIN)
    with pytest.raises(ConfigError, match="acme"):
        await check_demo_allowed(config_for(tmp_path), accounts, force=False)


async def test_production_is_refused_even_with_force(db: Database, tmp_path: Path) -> None:
    from fluxo_core.storage import AccountStore

    config = config_for(tmp_path, environment="production")
    with pytest.raises(ConfigError, match="FLUXO_ENV=production"):
        await check_demo_allowed(config, AccountStore(db), force=True)


def test_fluxo_env_accepts_the_known_environments_only() -> None:
    assert FluxoConfig.from_env({"FLUXO_HOME": "/tmp/x"}).environment == "development"
    assert FluxoConfig.from_env({"FLUXO_HOME": "/tmp/x", "FLUXO_ENV": "Production"}).production
    with pytest.raises(ConfigError, match="FLUXO_ENV='prod'"):
        FluxoConfig.from_env({"FLUXO_HOME": "/tmp/x", "FLUXO_ENV": "prod"})


@pytest.mark.parametrize("argv", [["demo", "--force"], ["up", "--demo", "--force"]])
def test_the_cli_refuses_production(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FLUXO_HOME", str(tmp_path))
    monkeypatch.delenv("FLUXO_DATABASE_URL", raising=False)
    monkeypatch.setenv("FLUXO_ENV", "production")
    assert main([*argv, "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "FLUXO_ENV=production: the demo never runs in production" in err
