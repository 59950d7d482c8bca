"""A living demo: two accounts running the examples, so a first look at Fluxo shows it at work.

``fluxo demo`` (or ``fluxo up --demo``) builds a :class:`DemoDriver` on the platform it serves and
calls :meth:`DemoDriver.setup` once, then :meth:`DemoDriver.tick` at a gentle rate. Everything
goes through the platform's own services, as a user would: accounts and users through the
account and user stores, workflows through :class:`~fluxo.control.jobs.JobService`, blocks
through :class:`~fluxo.control.blocks.BlockService`, the block's end through job control's
resume, the quota through the quota store. So what the demo shows is what Fluxo does:

- the examples (``examples/*.yaml``, and the Node-RED flow imported) applied in both accounts on
  every engine this Fluxo runs (an engine that refuses one, or cannot be reached, is reported
  and left out);
- a job per tick, alternately for each account, with inputs drawn from a seeded generator: most
  succeed, some fail for a real cause (an order of a customer on credit hold, which the
  ``enrich-customer`` service refuses), a few are refused when created (an input the workflow's
  schema rejects);
- the second account blocked for a while, periodically (its jobs are refused or stop
  ``blocked``), then the block lifted and its blocked jobs resumed;
- a daily calls quota on the second account that reaches 80 % (an event), and is then
  raised by its admin before it refuses anything.

:func:`check_demo_allowed` refuses a production installation and, without ``force``, a
database with accounts that are not the demo's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxo.control.auth import Auth
from fluxo.control.platform import Platform
from fluxo.control.quotas import quota_answer
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import AdmissionDeniedError, ConfigError, FluxoError, ValidationError
from fluxo_core.ir import DEFAULT_ENGINE, load_workflows_yaml, workflow_document
from fluxo_core.storage import Principal
from fluxo_core.storage.accounts import PLATFORM_ACCOUNT, AccountStore, Role
from fluxo_core.storage.quotas import QuotaSpec
from translators import NodeRedOptions, from_nodered

__all__ = [
    "DEMO_ACCOUNTS",
    "DEMO_USER",
    "PASSWORD_ENV",
    "DemoDriver",
    "DemoOptions",
    "DemoStats",
    "check_demo_allowed",
    "write_nodered_tokens",
]

log = logging.getLogger("fluxo.demo")

# The demo's accounts and the names that mark them as the demo's (a database whose accounts
# are only these and the platform's own holds nothing but the demo).
DEMO_ACCOUNTS: dict[str, str] = {"acme": "Acme Corp (Fluxo demo)", "globex": "Globex (Fluxo demo)"}
DEMO_USER = "admin"
PASSWORD_ENV = "FLUXO_DEMO_PASSWORD"
# The account that gets blocked now and then, and carries the quota.
BLOCKED_ACCOUNT = "globex"
QUOTA_NAME = "demo-daily-calls"
NODERED_EXAMPLE = "order-alerts.nodered.json"
# The quota's first threshold (quota events at 80 and 100 %): the demo raises it once there.
WARNING_PERCENT = 80

_FINAL = frozenset({"succeeded", "failed", "cancelled"})
# How many created jobs the driver follows to their end (older ones it stops watching).
_FOLLOWED = 500

# Who the customers of the generated orders are: the demo customer table's, an unknown one,
# and Mallory, whose credit hold makes enrich-customer refuse her orders.
_CUSTOMERS = (
    ("ada@example.com", "Ada Lovelace"),
    ("grace@example.com", "Grace Hopper"),
    ("alan@example.com", "Alan Turing"),
    ("nia@startup.example", "Nia Lead"),
)
_HELD = ("mallory@example.com", "Mallory Moody")
_SKUS = (("KB-1", "49.50"), ("MS-02", "25.00"), ("MON-27", "249.00"), ("DESK-XL", "650.00"))


@dataclass(frozen=True)
class DemoOptions:
    """How the demo runs.

    Attributes:
        seed: the generator's seed: the same seed makes the same jobs in the same order.
        interval_s: seconds between two jobs (the CLI's rate).
        block_every: ticks between two blocks of the blocked account.
        block_for: ticks a block lasts.
        failure_rate: share of orders and leads of the customer on credit hold (they fail).
        invalid_rate: share of submissions whose input the workflow's schema refuses.
        quota_calls: the daily calls quota of the blocked account (80 % soon gives an event).
        examples: the folder of the examples.
        nodered_token_file: where to write the demo accounts' Node-RED engine tokens (when a
            Node-RED engine runs), for ``fluxo nodered start --token-env-file``.
    """

    seed: int = 0
    interval_s: float = 2.0
    block_every: int = 90
    block_for: int = 20
    failure_rate: float = 0.12
    invalid_rate: float = 0.04
    quota_calls: int = 400
    examples: Path = Path("examples")
    nodered_token_file: Path | None = None


@dataclass
class DemoStats:
    """What the demo did so far (its progress lines print these)."""

    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    submitted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    blocks_placed: int = 0
    blocks_lifted: int = 0
    resumed: int = 0
    quota_raised: int = 0

    def line(self, jobs_per_minute: float) -> str:
        ended = ", ".join(f"{n} {status}" for status, n in sorted(self.outcomes.items()))
        refused = ", ".join(f"{n} {why}" for why, n in sorted(self.refused.items()))
        return (
            f"demo: {self.submitted} jobs created ({ended or 'none ended yet'}); "
            f"refused: {refused or 'none'}; blocks placed {self.blocks_placed}, lifted "
            f"{self.blocks_lifted}, jobs resumed {self.resumed}; {jobs_per_minute:.1f} jobs/min"
        )


@dataclass(frozen=True)
class DemoCredential:
    """An account's admin user; ``password`` is None when it was set by an earlier run."""

    account_id: str
    user_id: str
    password: str | None


