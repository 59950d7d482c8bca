"""The files of Node-RED's ``file``/``file in`` nodes on the step engine: a virtual filesystem per
account, in the database.

A hosted platform never lets a flow touch the server's filesystem: a flow's ``/tmp/hello.txt``
is a row of its account here, nothing more. Paths are absolute and normalized
(:func:`nodered_semantics.files.virtual_path`). Directories are rows too (``kind`` ``dir``),
made by a ``file`` node that creates its directory; the root and ``/tmp``
(:data:`BASE_DIRS`) always exist, as on the host a Node-RED runs on, so a flow sees what it
would see on a fresh host. Every statement names the account, so nothing crosses accounts.

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
    "BASE_DIRS",
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
"""The most files and directories an account may have."""
BASE_DIRS = frozenset({"/", "/tmp"})
"""Directories every account has (never stored)."""


@dataclass(frozen=True, slots=True)
class FileState:
    """A path as read: ``kind`` is ``file`` (``data`` holds it), ``dir``, ``notdir`` (a file
    lies on its way: nothing can be there) or ``none``; ``version`` counts the writes of the
    file (0: none now)."""

    kind: str
    version: int
    data: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "version": self.version}
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        return out


def _ancestors(path: str) -> list[str]:
    """The directories above ``path``, from the root's child down (``/a/b/c``: ``/a``, ``/a/b``)."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


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
        wanted = sorted(set(paths))
        looked = sorted({p for path in wanted for p in [path, *_ancestors(path)]} - BASE_DIRS)
        columns = [table.c.path, table.c.kind, table.c.version]
        rows = {
            row.path: row
            for row in tx.execute(
                sa.select(*columns).where(
                    table.c.account_id == account_id, table.c.path.in_(looked)
                )
            )
        } if looked else {}  # fmt: skip
        found: dict[str, FileState] = {}
        for path in wanted:
            if any(a in rows and rows[a].kind == "file" for a in _ancestors(path)):
                found[path] = FileState("notdir", 0)
            elif path in BASE_DIRS:
                found[path] = FileState("dir", 0)
            elif path not in rows:
                found[path] = FileState("none", 0)
            elif rows[path].kind == "dir":
                found[path] = FileState("dir", 0)
            else:
                data = None
                if contents:
                    data = bytes(
                        tx.execute(
                            sa.select(table.c.data).where(
                                table.c.account_id == account_id, table.c.path == path
                            )
                        ).scalar_one()
                    )
                found[path] = FileState("file", int(rows[path].version), data)
        return found

    def apply(self, tx: Transaction, account_id: str, ops: Iterable[Mapping[str, Any]]) -> bool:
        """Apply ``ops`` in order (``{path, op: write|append|delete|mkdir, data?: bytes,
        expected?}``; ``mkdir`` makes the directory and those above it), or none of them (False)
        when a path is not as the node saw it: a file no longer at the version an op expects,
        a directory where a file is written, a file where a directory is made.

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

        def insert(path: str, kind: str) -> bool:
            """A row for ``path`` if there is none (True: made now)."""
            made = tx.execute(
                dialect.insert(table)
                .values(account_id=account_id, path=path, kind=kind, data=b"", size=0,
                        version=0, updated_at=now)
                .on_conflict_do_nothing()
                .returning(table.c.path)
            ).first()  # fmt: skip
            return made is not None

        for op in todo:
            path, kind = str(op["path"]), op["op"]
            where = (table.c.account_id == account_id, table.c.path == path)
            if kind == "mkdir":
                for directory in [*_ancestors(path), path]:
                    if directory in BASE_DIRS:
                        continue
                    if insert(directory, "dir"):
                        count += 1
                        self._check(directory, 0, total, count)
                    elif (
                        tx.execute(
                            sa.select(table.c.kind).where(
                                table.c.account_id == account_id, table.c.path == directory
                            )
                        ).scalar_one()
                        != "dir"
                    ):
                        return False
                continue
            # A row to lock even for a new file (version 0 until written), so two transactions
            # appending to a new file do one after the other (PostgreSQL).
            placeholder = kind != "delete" and insert(path, "file")
            query = sa.select(table.c.kind, table.c.data, table.c.size, table.c.version)
            query = query.where(*where)
            if not self.db.is_sqlite:
                query = query.with_for_update()
            row = tx.execute(query).first()
            version = int(row.version) if row is not None else 0
            expected = op.get("expected")
            if (expected is not None and int(expected) != version) or (
                row is not None and row.kind != "file"
            ):
                if placeholder:
                    tx.execute(sa.delete(table).where(*where))
                return False
            if kind == "delete":
                if row is not None:
                    tx.execute(sa.delete(table).where(*where))
                    total -= int(row.size)
                    count -= 1
                continue
            data: bytes = op["data"]
            if kind == "append" and row is not None:
                data = bytes(row.data) + data
            old = int(row.size) if row is not None else 0
            try:
                self._check(path, len(data), total - old + len(data), count + placeholder)
            except PayloadTooLargeError:
                if placeholder:  # no empty file left behind by a refused write
                    tx.execute(sa.delete(table).where(*where))
                raise
            tx.execute(
                sa.update(table)
                .where(*where)
                .values(data=data, size=len(data), version=version + 1, updated_at=now)
            )
            total += len(data) - old
            count += placeholder
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
