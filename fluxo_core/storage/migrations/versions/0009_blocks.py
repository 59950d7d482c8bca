"""Blocks, their audit log, and paused workflows.

``blocks``: one row per block (never deleted; lifting fills ``lifted_at``); ``block_audit``: every
place and lift; ``workflow_pauses``: one row per paused workflow.

Revision ID: 0009_blocks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_blocks"
down_revision = "0008_quotas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("placed_by", sa.String(300), nullable=False),
        sa.Column("placed_at", sa.Float, nullable=False),
        sa.Column("ends_at", sa.Float),
        sa.Column("lifted_by", sa.String(300)),
        sa.Column("lifted_at", sa.Float),
        sa.PrimaryKeyConstraint("id", name="pk_blocks"),
    )
    op.create_index("ix_blocks_lifted_at", "blocks", ["lifted_at"])
    op.create_index("ix_blocks_account_placed", "blocks", ["account_id", "placed_at"])
    op.create_table(
        "block_audit",
        sa.Column("seq", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("block_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("detail", sa.Text),
        sa.PrimaryKeyConstraint("seq", name="pk_block_audit"),
    )
    op.create_index("ix_block_audit_account_seq", "block_audit", ["account_id", "seq"])
    op.create_table(
        "workflow_pauses",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("paused_by", sa.String(300), nullable=False),
        sa.Column("paused_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "workflow", name="pk_workflow_pauses"),
    )


def downgrade() -> None:
    op.drop_table("workflow_pauses")
    op.drop_index("ix_block_audit_account_seq", table_name="block_audit")
    op.drop_table("block_audit")
    op.drop_index("ix_blocks_account_placed", table_name="blocks")
    op.drop_index("ix_blocks_lifted_at", table_name="blocks")
    op.drop_table("blocks")
