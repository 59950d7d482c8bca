"""A job a workflow service started names the call that started it: ``jobs.parent_*``.

The child job of a call of a published workflow runs in the publisher's account; these columns
link it to the caller's job, step and call, and name the service, so that the ledger's entries
of the two accounts can be joined (the margin report) and a cancel can follow the link.

Revision ID: 0015_wfsvc
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_wfsvc"
down_revision: str | None = "0014_triggers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: adding them rewrites no row on SQLite or PostgreSQL.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("parent_job_id", sa.String(128)))
        batch.add_column(sa.Column("parent_step_id", sa.String(100)))
        batch.add_column(sa.Column("parent_call_id", sa.String(128)))
        batch.add_column(sa.Column("via_service", sa.String(100)))
    op.create_index("ix_jobs_parent_call", "jobs", ["parent_call_id"])
    op.create_index("ix_jobs_parent_job", "jobs", ["parent_job_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_parent_job", "jobs")
    op.drop_index("ix_jobs_parent_call", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("via_service", "parent_call_id", "parent_step_id", "parent_job_id"):
            batch.drop_column(column)
