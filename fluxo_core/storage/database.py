"""The database: engine set-up for SQLite and PostgreSQL, transactions, migrations and wake-ups.

One :class:`Database` per process. ``transaction()`` is the only way to write: it opens a write
transaction (``BEGIN IMMEDIATE`` on SQLite, so two writers never deadlock on a lock upgrade), collects
wake-up notifications and after-commit callbacks, and fires them only once the commit succeeded.

Wake-ups (``notify``/``wait``) let a consumer sleep until something it cares about was committed,
instead of polling: in-process through asyncio, across processes through PostgreSQL LISTEN/NOTIFY.
SQLite has no cross-process signal, so a waiter there also wakes after its timeout and looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from fluxo_core.errors import ConflictError, StorageError

__all__ = ["Database", "Subscription", "Transaction"]

log = logging.getLogger(__name__)

_PG_CHANNEL = "fluxo_wakeup"
_PG_PAYLOAD_LIMIT = 7900  # NOTIFY payloads must stay under 8000 bytes
_PG_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")
# Transaction-local settings, in one round trip (set_config(..., true) = SET LOCAL).
_PG_NOT_DURABLE = "set_config('synchronous_commit', 'off', true)"
_PG_KEYED = (
    "set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true)"
)
# How long closing waits for the work still running in database threads (a cancelled caller's
# transaction goes on there until it ends) before it closes the connections anyway.
_CLOSE_GRACE_S = 10.0
T = TypeVar("T")


class Transaction:
    """An open write transaction, used from inside a ``Database.transact`` function.

    Statements run synchronously on the transaction's connection (in a database thread); wake-ups
    and after-commit callbacks are collected and fired on the event loop once the commit succeeded.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._notify: set[str] = set()
        self._after_commit: list[Callable[[], Awaitable[None]]] = []

    def execute(self, statement: Any, params: Any = None) -> sa.CursorResult[Any]:
        return self.conn.execute(statement, params)

    def notify(self, *channels: str) -> None:
        """Wake the waiters of these channels once (and only if) this transaction commits."""
        self._notify.update(channels)

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` on the event loop after a successful commit (e.g. a broker ack)."""
        self._after_commit.append(callback)


class Subscription:
    """A standing interest in some channels. Subscribe BEFORE looking at the state, then wait:
    a notification that arrives in between is kept, so no wake-up is ever lost."""

    def __init__(self, hub: _WakeupHub, channels: Iterable[str]) -> None:
        self._hub = hub
        self.channels = tuple(channels)
        self._notified = False
        self._waiter: asyncio.Future[bool] | None = None

    def clear(self) -> None:
        self._notified = False

    def set(self) -> None:
        self._notified = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    async def wait(self, timeout: float) -> bool:
        """True if notified (since the last ``clear``), False after ``timeout`` seconds."""
        if self._notified:
            return True
        # A bare future and a timer: waking a waiter is on the hot path of every call, and
        # wait_for's extra task would cost more than the rest of the wake-up.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, _resolve, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self._hub.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class _WakeupHub:
    """In-process subscriptions per channel; a notification sets every subscription of it."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)

    def add(self, sub: Subscription) -> None:
        for name in sub.channels:
            self._subs[name].add(sub)

    def remove(self, sub: Subscription) -> None:
        for name in sub.channels:
            subs = self._subs.get(name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[name]

    def fire(self, channels: Iterable[str]) -> None:
        for channel in channels:
            for sub in self._subs.get(channel, ()):
                sub.set()

    def fire_all(self) -> None:
        for subs in list(self._subs.values()):
            for sub in subs:
                sub.set()


class Database:
    """A SQLite or PostgreSQL database used by one process.

    Work is handed over as a plain function: ``await db.transact(fn)`` runs ``fn(tx)`` inside one
    write transaction and ``await db.read(fn)`` runs ``fn(conn)`` on a read connection, each in a
    database thread. One thread hop per transaction instead of one per statement is what lets a
    Python runtime commit thousands of calls a second.

    Args:
        url: a SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``; an async driver
            name such as ``sqlite+aiosqlite`` is accepted and mapped to its sync twin).
        pool_size: connections (and database threads) kept for this process.
    """

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        parsed = make_url(_sync_url(url))
        self.url = parsed.render_as_string(hide_password=False)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                _private_sqlite_file(Path(parsed.database).expanduser())
            self.engine = sa.create_engine(
                parsed,
                poolclass=QueuePool,
                pool_size=pool_size + 3,
                max_overflow=0,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        elif self.dialect == "postgresql":
            self.engine = sa.create_engine(parsed, pool_size=pool_size, max_overflow=0)
            event.listen(self.engine, "connect", _pg_on_connect)
        else:
            raise StorageError(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")
        self._pool = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="fluxo-db")
        self._read_options: dict[str, Any] = (
            {"fluxo_read": True} if self.dialect == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
        )
        # SQLite has one writer at a time. Writers of this process queue on one thread instead of
        # colliding inside SQLite, whose busy handler would put the loser to sleep for milliseconds.
        self._write_pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluxo-db-write")
            if self.dialect == "sqlite"
            else self._pool
        )
        # Run inside every transaction that ends jobs, with it and their ids (see
        # JobStore): a component answers for what a job's end means to it in that same
        # transaction (a workflow service completes the call that started a child job).
        self.job_end_hooks: list[Callable[[Transaction, list[str]], None]] = []
        self._inline_conn: sa.Connection | None = None
        self._inline_reader: sa.Connection | None = None
        # Work handed to the database threads that has not ended yet (see _in_thread).
        self._in_flight: set[Future[Any]] = set()
        self._hub = _WakeupHub()
        self._listener: asyncio.Task[None] | None = None
        self._listener_ready = asyncio.Event()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def display_url(self) -> str:
        """The URL to show people and logs: its password replaced by ``***``."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def cross_process_wakeups(self) -> bool:
        """Whether a commit in another process wakes our waiters (PostgreSQL only)."""
        return self.dialect == "postgresql"

    # -- transactions -------------------------------------------------------------------------

    async def transact(
        self, fn: Callable[[Transaction], T], *, durable: bool = True, keyed: bool = False
    ) -> T:
        """Run ``fn(tx)`` in one write transaction; commit, then fire wake-ups and callbacks.

        ``durable=False`` lets PostgreSQL acknowledge the commit before its WAL is flushed. Only
        for changes whose loss in a database crash is harmless (a queue lease: the message is
        simply delivered again); never for state or effects.

        ``keyed=True``: every statement of ``fn`` finds its rows by key (ids, an ordered queue
        index), so PostgreSQL is told to use plain index scans. The hot tables (queue, jobs,
        steps, calls) churn faster than its statistics follow; without them it estimates an
        ``= ANY(:ids)`` of 75 ids at a thousand rows and plans sequential scans and hash joins
        over whole tables (measured: 8-30 ms per statement instead of under 1 ms, and growing
        with the tables).
        """
        outcome = self._inline_transact(fn) if self.dialect == "sqlite" else None
        if outcome is None:
            outcome = await self._in_thread(
                self._write_pool, lambda: self._transact_sync(fn, durable, keyed)
            )
        tx, result = outcome
        self._hub.fire(tx._notify)
        for callback in tx._after_commit:
            await callback()
        return result

    def _transact_sync(
        self, fn: Callable[[Transaction], T], durable: bool = True, keyed: bool = False
    ) -> tuple[Transaction, T]:
        with map_storage_errors(), self.engine.begin() as conn:
            settings = [s for s, on in ((_PG_NOT_DURABLE, not durable), (_PG_KEYED, keyed)) if on]
            if settings and self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT {', '.join(settings)}")
            tx = Transaction(conn)
            result = fn(tx)
            if tx._notify and self.dialect == "postgresql":
                for payload in _chunk_channels(tx._notify):
                    conn.execute(_PG_NOTIFY, {"channel": _PG_CHANNEL, "payload": payload})
        return tx, result

    def _inline_transact(self, fn: Callable[[Transaction], T]) -> tuple[Transaction, T] | None:
        """SQLite: run the transaction right here on the event loop, if the lock is free.

        A SQLite transaction costs tens of microseconds; handing it to a thread costs far more
        (the hop, and the GIL hand-over). So it runs inline on a connection that never waits for
        the lock: if another process holds it, BEGIN fails at once with "busy" (before ``fn`` ran)
        and the caller falls back to a database thread, which may wait without blocking the loop.
        """
        conn = self._inline_connection()
        try:
            with map_storage_errors(passthrough_busy=True), conn.begin():
                tx = Transaction(conn)
                result = fn(tx)
        except _SqliteBusyError:
            return None
        return tx, result

    def _inline_connection(self) -> sa.Connection:
        if self._inline_conn is None:
            conn = self.engine.connect()
            # On the driver connection itself: through SQLAlchemy it would open a transaction.
            driver = conn.connection.driver_connection
            if driver is None:
                raise StorageError("the SQLite connection closed while opening it")
            driver.execute("PRAGMA busy_timeout=0")
            self._inline_conn = conn
        return self._inline_conn

    def _inline_read_connection(self) -> sa.Connection:
        if self._inline_reader is None:
            self._inline_reader = self.engine.connect().execution_options(fluxo_read=True)
        return self._inline_reader

    async def _in_thread(self, executor: Executor, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a database thread, kept track of until it ends.

        A caller cancelled meanwhile (a trigger source the platform's exit cancels, a ``wait_for``
        that timed out) stops waiting, but the thread cannot be stopped: its transaction goes on
        and its connection is out of the pool until it ends. :meth:`close` waits for such work,
        so that every connection is back in the pool, and closed, when the database closes.
        """
        work = executor.submit(fn, *args)
        self._in_flight.add(work)
        work.add_done_callback(self._in_flight.discard)
        return await asyncio.wrap_future(work)

    async def ping(self) -> None:
        """One round trip to the database (a readiness check); raises StorageError if it fails.
        The caller bounds the wait: a frozen server never answers."""
        await self.read(lambda conn: conn.scalar(sa.text("SELECT 1")))

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn(conn)`` on a read-only snapshot (no write lock taken)."""
        if self.dialect == "sqlite":
            # WAL readers never wait for writers, so an inline read cannot stall the loop.
            reader = self._inline_read_connection()
            with map_storage_errors(), reader.begin():
                return fn(reader)
        return await self._in_thread(self._pool, self._read_sync, fn)

    def _read_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        with map_storage_errors(), self.engine.connect() as conn:
            # PostgreSQL: autocommit, so a read costs its statements and no BEGIN/ROLLBACK round
            # trips (each statement sees its own snapshot). SQLite: a deferred read transaction.
            conn.execution_options(**self._read_options)
            try:
                return fn(conn)
            finally:
                if conn.in_transaction():
                    conn.rollback()

    # -- wake-ups -----------------------------------------------------------------------------

    async def subscribe(self, channels: Iterable[str]) -> Subscription:
        """Start collecting wake-ups of ``channels`` (close the subscription when done)."""
        if self.dialect == "postgresql":
            await self._ensure_listener()
        sub = Subscription(self._hub, channels)
        self._hub.add(sub)
        return sub

    async def wait(self, channels: Iterable[str], timeout: float) -> bool:
        """Sleep until one of ``channels`` is notified or ``timeout`` passes. True if notified."""
        with await self.subscribe(channels) as sub:
            return await sub.wait(timeout)

    def notify_local(self, *channels: str) -> None:
        """Wake this process's waiters now (for state that is not in the database)."""
        self._hub.fire(channels)

    async def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener_ready.clear()
            self._listener = asyncio.create_task(self._listen(), name="fluxo-pg-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listener_ready.wait(), 5)

    async def _listen(self) -> None:
        import psycopg  # the driver itself: LISTEN needs a dedicated autocommit connection

        url = make_url(self.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {_PG_CHANNEL}")
                    self._listener_ready.set()
                    # Anything committed while we were not listening: wake everyone to re-check.
                    self._hub.fire_all()
                    delay = 0.1
                    async for note in conn.notifies():
                        self._hub.fire(note.payload.split("\n"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost connection must not end wake-ups for good
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- lifecycle ----------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic). Safe to run from several processes."""
        await self._in_thread(self._pool, self._migrate_sync)

    def _migrate_sync(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        with map_storage_errors(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Serialise concurrent starters; released at commit.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727375)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    async def close(self) -> None:
        """Stop listening, wait (up to ``_CLOSE_GRACE_S``) for the work still running in the
        database threads, then close every connection."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        running = [asyncio.wrap_future(work) for work in list(self._in_flight)]
        if running:
            _, late = await asyncio.wait(running, timeout=_CLOSE_GRACE_S)
            if late:  # a frozen server: its connections are left to the process's exit
                log.warning("closing the database with %d transaction(s) still running", len(late))
        for conn in (self._inline_conn, self._inline_reader):
            if conn is not None:
                conn.close()
        self._inline_conn = self._inline_reader = None
        self.engine.dispose()
        self._pool.shutdown(wait=False)
        self._write_pool.shutdown(wait=False)


def _private_sqlite_file(path: Path) -> None:
    """Create the SQLite file readable by this user only (0600), before SQLite opens it.

    SQLite gives its ``-wal`` and ``-shm`` files the permissions of the database file, so they
    are private too. A file (or folder) made looser by an older Fluxo is tightened.
    """
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                info = part.stat()
                if info.st_mode & 0o077 and info.st_uid == os.getuid():
                    part.chmod(0o600)
    except OSError as exc:
        raise StorageError(
            f"cannot create the SQLite database {path} ({exc.strerror}); check the folder's "
            "permissions or FLUXO_DATABASE_URL"
        ) from exc


def _sync_url(url: str) -> str:
    if url.startswith("sqlite+aiosqlite:"):
        return "sqlite:" + url[len("sqlite+aiosqlite:") :]
    if url.startswith("postgresql:"):
        return "postgresql+psycopg:" + url[len("postgresql:") :]
    return url


def _chunk_channels(channels: Iterable[str]) -> Iterable[str]:
    chunk: list[str] = []
    size = 0
    for name in sorted(channels):
        if chunk and size + len(name) + 1 > _PG_PAYLOAD_LIMIT:
            yield "\n".join(chunk)
            chunk, size = [], 0
        chunk.append(name)
        size += len(name) + 1
    if chunk:
        yield "\n".join(chunk)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Take transaction control from the driver so `begin` can say IMMEDIATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # 8 KiB pages instead of 4: the hot rows (calls with their request and result, steps with
    # their input and output) are large, and fewer, fuller pages mean fewer page splits and fewer
    # WAL frames per commit (measured on bench/step_engine.py: about +6% jobs/s; 16 KiB no
    # better). It only takes effect when the file is created, before WAL mode is set.
    cur.execute("PRAGMA page_size=8192")
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a crash of any process; only a power loss may drop the last commits.
    cur.execute("PRAGMA synchronous=NORMAL")
    # The WAL is copied into the database (and the file synced) whenever it passes this many
    # pages, by whichever commit crosses the mark. SQLite's default of 1,000 pages (4 MB) meant a
    # checkpoint every few hundred milliseconds under load, each rewriting the same hot queue and
    # job pages and syncing; 64 MB of WAL at most (8,192 pages of 8 KiB) measured about +20%
    # jobs/s on bench/step_engine.py. The file keeps that size between checkpoints.
    cur.execute("PRAGMA wal_autocheckpoint=8192")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _pg_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # psycopg prepares a statement after a few runs, and PostgreSQL then switches to a generic
    # plan, which cannot see how many ids an ``= ANY(:ids)`` array or an ``unnest()`` holds: it
    # picked sequential scans and hash joins over the whole jobs, steps and calls tables for
    # every engine batch (measured: 12-29 ms per statement instead of under 1 ms, and growing
    # with the tables). Custom plans cost a re-plan per execution and keep the index scans.
    with dbapi_conn.cursor() as cur:
        cur.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_conn.commit()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # Writers take the write lock up front: a deferred transaction that reads and then writes can
    # fail at once with SQLITE_BUSY when another writer got in between. Reads stay deferred.
    if conn.get_execution_options().get("fluxo_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class _SqliteBusyError(Exception):
    """SQLite's lock is held by another process (only raised where the caller asked for it)."""


@contextlib.contextmanager
def map_storage_errors(*, passthrough_busy: bool = False) -> Any:
    """Map driver errors to Fluxo errors at the storage boundary."""
    try:
        yield
    except sa_exc.OperationalError as exc:
        text = str(exc.orig).lower()
        if passthrough_busy and ("locked" in text or "busy" in text):
            raise _SqliteBusyError from exc
        raise StorageError(f"database unavailable: {exc.orig}", retryable=True) from exc
    except sa_exc.IntegrityError as exc:
        raise ConflictError(f"the change conflicts with stored data: {exc.orig}") from exc
    except sa_exc.InterfaceError as exc:
        raise StorageError(f"database unavailable: {exc.orig}", retryable=True) from exc
    except sa_exc.DBAPIError as exc:
        raise StorageError(f"database error: {exc.orig}") from exc
