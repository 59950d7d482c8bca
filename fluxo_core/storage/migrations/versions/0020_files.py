"""Files of the Node-RED file nodes the step engine runs: a virtual filesystem per account.

Revision ID: 0020_files
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_files"
down_revision = "0019_outputs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodered_files",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "path", name="pk_nodered_files"),
    )


def downgrade() -> None:
    op.drop_table("nodered_files")
