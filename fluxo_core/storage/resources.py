"""Declarative resources: each account's documents (kind, name, spec) and their status.

A write is one transaction that reads the stored row and changes it only if the writer saw the
current version: an apply that names a ``resourceVersion`` other than the stored one is refused
with :class:`~fluxo_core.errors.ConflictError`, never applied over a change it did not see. The
update itself is a compare-and-set on ``resource_version`` (``UPDATE ... WHERE
resource_version = :read``), so two writers that read the same version cannot both win, on
SQLite (one writer at a time) and on PostgreSQL (the second one's update matches no row once the
first committed). Two creates of the same name meet at the primary key.

``resource_version`` grows by one on every write (spec, labels or status); ``generation`` only
when the spec changes, and a status condition's ``observedGeneration`` says which spec it is
about. Rows are :class:`ResourceRow`, mapped in one place (:func:`_row_of`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import ConflictError, NotFoundError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import resources

__all__ = ["API_VERSION", "ApplyOutcome", "ResourceRow", "ResourceStore", "ResourceWrite"]

API_VERSION = "fluxo.dev/v1"
ApplyOutcome = Literal["created", "configured", "unchanged"]


@dataclass(frozen=True)
class ResourceRow:
    """A stored resource. ``status`` is the platform's (``{"conditions": [...]}``)."""

    account_id: str
    kind: str
    name: str
    uid: str
    api_version: str
    labels: dict[str, str]
    spec: dict[str, Any]
    status: dict[str, Any]
    resource_version: int
    generation: int
    created_at: float
    updated_at: float

    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


@dataclass(frozen=True)
class ResourceWrite:
    """What an apply writes: the spec and labels, and the version the writer read (or None)."""

    kind: str
    name: str
    spec: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    resource_version: str | None = None


