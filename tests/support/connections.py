"""Which driver connections a :class:`~fluxo_core.storage.Database` opened are still open once
it closed: a test's way to see a connection leak where it happens, not as an "unclosed
connection" warning in whichever test the garbage collector runs next."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event

from fluxo_core.storage import Database

__all__ = ["close_left_open", "track_connections"]


def track_connections(db: Database) -> list[Any]:
    """Every driver connection ``db`` opens from now on (kept, so none is collected unseen)."""
    opened: list[Any] = []
    event.listen(db.engine, "connect", lambda conn, _record: opened.append(conn))
    return opened


def _is_open(conn: Any) -> bool:
    if isinstance(conn, sqlite3.Connection):
        try:
            conn.total_changes  # noqa: B018  (raises once the connection is closed)
        except sqlite3.ProgrammingError:
            return False
        return True
    return not conn.closed


def close_left_open(opened: list[Any]) -> int:
    """How many of ``opened`` are still open; they are closed now, so the test leaks none."""
    still = [conn for conn in opened if _is_open(conn)]
    for conn in still:
        conn.close()
    return len(still)
