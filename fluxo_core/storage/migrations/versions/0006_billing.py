"""Billing: the price policy of services, credit entries in the ledger, issued invoices.

``services``: ``bill_failed``, ``bill_retried``, ``bill_cancelled`` (default false: only
succeeded calls are billed). ``usage_records``: ``outcome`` (succeeded, failed, retried,
cancelled, credit), ``attempt`` (0 for a call's final charge, N for its Nth retried attempt),
``reason`` and ``created_by`` (credits); one record per call, outcome and attempt. ``invoices`` and
``invoice_lines``: the frozen lines of issued invoices.

Revision ID: 0006_billing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_billing"
down_revision = "0005_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        for name in ("bill_failed", "bill_retried", "bill_cancelled"):
            batch.add_column(sa.Column(name, sa.Boolean, nullable=False, server_default=sa.false()))
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(
            sa.Column("outcome", sa.String(20), nullable=False, server_default="succeeded")
        )
        batch.add_column(sa.Column("attempt", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("reason", sa.Text))
        batch.add_column(sa.Column("created_by", sa.String(128)))
        batch.drop_constraint("uq_usage_records_call_id", type_="unique")
        batch.create_unique_constraint(
            "uq_usage_records_call_id_outcome_attempt", ["call_id", "outcome", "attempt"]
        )
    op.create_table(
        "invoices",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("number", sa.String(160), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("issued_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "period", name="pk_invoices"),
        sa.UniqueConstraint("number", name="uq_invoices_number"),
        sa.UniqueConstraint("account_id", "seq", name="uq_invoices_account_id_seq"),
    )
    op.create_table(
        "invoice_lines",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("workflow", sa.String(100)),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("units", sa.BigInteger, nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "period", "idx", name="pk_invoice_lines"),
    )


def downgrade() -> None:
    op.drop_table("invoice_lines")
    op.drop_table("invoices")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_constraint("uq_usage_records_call_id_outcome_attempt", type_="unique")
        batch.create_unique_constraint("uq_usage_records_call_id", ["call_id"])
        for name in ("created_by", "reason", "attempt", "outcome"):
            batch.drop_column(name)
    with op.batch_alter_table("services") as batch:
        for name in ("bill_cancelled", "bill_retried", "bill_failed"):
            batch.drop_column(name)
