"""Node-RED context (flow, node and global) kept by the step engine, per account and workflow.

Revision ID: 0018_nrcontext
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_nrcontext"
down_revision = "0017_deferred"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodered_context",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "workflow", "scope", name="pk_nodered_context"),
    )


def downgrade() -> None:
    op.drop_table("nodered_context")
