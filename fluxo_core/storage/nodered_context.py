"""Node-RED context as the step engine keeps it: durable, per account and workflow.

One row per scope holds that scope's keys as a JSON object: ``flow`` and ``node:<node id>``
belong to one workflow of one account, ``global`` (workflow ``""``) to the account. Nothing
here crosses accounts: every statement names the account.

The step engine reads the scopes a node uses in the transaction that makes the node's call and
writes what the node changed in the transaction that takes its result (:meth:`write`), only if
the scope is still at the version it read; otherwise it runs the node again on the newer
contents. So concurrent messages change context as if one after the other, as on Node-RED.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fluxo_core.errors import PayloadTooLargeError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import nodered_context

__all__ = [
    "GLOBAL_WORKFLOW",
    "MAX_CONTEXT_BYTES",
    "ContextChange",
    "ContextScope",
    "NodeRedContextStore",
]

MAX_CONTEXT_BYTES = 256 * 1024
"""The most one scope (a workflow's flow context, a node's, an account's global) may hold, as
JSON: every call of a node that uses it carries it, and a node may use all three scopes within
one call packet (1 MiB by default, ``FLUXO_MAX_PACKET_BYTES``)."""

GLOBAL_WORKFLOW = ""
"""The ``workflow`` of global context rows: it belongs to the account, not to a workflow."""


@dataclass(frozen=True, slots=True)
class ContextScope:
    """One scope's keys and how many writes it has had (0: never written)."""

    data: dict[str, Any]
    version: int


_EMPTY = ContextScope({}, 0)


@dataclass(frozen=True, slots=True)
class ContextChange:
    """What one write does to one scope: top-level keys set and deleted, if the scope is still
    at version ``expected`` (None: whatever its version)."""

    workflow: str
    scope: str
    expected: int | None
    sets: Mapping[str, Any] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()


class NodeRedContextStore:
    def __init__(self, db: Database, *, max_bytes: int = MAX_CONTEXT_BYTES) -> None:
        self.db = db
        self.max_bytes = max_bytes

    def read(
        self, tx: Transaction, account_id: str, scopes: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], ContextScope]:
        """The ``(workflow, scope)`` scopes of ``account_id``; an unwritten one is empty."""
        wanted = sorted(set(scopes))
        if not wanted:
            return {}
        table = nodered_context
        query = sa.select(table.c.workflow, table.c.scope, table.c.data, table.c.version).where(
            table.c.account_id == account_id,
            sa.or_(*(sa.and_(table.c.workflow == w, table.c.scope == s) for w, s in wanted)),
        )
        found = {
            (row.workflow, row.scope): ContextScope(orjson.loads(row.data), int(row.version))
            for row in tx.execute(query)
        }
        return {key: found.get(key, _EMPTY) for key in wanted}

    def write(self, tx: Transaction, account_id: str, changes: Iterable[ContextChange]) -> bool:
        """Apply ``changes`` together, or none of them when a scope is no longer at the version
        its change expects (False). A change with nothing to set or delete only checks.

        The rows are locked in key order (PostgreSQL), so two writers never deadlock.

        Raises:
            PayloadTooLargeError: a scope would hold more than ``max_bytes`` of JSON.
        """
        table = nodered_context
        now = time.time()
        todo = sorted(changes, key=lambda c: (c.workflow, c.scope))
        if not todo:
            return True
        dialect = postgresql if tx.conn.dialect.name == "postgresql" else sqlite
        tx.execute(
            dialect.insert(table).on_conflict_do_nothing(),
            [
                {"account_id": account_id, "workflow": c.workflow, "scope": c.scope,
                 "data": "{}", "version": 0, "updated_at": now}
                for c in todo
            ],
        )  # fmt: skip
        rows = []
        for change in todo:
            where = (
                table.c.account_id == account_id,
                table.c.workflow == change.workflow,
                table.c.scope == change.scope,
            )
            query = sa.select(table.c.data, table.c.version).where(*where)
            if not self.db.is_sqlite:
                query = query.with_for_update()
            row = tx.execute(query).one()
            if change.expected is not None and int(row.version) != change.expected:
                return False
            rows.append((change, where, row))
        for change, where, row in rows:
            if not change.sets and not change.deletes:
                continue
            data = orjson.loads(row.data)
            data.update(change.sets)
            for key in change.deletes:
                data.pop(key, None)
            text = orjson.dumps(data)
            if len(text) > self.max_bytes:
                owner = f"workflow {change.workflow!r}" if change.workflow else "the account"
                raise PayloadTooLargeError(
                    f"Node-RED {change.scope.split(':')[0]} context of {owner} would hold "
                    f"{len(text)} bytes, over the limit of {self.max_bytes}; keep less in "
                    "context (store large data elsewhere and keep a reference to it)",
                    scope=change.scope,
                    workflow=change.workflow,
                    bytes=len(text),
                    limit=self.max_bytes,
                )
            tx.execute(
                sa.update(table)
                .where(*where)
                .values(data=text.decode(), version=int(row.version) + 1, updated_at=now)
            )
        return True

    async def get(self, account_id: str, workflow: str, scope: str) -> ContextScope:
        """One scope as it is now (what a test or an operator reads)."""
        found = await self.db.transact(lambda tx: self.read(tx, account_id, [(workflow, scope)]))
        return found[(workflow, scope)]
