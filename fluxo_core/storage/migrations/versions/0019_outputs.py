"""Service output triggers: where each one has read up to, and the index it reads calls by.

Revision ID: 0019_outputs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_outputs"
down_revision = "0018_nrcontext"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trigger_state") as batch:
        batch.add_column(sa.Column("cursor", sa.Float, nullable=True))
    op.create_index(
        "ix_calls_account_service_finished",
        "calls",
        ["account_id", "service", "finished_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_calls_account_service_finished", table_name="calls")
    with op.batch_alter_table("trigger_state") as batch:
        batch.drop_column("cursor")
