"""The terms the platform applies to services, kept apart from what their code declares.

``service_terms``: one row per service name and version (``*``: every version), written by the
Service controller; publishing a service never touches it.

Revision ID: 0010_terms
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_terms"
down_revision = "0009_blocks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_terms",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("price_per_call_micros", sa.BigInteger),
        sa.Column("price_per_item_micros", sa.BigInteger),
        sa.Column("currency", sa.String(3)),
        sa.Column("max_attempts", sa.Integer),
        sa.Column("timeout_s", sa.Float),
        sa.Column("applied_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_service_terms"),
    )


def downgrade() -> None:
    op.drop_table("service_terms")
