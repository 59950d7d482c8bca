"""Inbound triggers: the attachments of mail an email trigger received.

Revision ID: 0016_inbound
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_inbound"
# After the triggers' table: this branch builds on it (the coordinator renumbers the chain).
down_revision = "0015_wfsvc"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_attachments",
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(100), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("ref", name="pk_trigger_attachments"),
    )
    op.create_index(
        "ix_trigger_attachments_account_trigger",
        "trigger_attachments",
        ["account_id", "trigger"],
    )


def downgrade() -> None:
    op.drop_index("ix_trigger_attachments_account_trigger", table_name="trigger_attachments")
    op.drop_table("trigger_attachments")
