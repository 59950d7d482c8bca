"""Fast multi-row inserts: the hot paths insert hundreds of rows per transaction.

On PostgreSQL a many-row ``VALUES`` list binds one parameter per cell, and SQLAlchemy's handling
of thousands of parameters costs more than the insert itself. ``INSERT ... SELECT FROM unnest()``
binds one array per column instead (measured here: 500 call rows in ~13 ms instead of ~55 ms).
On SQLite, ``executemany`` has no round trips and is already the cheapest.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fluxo_core.errors import StorageError
from fluxo_core.storage.database import Transaction

__all__ = ["bulk_insert", "bulk_update", "one_of"]

_PG_TYPES: list[tuple[type[sa.types.TypeEngine[Any]], str]] = [
    (sa.BigInteger, "bigint"),
    (sa.Integer, "integer"),
    (sa.Float, "double precision"),
    (sa.Boolean, "boolean"),
    (sa.LargeBinary, "bytea"),
    (sa.Text, "text"),
    (sa.String, "varchar"),
]


def bulk_insert(
    tx: Transaction,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_conflicts: bool = False,
    returning: Sequence[str] = (),
) -> list[sa.Row[Any]]:
    """Insert ``rows`` (dicts with the same keys) into ``table``.

    Args:
        skip_conflicts: rows that collide with an existing key are skipped (``ON CONFLICT DO
            NOTHING``) instead of failing the transaction.
        returning: columns to return for the rows actually inserted.
    """
    if not rows:
        return []
    columns = tuple(rows[0])
    dialect = tx.conn.dialect.name
    if dialect == "postgresql":
        stmt = _pg_statement(table, columns, skip_conflicts, tuple(returning))
        params = {f"c{i}": [row[name] for row in rows] for i, name in enumerate(columns)}
        result = tx.execute(stmt, params)
    else:
        result = tx.execute(
            _executemany_statement(table, skip_conflicts, tuple(returning)), list(rows)
        )
    return list(result.all()) if returning else []


@functools.cache
def _executemany_statement(
    table: sa.Table, skip_conflicts: bool, returning: tuple[str, ...]
) -> sa.Insert:
    # Built once: constructing and cache-keying a statement per call costs more than SQLite's
    # executemany itself.
    stmt: Any = sqlite_insert(table)
    if skip_conflicts:
        stmt = stmt.on_conflict_do_nothing()
    if returning:
        stmt = stmt.returning(*(table.c[name] for name in returning))
    insert: sa.Insert = stmt
    return insert


@functools.cache
def _pg_statement(
    table: sa.Table, columns: tuple[str, ...], skip_conflicts: bool, returning: tuple[str, ...]
) -> sa.TextClause:
    arrays = ", ".join(
        f"CAST(:c{i} AS {_pg_type(table.c[name].type, table.name, name)}[])"
        for i, name in enumerate(columns)
    )
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return sa.text(sql)


def _pg_type(type_: sa.types.TypeEngine[Any], table: str, column: str) -> str:
    for kind, name in _PG_TYPES:
        if isinstance(type_, kind):
            return name
    raise StorageError(f"bulk_insert: no array type for {table}.{column} ({type_!r})")


def bulk_update(
    tx: Transaction, table: sa.Table, keys: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """Update many rows of ``table``, each found by its ``keys`` columns, to the other values
    of its dict (every dict has the same columns).

    PostgreSQL: one ``UPDATE ... FROM unnest(...)`` statement instead of one UPDATE per row.
    SQLite: a prebuilt statement run with ``executemany``.
    """
    if not rows:
        return
    columns = tuple(rows[0])
    values = tuple(c for c in columns if c not in keys)
    if tx.conn.dialect.name == "postgresql":
        stmt = _pg_update(table, tuple(keys), values)
        params = {f"c{i}": [row[name] for row in rows] for i, name in enumerate((*keys, *values))}
        tx.execute(stmt, params)
        return
    tx.execute(
        _executemany_update(table, tuple(keys), values),
        [{f"_{name}": value for name, value in row.items()} for row in rows],
    )


@functools.cache
def _pg_update(table: sa.Table, keys: tuple[str, ...], values: tuple[str, ...]) -> sa.TextClause:
    names = (*keys, *values)
    arrays = ", ".join(
        f"CAST(:c{i} AS {_pg_type(table.c[name].type, table.name, name)}[])"
        for i, name in enumerate(names)
    )
    assignments = ", ".join(f"{name} = v.{name}" for name in values)
    match = " AND ".join(f"{table.name}.{name} = v.{name}" for name in keys)
    return sa.text(
        f"UPDATE {table.name} SET {assignments} FROM unnest({arrays}) AS v({', '.join(names)}) "
        f"WHERE {match}"
    )


@functools.cache
def _executemany_update(
    table: sa.Table, keys: tuple[str, ...], values: tuple[str, ...]
) -> sa.Update:
    return (
        sa.update(table)
        .where(*(table.c[name] == sa.bindparam(f"_{name}") for name in keys))
        .values({name: sa.bindparam(f"_{name}") for name in values})
    )


def one_of(column: sa.ColumnElement[Any], name: str, *, sqlite: bool) -> sa.ColumnElement[bool]:
    """``column IN (:name...)``, bound as ONE array on PostgreSQL (``= ANY(:name)``).

    A list of scalars costs PostgreSQL a parse and plan per list length and SQLAlchemy a bind per
    item; measured on the worker's inbox check: 15 ms down to 2 ms for 200 ids. SQLite has no
    arrays, and there an expanding IN is cheap.
    """
    if sqlite:
        return column.in_(sa.bindparam(name, expanding=True))
    return column == sa.any_(sa.bindparam(name, type_=ARRAY(column.type)))
