"""Service runtime: queues, outbox, inbox, accounts, tokens, services, calls, usage ledger.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "queue_messages",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("visible_at", sa.Float, nullable=False),
        sa.Column("lease_token", sa.String(32)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_queue_messages"),
    )
    op.create_index("ix_queue_messages_ready", "queue_messages", ["queue", "visible_at", "id"])
    op.create_table(
        "outbox",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("delay_s", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("processed_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name="pk_inbox"),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("blocked", sa.Boolean, nullable=False),
        sa.Column("blocked_reason", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_api_tokens_account_id_accounts"
        ),
    )
    op.create_table(
        "services",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("input_schema", sa.Text),
        sa.Column("output_schema", sa.Text),
        sa.Column("price_per_call_micros", sa.BigInteger, nullable=False),
        sa.Column("price_per_item_micros", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_services"),
    )
    op.create_table(
        "calls",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("job_id", sa.String(128)),
        sa.Column("step_id", sa.String(128)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("request", sa.LargeBinary, nullable=False),
        sa.Column("result", sa.LargeBinary),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("reply_to", sa.String(200)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
    )
    op.create_index("ix_calls_account_created", "calls", ["account_id", "created_at"])
    op.create_index("ix_calls_job", "calls", ["job_id"])
    op.create_table(
        "usage_records",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("job_id", sa.String(128)),
        sa.Column("step_id", sa.String(128)),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("unit_price_micros", sa.BigInteger, nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
        sa.UniqueConstraint("call_id", name="uq_usage_records_call_id"),
    )
    op.create_index(
        "ix_usage_records_account_created", "usage_records", ["account_id", "created_at"]
    )

    if op.get_bind().dialect.name == "postgresql":
        # Calls are written once and updated once with their result: leave room in each page so
        # the update stays on the page (HOT) instead of touching every index.
        op.execute("ALTER TABLE calls SET (fillfactor = 70)")
        # Queue rows churn (insert, lease, delete); vacuum them early so scans skip few dead rows.
        for table in ("queue_messages", "outbox"):
            op.execute(
                f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.0, "
                "autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0)"
            )


def downgrade() -> None:
    for table in (
        "usage_records",
        "calls",
        "services",
        "api_tokens",
        "accounts",
        "inbox",
        "outbox",
        "queue_messages",
    ):
        op.drop_table(table)
