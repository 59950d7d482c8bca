"""The files of Node-RED's ``file``/``file in`` nodes on the step engine: a virtual filesystem per
account, in the database.

A hosted platform never lets a flow touch the server's filesystem: a flow's ``/tmp/hello.txt``
is a row of its account here, nothing more. Paths are absolute and normalized
(:func:`nodered_semantics.files.virtual_path`); directories are implicit (a path is a
directory when files lie under it). Every statement names the account, so nothing crosses
accounts.

The step engine reads the file a node names in the transaction that makes the node's call
(:meth:`NodeRedFileStore.read`) and applies what a ``file`` node wrote in the transaction that
takes the call's result (:meth:`NodeRedFileStore.apply`), so a call delivered twice writes
once and a failed step writes nothing. A delete names the version it read; when the file
changed since, nothing is applied and the node runs again on the newer state.

Bounded: a file holds at most ``max_file_bytes`` (its contents travel in the calls of the nodes
that read it), an account at most ``max_account_bytes`` in at most ``max_account_files`` files;
a write past a bound fails its step with an error naming the file, the limit and the fix.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fluxo_core.errors import PayloadTooLargeError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import nodered_files

__all__ = [
    "MAX_ACCOUNT_FILES",
    "MAX_ACCOUNT_FILE_BYTES",
    "MAX_FILE_BYTES",
    "FileState",
    "NodeRedFileStore",
]

MAX_FILE_BYTES = 256 * 1024
"""The most one file may hold: a ``file in`` node's call carries the whole file (as base64),
within one call packet (1 MiB by default, ``FLUXO_MAX_PACKET_BYTES``)."""
MAX_ACCOUNT_FILE_BYTES = 16 * 1024 * 1024
MAX_ACCOUNT_FILES = 10_000


@dataclass(frozen=True, slots=True)
class FileState:
    """A path as read: ``kind`` is ``file`` (``data`` holds it), ``dir`` (files lie under it),
    ``notdir`` (a file lies on its way: nothing can be under it) or ``none``; ``version``
    counts the writes of the file (0: none now)."""

    kind: str
    version: int
    data: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "version": self.version}
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        return out


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _under(path: str) -> Any:
    """The paths below directory ``path`` ("0" is the character after "/")."""
    table = nodered_files
    if path == "/":
        return table.c.path > "/"
    return sa.and_(table.c.path > path + "/", table.c.path < path + "0")


class NodeRedFileStore:
    def __init__(
        self,
        db: Database,
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_account_bytes: int = MAX_ACCOUNT_FILE_BYTES,
        max_account_files: int = MAX_ACCOUNT_FILES,
    ) -> None:
        self.db = db
        self.max_file_bytes = max_file_bytes
        self.max_account_bytes = max_account_bytes
        self.max_account_files = max_account_files

    def read(
        self, tx: Transaction, account_id: str, paths: Iterable[str], *, contents: bool = True
    ) -> dict[str, FileState]:
        """The state of each path of ``account_id`` (``contents``: with the files' data)."""
        table = nodered_files
        found: dict[str, FileState] = {}
        for path in sorted(set(paths)):
            if path == "/":
                found[path] = FileState("dir", 0)
                continue
            columns = [table.c.version] + ([table.c.data] if contents else [])
            row = tx.execute(
                sa.select(*columns).where(table.c.account_id == account_id, table.c.path == path)
            ).first()
            if row is not None:
                data = bytes(row.data) if contents else None
                found[path] = FileState("file", int(row.version), data)
                continue
            below = tx.execute(
                sa.select(table.c.path)
                .where(table.c.account_id == account_id, _under(path))
                .limit(1)
            ).first()
            if below is not None:
                found[path] = FileState("dir", 0)
                continue
            above = _ancestors(path)
            blocked = (
                tx.execute(
                    sa.select(table.c.path)
                    .where(table.c.account_id == account_id, table.c.path.in_(above))
                    .limit(1)
                ).first()
                if above
                else None
            )
            found[path] = FileState("notdir" if blocked is not None else "none", 0)
        return found

    def apply(self, tx: Transaction, account_id: str, ops: Iterable[Mapping[str, Any]]) -> bool:
        """Apply ``ops`` (``{path, op: write|append|delete, data?: bytes, expected?}``) in
        order, or none of them when a path is no longer at the version an op expects (False).

        Raises:
            PayloadTooLargeError: a file or the account would hold more than its bound.
        """
        table = nodered_files
        todo = list(ops)
        if not todo:
            return True
        now = time.time()
        usage = tx.execute(
            sa.select(sa.func.coalesce(sa.func.sum(table.c.size), 0), sa.func.count()).where(
                table.c.account_id == account_id
            )
        ).one()
        total, count = int(usage[0]), int(usage[-1])
        dialect = postgresql if tx.conn.dialect.name == "postgresql" else sqlite
        for op in todo:
            path, kind = str(op["path"]), op["op"]
            where = (table.c.account_id == account_id, table.c.path == path)
            if kind != "delete":
                # A row to lock even for a new file (version 0 until written), so two
                # transactions appending to a new file do one after the other (PostgreSQL).
                tx.execute(
                    dialect.insert(table)
                    .values(account_id=account_id, path=path, data=b"", size=0, version=0,
                            updated_at=now)
                    .on_conflict_do_nothing()
                )  # fmt: skip
            query = sa.select(table.c.data, table.c.size, table.c.version).where(*where)
            if not self.db.is_sqlite:
                query = query.with_for_update()
            row = tx.execute(query).first()
            version = int(row.version) if row is not None else 0
            expected = op.get("expected")
            if expected is not None and int(expected) != version:
                if kind != "delete" and version == 0:
                    tx.execute(sa.delete(table).where(*where))
                return False
            if kind == "delete":
                if row is not None:
                    tx.execute(sa.delete(table).where(*where))
                    total -= int(row.size)
                    count -= 1
                continue
            new = version == 0
            data: bytes = op["data"]
            if kind == "append" and not new and row is not None:
                data = bytes(row.data) + data
            old = 0 if new or row is None else int(row.size)
            try:
                self._check(path, len(data), total - old + len(data), count + new)
            except PayloadTooLargeError:
                if new:  # no empty file left behind by a refused write
                    tx.execute(sa.delete(table).where(*where))
                raise
            tx.execute(
                sa.update(table)
                .where(*where)
                .values(data=data, size=len(data), version=version + 1, updated_at=now)
            )
            total += len(data) - old
            count += new
        return True

    def _check(self, path: str, size: int, total: int, count: int) -> None:
        if size > self.max_file_bytes:
            raise PayloadTooLargeError(
                f"file {path!r} would hold {size} bytes, over the limit of {self.max_file_bytes} "
                "bytes per file of the Node-RED file store; write less to it (or write a new "
                "file instead of appending to this one)",
                path=path,
                bytes=size,
                limit=self.max_file_bytes,
            )
        if total > self.max_account_bytes:
            raise PayloadTooLargeError(
                f"writing file {path!r} would make the account's Node-RED files hold {total} "
                f"bytes, over the limit of {self.max_account_bytes}; delete files the account's "
                "flows no longer need (a file node with action delete)",
                path=path,
                bytes=total,
                limit=self.max_account_bytes,
            )
        if count > self.max_account_files:
            raise PayloadTooLargeError(
                f"writing file {path!r} would make the account hold {count} Node-RED files, over "
                f"the limit of {self.max_account_files}; delete files its flows no longer need",
                path=path,
                files=count,
                limit=self.max_account_files,
            )

    async def get(self, account_id: str, path: str) -> bytes | None:
        """A file's contents as they are now (what a test or an operator reads); None: none."""
        found = await self.db.transact(lambda tx: self.read(tx, account_id, [path]))
        return found[path].data

    async def paths(self, account_id: str) -> list[str]:
        """The account's files, in path order."""
        table = nodered_files

        def run(tx: Transaction) -> list[str]:
            query = sa.select(table.c.path).where(table.c.account_id == account_id)
            return [row.path for row in tx.execute(query.order_by(table.c.path))]

        return await self.db.transact(run)