async def check_demo_allowed(config: FluxoConfig, accounts: AccountStore, *, force: bool) -> None:
    """Refuse to run the demo where it would mix with real work.

    Raises:
        ConfigError: ``FLUXO_ENV=production`` (whatever ``force`` says), or, without
            ``force``, the database has accounts besides the platform's and the demo's.
    """
    if config.production:
        raise ConfigError(
            "FLUXO_ENV=production: the demo never runs in production (it creates accounts, "
            "jobs, blocks and quotas); run it on its own database, e.g. "
            "FLUXO_HOME=/tmp/fluxo-demo fluxo demo",
            setting="FLUXO_ENV",
        )
    others = [
        row.id
        for row in await accounts.list_accounts()
        if row.id != PLATFORM_ACCOUNT and DEMO_ACCOUNTS.get(row.id) != row.name
    ]
    if others and not force:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ConfigError(
            f"the database holds accounts that are not the demo's ({shown}); the demo would "
            "add its jobs, blocks and quotas beside them. Run it on its own database "
            "(FLUXO_HOME=/tmp/fluxo-demo fluxo demo), or pass --force",
            setting="--force",
        )


async def write_nodered_tokens(accounts: AccountStore, path: Path) -> None:
    """Issue each demo account a Node-RED engine token and write them as ``KEY=VALUE`` lines
    (``FLUXO_TOKEN_ACME=...``: the variable its flows read) to ``path``, private to this user."""
    options = NodeRedOptions()
    lines = []
    for account_id in DEMO_ACCOUNTS:
        token = await accounts.issue_token(
            account_id, "node-red", "demo: Node-RED engine", engine="nodered"
        )
        lines.append(f"{options.token_envs(account_id)[0]}={token}\n")

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
        path.chmod(0o600)  # a file that existed keeps its mode through O_CREAT

    await asyncio.to_thread(write)


