"""The flow files workflows were imported from.

``workflow_sources``: one row per account and digest of a flow (``spec.source.sha256`` of the
workflow versions that came from it), so ``fluxo export`` can give the original flow back.

Revision ID: 0013_nrsource
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_nrsource"
down_revision = "0012_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_sources",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "sha256", name="pk_workflow_sources"),
    )


def downgrade() -> None:
    op.drop_table("workflow_sources")
