"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

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
