"""Quotas and limits: their definitions, what they used per period, their 80%/100% events, and
the engine-made calls refused past a calls quota.

Revision ID: 0008_quotas
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_quotas"
down_revision = "0007_resources"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quotas",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("target", sa.String(100)),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("limit_value", sa.BigInteger, nullable=False),
        sa.Column("period", sa.String(10)),
        sa.Column("currency", sa.String(3)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "name", name="pk_quotas"),
    )
    op.create_table(
        "quota_usage",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("period_key", sa.String(10), nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "name", "period_key", name="pk_quota_usage"),
    )
    op.create_table(
        "quota_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("quota", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("period_key", sa.String(10), nullable=False),
        sa.Column("threshold", sa.Integer, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("limit_value", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint(
            "account_id",
            "quota",
            "period_key",
            "threshold",
            name="uq_quota_events_account_id_quota_period_key_threshold",
        ),
    )
    op.create_index("ix_quota_events_account_created", "quota_events", ["account_id", "created_at"])
    op.create_table(
        "quota_refusals",
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("quota", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("call_id", name="pk_quota_refusals"),
    )


def downgrade() -> None:
    op.drop_table("quota_refusals")
    op.drop_index("ix_quota_events_account_created", "quota_events")
    op.drop_table("quota_events")
    op.drop_table("quota_usage")
    op.drop_table("quotas")
