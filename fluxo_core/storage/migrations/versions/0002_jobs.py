"""Workflows (versioned), jobs, job steps and join buffers.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(20), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "name", "version", name="pk_workflows"),
        sa.UniqueConstraint(
            "account_id", "name", "content_hash", name="uq_workflows_account_id_name_content_hash"
        ),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("engine", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("input", sa.LargeBinary, nullable=False),
        sa.Column("result", sa.LargeBinary),
        sa.Column("error", sa.Text),
        sa.Column("active", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint(
            "account_id",
            "workflow",
            "idempotency_key",
            name="uq_jobs_account_id_workflow_idempotency_key",
        ),
    )
    op.create_index("ix_jobs_account_created", "jobs", ["account_id", "created_at"])
    op.create_index("ix_jobs_account_workflow_status", "jobs", ["account_id", "workflow", "status"])
    op.create_table(
        "job_steps",
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("call_id", sa.String(128)),
        sa.Column("input", sa.LargeBinary),
        sa.Column("output", sa.LargeBinary),
        sa.Column("error", sa.Text),
        sa.Column("context", sa.Text),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.PrimaryKeyConstraint("job_id", "key", name="pk_job_steps"),
    )
    op.create_index("ix_job_steps_call", "job_steps", ["call_id"])
    op.create_table(
        "job_joins",
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("join_key", sa.String(500), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "join_key", "idx", name="pk_job_joins"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE jobs SET (fillfactor = 70)")
        op.execute("ALTER TABLE job_steps SET (fillfactor = 70)")


def downgrade() -> None:
    for table in ("job_joins", "job_steps", "jobs", "workflows"):
        op.drop_table(table)
