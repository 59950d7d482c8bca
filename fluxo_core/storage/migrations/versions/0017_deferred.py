"""Deferred calls: the calls a handler answered DEFERRED, until they are completed.

Revision ID: 0017_deferred
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_deferred"
down_revision = "0016_inbound"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deferred_calls",
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("call_id", name="pk_deferred_calls"),
    )
    op.create_index("ix_deferred_calls_service", "deferred_calls", ["service"])
    # Calls of workflow services that an earlier Fluxo left waiting for their child jobs.
    op.execute(
        "INSERT INTO deferred_calls (call_id, service, created_at) "
        "SELECT calls.id, calls.service, calls.created_at FROM calls "
        "JOIN jobs ON jobs.parent_call_id = calls.id "
        "WHERE calls.status NOT IN ('succeeded', 'failed')"
    )


def downgrade() -> None:
    op.drop_index("ix_deferred_calls_service", table_name="deferred_calls")
    op.drop_table("deferred_calls")