class DemoDriver:
    """Sets the demo up on ``platform`` and makes one job per :meth:`tick`.

    ``report``: where progress lines go (the CLI prints them).
    """

    def __init__(
        self,
        platform: Platform,
        options: DemoOptions,
        *,
        report: Callable[[str], None] = log.info,
    ) -> None:
        self.platform = platform
        self.options = options
        self.report = report
        self.stats = DemoStats()
        self._rng = random.Random(options.seed)
        self._ticks = 0
        # Applied workflows (the same in each account): name -> the example it runs.
        self._workflows: dict[str, str] = {}
        self._followed: dict[str, str] = {}  # job id -> account
        self._block: str | None = None  # the block in force, placed by the demo
        self._block_until = 0
        self._admin = Principal(PLATFORM_ACCOUNT, "fluxo-demo", role=Role.PLATFORM_ADMIN)

    @property
    def admin(self) -> Principal:
        """The platform admin the demo places and lifts account blocks as."""
        return self._admin

    @property
    def workflows(self) -> Sequence[str]:
        return tuple(self._workflows)

    @staticmethod
    def principal(account_id: str) -> Principal:
        return Principal(account_id, DEMO_USER, role=Role.ACCOUNT_ADMIN)

    # -- set-up ----------------------------------------------------------------------------

    async def setup(self) -> list[DemoCredential]:
        """Accounts, their admin users, the examples on every engine, the quota."""
        credentials = [await self._account(a, name) for a, name in DEMO_ACCOUNTS.items()]
        engines = {e.name for e in self.platform.registry.engines()}
        if "nodered" in engines and self.options.nodered_token_file is not None:
            path = self.options.nodered_token_file
            await write_nodered_tokens(self.platform.accounts, path)
            self.report(
                f"demo: the demo accounts' Node-RED tokens are in {path}; (re)start Node-RED "
                f"with them: fluxo nodered start --token-env-file {path}"
            )
        for document in await asyncio.to_thread(self._example_documents):
            await self._apply_everywhere(document)
        await self.platform.quotas.set(
            BLOCKED_ACCOUNT,
            QUOTA_NAME,
            QuotaSpec(kind="calls", limit=self.options.quota_calls, period="day"),
        )
        self.report(
            f"demo: quota {QUOTA_NAME} of {BLOCKED_ACCOUNT}: {self.options.quota_calls} "
            "calls a day (an event at 80 %)"
        )
        return credentials

    async def _account(self, account_id: str, name: str) -> DemoCredential:
        platform = self.platform
        await platform.accounts.ensure_account(account_id, name)
        auth = Auth(platform.db, platform.accounts)
        chosen = os.environ.get(PASSWORD_ENV)
        found = await auth.users.find(account_id, DEMO_USER)
        if found is not None and found.has_password and not chosen:
            return DemoCredential(account_id, DEMO_USER, None)  # shown by the run that set it
        password = chosen or secrets.token_urlsafe(12)
        hashed = await auth.hash_password(password)
        if found is None:
            await auth.users.add(account_id, DEMO_USER, Role.ACCOUNT_ADMIN, hashed)
        else:
            await auth.users.set_password(account_id, DEMO_USER, hashed)
        return DemoCredential(account_id, DEMO_USER, password)

    def _example_documents(self) -> list[dict[str, Any]]:
        """Each example as a document, for the step engine; the Node-RED flow imported."""
        folder = self.options.examples
        documents: list[dict[str, Any]] = []
        for path in sorted(folder.glob("*.yaml")):
            for workflow in load_workflows_yaml(path.read_text(encoding="utf-8")):
                documents.append(workflow_document(workflow))
        flow = folder / NODERED_EXAMPLE
        if flow.exists():
            imported = from_nodered(flow.read_text(encoding="utf-8"), name="order-alerts")
            documents.extend(workflow_document(w) for w in imported.workflows)
        if not documents:
            raise ConfigError(
                f"no examples in {folder}: run the demo from Fluxo's checkout, or give the "
                "examples folder (--examples)",
                setting="--examples",
            )
        return documents

    async def _apply_everywhere(self, document: dict[str, Any]) -> None:
        base = document["metadata"]["name"]
        for engine in (e.name for e in self.platform.registry.engines()):
            # The step engine's keeps the example's name; other engines' carry theirs.
            name = base if engine == DEFAULT_ENGINE else f"{base}-{engine}"
            copy = {
                **document,
                "metadata": {**document["metadata"], "name": name},
                "spec": {**document["spec"], "engine": engine},
            }
            try:
                for account_id in DEMO_ACCOUNTS:
                    await self.platform.jobs.apply(copy, self.principal(account_id))
            except FluxoError as exc:
                self.stats.skipped.append(f"{base} on {engine}")
                self.report(f"demo: skipped {base} on {engine}: {exc}")
                continue
            self._workflows[name] = base
            self.stats.applied.append(f"{base} on {engine}")
            self.report(f"demo: applied {name} ({base} on {engine}) in {', '.join(DEMO_ACCOUNTS)}")

    # -- the stream ------------------------------------------------------------------------

    async def tick(self) -> None:
        """One step of the demo: the block's cycle, then one job, then follow the jobs."""
        self._ticks += 1
        await self._cycle_block()
        if self._workflows:
            account_id = list(DEMO_ACCOUNTS)[self._ticks % len(DEMO_ACCOUNTS)]
            workflow = self._rng.choice(list(self._workflows))
            await self._submit(account_id, workflow)
        await self._follow()
        await self._watch_quota()

    async def run(self, stop: asyncio.Event, *, progress_every: int = 30) -> None:
        """Tick every ``interval_s`` until ``stop``, reporting progress now and then."""
        clock = self.platform.clock
        window: list[tuple[float, int]] = [(clock.monotonic(), 0)]
        while not stop.is_set():
            try:
                await self.tick()
            except FluxoError as exc:  # a bad moment of the database: the next tick tries again
                self.report(f"demo: tick {self._ticks} failed: {exc}")
            if self._ticks % progress_every == 0:
                window = [*window[-9:], (clock.monotonic(), self.stats.submitted)]
                (start, first), (now, last) = window[0], window[-1]
                per_minute = (last - first) * 60 / (now - start) if now > start else 0.0
                self.report(self.stats.line(per_minute))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.interval_s)

    async def _submit(self, account_id: str, workflow: str) -> None:
        payload = self.sample_input(self._workflows[workflow])
        try:
            job = await self.platform.jobs.create(self.principal(account_id), workflow, payload)
        except ValidationError as exc:
            self.stats.refused["invalid input"] += 1
            log.debug("demo: %s refused: %s", workflow, exc)
            return
        except AdmissionDeniedError as exc:
            self.stats.refused[exc.code] += 1
            return
        self.stats.submitted += 1
        self.follow(account_id, job.id)

    def follow(self, account_id: str, job_id: str) -> None:
        """Watch a job to its end: count how it ended, resume it if a block stopped it."""
        self._followed[job_id] = account_id
        if len(self._followed) > _FOLLOWED:
            del self._followed[next(iter(self._followed))]

    async def _follow(self) -> None:
        for job_id, account_id in list(self._followed.items()):
            job = await self.platform.jobs.get(self.principal(account_id), job_id, steps=False)
            if job.status in _FINAL:
                self.stats.outcomes[job.status] += 1
                del self._followed[job_id]
            elif job.status == "blocked" and self._block is None:
                try:
                    await self.platform.job_control.resume(self.principal(account_id), job_id)
                except FluxoError as exc:  # held by a block someone else placed: left as it is
                    log.debug("demo: job %s not resumed: %s", job_id, exc)
                    continue
                self.stats.resumed += 1

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every followed job has ended, resuming and watching the quota as ticks do
        (tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._followed and loop.time() < deadline:
            await self._follow()
            await self._watch_quota()
            if self._followed:
                await asyncio.sleep(0.05)

    async def _cycle_block(self) -> None:
        """Block the account every ``block_every`` ticks for ``block_for`` ticks."""
        if self._block is None and self._ticks % self.options.block_every == 0:
            record = await self.platform.blocks.place(
                self._admin,
                kind="account",
                account=BLOCKED_ACCOUNT,
                reason="demo: a payment is overdue (lifted again in a moment)",
            )
            self._block = record.id
            self._block_until = self._ticks + self.options.block_for
            self.stats.blocks_placed += 1
            self.report(f"demo: blocked account {BLOCKED_ACCOUNT} ({record.id})")
        elif self._block is not None and self._ticks >= self._block_until:
            await self.platform.blocks.lift(self._admin, self._block)
            self.report(f"demo: lifted the block of {BLOCKED_ACCOUNT}; resuming its blocked jobs")
            self._block = None
            self.stats.blocks_lifted += 1

    async def _watch_quota(self) -> None:
        """The account's admin raises its limit once it warned at 80 %, as a customer would,
        so the demo shows the warning, and its jobs do not fail for the quota."""
        now = self.platform.clock.time()
        quota = await quota_answer(self.platform.quotas, BLOCKED_ACCOUNT, QUOTA_NAME, now)
        used, limit = quota["used"], quota["limit"]
        if used is None or used * 100 < limit * WARNING_PERCENT:
            return
        spec = QuotaSpec(kind="calls", limit=limit * 2, period="day")
        await self.platform.quotas.set(BLOCKED_ACCOUNT, QUOTA_NAME, spec)
        self.stats.quota_raised += 1
        self.report(
            f"demo: {BLOCKED_ACCOUNT} used {used} of its {limit} calls today; its admin raised "
            f"the quota to {spec.limit}"
        )

    # -- inputs ----------------------------------------------------------------------------

    def _customer(self) -> tuple[str, str]:
        if self._rng.random() < self.options.failure_rate:
            return _HELD
        return self._rng.choice(_CUSTOMERS)

    def sample_input(self, example: str) -> dict[str, Any]:
        """The next input for a job of ``example``, drawn from the seeded generator."""
        rng = self._rng
        number = rng.randrange(1000, 99999)
        if example == "lead-enrichment":
            leads = [
                {"email": email, "name": name}
                for email, name in (self._customer() for _ in range(rng.randint(1, 4)))
            ]
            return {"campaign": rng.choice(["spring-webinar", "black-friday"]), "leads": leads}
        if example == "invoice-reminder":
            invoices = []
            for i in range(rng.randint(1, 3)):
                invoice: dict[str, Any] = {
                    "number": f"INV-{number}-{i}",
                    "amount": f"{rng.randint(20, 1500)}.00",
                    "currency": "EUR",
                    "days_overdue": rng.randint(1, 60),
                }
                # A failed look-up (Mallory's hold, or no contact) is handled: on_error continue.
                if rng.random() > 0.1:
                    invoice["customer"] = {"email": self._customer()[0]}
                invoices.append(invoice)
            return {"invoices": invoices}
        email, name = self._customer()
        items = [
            {"sku": sku, "qty": rng.randint(1, 3), "price": price}
            for sku, price in rng.sample(_SKUS, rng.randint(1, 3))
        ]
        if rng.random() < self.options.invalid_rate:
            items[0]["qty"] = 0  # the schema's minimum is 1: refused when the job is created
        if example == "order-alerts":
            return {"id": f"WEB-{number}", "customer": email, "items": items}
        return {"id": f"SO-{number}", "customer": {"email": email, "name": name}, "items": items}