class ResourceStore:
    """Every account's resources (the ``resources`` table)."""

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def apply(
        self, account_id: str, write: ResourceWrite
    ) -> tuple[ResourceRow, ApplyOutcome]:
        """Create or update ``write`` in one transaction; returns the stored row and what
        happened. The same spec and labels again is ``unchanged`` and writes nothing.

        Raises:
            ConflictError: ``write.resource_version`` is not the stored one (or the resource is
                gone), or another writer changed it first; the message says to get it again.
        """
        spec_text = _text(write.spec)
        labels_text = _text(write.labels)
        now = self.clock.time()

        def run(tx: Transaction) -> tuple[ResourceRow, ApplyOutcome]:
            stored = _select_row(tx.conn, account_id, write.kind, write.name)
            if write.resource_version is not None:
                _check_version(write, stored)
            if stored is None:
                values = {
                    "account_id": account_id,
                    "kind": write.kind,
                    "name": write.name,
                    "uid": str(uuid.uuid4()),
                    "api_version": API_VERSION,
                    "labels": labels_text,
                    "spec": spec_text,
                    "status": "{}",
                    "resource_version": 1,
                    "generation": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                tx.execute(sa.insert(resources).values(**values))
                return _row_of(values), "created"
            same_spec = json.loads(stored.spec) == write.spec
            if same_spec and json.loads(stored.labels) == write.labels:
                return _row_of(stored._mapping), "unchanged"
            changes = {
                "labels": labels_text,
                "spec": spec_text,
                "resource_version": stored.resource_version + 1,
                "generation": stored.generation + (0 if same_spec else 1),
                "updated_at": now,
            }
            _compare_and_set(tx, stored, changes, write.resource_version)
            return _row_of({**stored._mapping, **changes}), "configured"

        return await self.db.transact(run)

    async def set_status(self, row: ResourceRow, status: dict[str, Any]) -> ResourceRow:
        """Write ``status`` (a controller's), if the resource is still the one ``row`` read.

        A status is about one generation of the spec: if the spec changed meanwhile (a newer
        apply), this status is stale and is not written; the newer apply's reconcile writes its
        own. Returns the stored row (with the new status, or as the newer writer left it).
        """
        text = _text(status)
        now = self.clock.time()

        def run(tx: Transaction) -> ResourceRow:
            stored = _select_row(tx.conn, row.account_id, row.kind, row.name)
            if stored is None:
                raise _not_found(row.account_id, row.kind, row.name)
            if stored.uid != row.uid or stored.generation != row.generation:
                return _row_of(stored._mapping)
            if json.loads(stored.status) == status:
                return _row_of(stored._mapping)
            changes = {
                "status": text,
                "resource_version": stored.resource_version + 1,
                "updated_at": now,
            }
            tx.execute(
                sa.update(resources)
                .where(*_key(row.account_id, row.kind, row.name))
                .values(**changes)
            )
            return _row_of({**stored._mapping, **changes})

        return await self.db.transact(run)

    async def get(self, account_id: str, kind: str, name: str) -> ResourceRow:
        """One resource.

        Raises:
            NotFoundError: none of that kind and name in the account.
        """
        query = sa.select(resources).where(*_key(account_id, kind, name))
        found = await self.db.read(lambda conn: conn.execute(query).first())
        if found is None:
            raise _not_found(account_id, kind, name)
        return _row_of(found._mapping)

    async def list(self, kind: str, account_id: str | None) -> list[ResourceRow]:
        """The resources of ``kind`` in the account (every account's when None), by name."""
        query = sa.select(resources).where(resources.c.kind == kind)
        if account_id is not None:
            query = query.where(resources.c.account_id == account_id)
        query = query.order_by(resources.c.name, resources.c.account_id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_row_of(r._mapping) for r in rows]

    async def delete(self, account_id: str, kind: str, name: str) -> ResourceRow:
        """Delete one resource; returns it as it was.

        Raises:
            NotFoundError: none of that kind and name in the account.
        """

        def run(tx: Transaction) -> ResourceRow:
            stored = _select_row(tx.conn, account_id, kind, name)
            if stored is None:
                raise _not_found(account_id, kind, name)
            tx.execute(sa.delete(resources).where(*_key(account_id, kind, name)))
            return _row_of(stored._mapping)

        return await self.db.transact(run)


def _key(account_id: str, kind: str, name: str) -> tuple[Any, ...]:
    return (
        resources.c.account_id == account_id,
        resources.c.kind == kind,
        resources.c.name == name,
    )


def _select_row(conn: sa.Connection, account_id: str, kind: str, name: str) -> Any:
    query = sa.select(resources).where(*_key(account_id, kind, name))
    if conn.dialect.name == "postgresql":
        # The row stays ours until commit: a concurrent writer waits here, then reads the
        # version this transaction wrote (and is refused if it read an older one).
        query = query.with_for_update()
    return conn.execute(query).first()


def _check_version(write: ResourceWrite, stored: Any) -> None:
    ref = f"{write.kind.lower()}/{write.name}"
    fix = (
        f"get it again (fluxo get {write.kind.lower()} {write.name} -o yaml), make the change "
        "there and apply that"
    )
    if stored is None:
        raise ConflictError(
            f"{ref} was applied with metadata.resourceVersion {write.resource_version} but it "
            f"does not exist (deleted since it was read); remove metadata.resourceVersion to "
            "create it again",
            kind=write.kind,
            name=write.name,
            resource_version=write.resource_version,
        )
    current = str(stored.resource_version)
    if write.resource_version != current:
        raise ConflictError(
            f"{ref} was changed since it was read: the document has metadata.resourceVersion "
            f"{write.resource_version} but the stored one is {current}; {fix}",
            kind=write.kind,
            name=write.name,
            resource_version=write.resource_version,
            stored_version=current,
        )


def _compare_and_set(
    tx: Transaction, stored: Any, changes: dict[str, Any], read_version: str | None
) -> None:
    result = tx.execute(
        sa.update(resources)
        .where(
            *_key(stored.account_id, stored.kind, stored.name),
            resources.c.resource_version == stored.resource_version,
        )
        .values(**changes)
    )
    if result.rowcount != 1:  # pragma: no cover - the row lock or SQLite's one writer prevent it
        raise ConflictError(
            f"{stored.kind.lower()}/{stored.name} was changed by another writer while this apply "
            "ran; get it again and apply again",
            kind=stored.kind,
            name=stored.name,
            resource_version=read_version,
        )


def _text(value: Any) -> str:
    # In the order given (a document reads back as it was written); compared as parsed JSON.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _not_found(account_id: str, kind: str, name: str) -> NotFoundError:
    return NotFoundError(
        f"no {kind} {name!r} in account {account_id!r}; apply it first (fluxo apply -f FILE)",
        kind=kind,
        name=name,
    )


def _row_of(r: Any) -> ResourceRow:
    """The one mapping from a ``resources`` row (or the values written) to a ResourceRow."""
    return ResourceRow(
        account_id=r["account_id"],
        kind=r["kind"],
        name=r["name"],
        uid=r["uid"],
        api_version=r["api_version"],
        labels=json.loads(r["labels"]),
        spec=json.loads(r["spec"]),
        status=json.loads(r["status"]),
        resource_version=int(r["resource_version"]),
        generation=int(r["generation"]),
        created_at=float(r["created_at"]),
        updated_at=float(r["updated_at"]),
    )
