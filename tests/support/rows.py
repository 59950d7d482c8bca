"""Rows that tests write straight into tables (past the API), for repository tests."""

from __future__ import annotations

from typing import NamedTuple


class JobRowToWrite(NamedTuple):
    """A ``jobs`` row with the columns a job needs, for ``bulk_insert(tx, jobs, [...])``."""

    id: str
    account_id: str
    user_id: str
    workflow: str
    version: int
    engine: str
    status: str
    input: bytes
    active: int
    created_at: float
