"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fluxo_core.storage import Database
from fluxo_core.storage.tables import metadata


async def test_migrated_schema_matches_the_declared_tables(db: Database) -> None:
    def diff(conn: object) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    assert await db.read(diff) == []


async def test_migrating_twice_is_harmless(db: Database) -> None:
    await db.migrate()
    await db.migrate()


async def test_a_new_sqlite_file_is_in_wal_mode_with_8_kib_pages(tmp_path: Path) -> None:
    # The page size only takes when set before WAL mode, on a file not written yet.
    db = Database(f"sqlite:///{tmp_path}/new.db")
    try:
        await db.migrate()
        settings = await db.read(
            lambda conn: (
                conn.exec_driver_sql("PRAGMA page_size").scalar(),
                conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
            )
        )
    finally:
        await db.close()
    assert settings == (8192, "wal")
