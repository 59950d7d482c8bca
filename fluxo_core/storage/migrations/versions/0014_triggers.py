"""Triggers: each Trigger resource's state (health, last event, next fire time of cron).

Revision ID: 0014_triggers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_triggers"
down_revision = "0013_nrsource"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_state",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("paused_by", sa.String(300)),
        sa.Column("paused_at", sa.Float),
        sa.Column("health", sa.String(12), nullable=False),
        sa.Column("held", sa.Text),
        sa.Column("next_fire_at", sa.Float),
        sa.Column("last_event_id", sa.String(200)),
        sa.Column("last_event_at", sa.Float),
        sa.Column("last_job_id", sa.String(64)),
        sa.Column("last_error", sa.Text),
        sa.Column("jobs_created", sa.BigInteger, nullable=False),
        sa.Column("lag_s", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "name", name="pk_trigger_state"),
    )
    op.create_index("ix_trigger_state_type_next", "trigger_state", ["type", "next_fire_at"])


def downgrade() -> None:
    op.drop_index("ix_trigger_state_type_next", table_name="trigger_state")
    op.drop_table("trigger_state")
