"""A failed call a job retry supersedes names the call its next attempt is: ``calls.retry_id``.

Revision ID: 0011_retry
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_retry"
down_revision: str | None = "0010_terms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: adding it rewrites no row on SQLite or PostgreSQL.
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("retry_id", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("retry_id")
