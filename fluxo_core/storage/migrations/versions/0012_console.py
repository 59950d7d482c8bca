"""Indexes the web console reads by: an account's jobs of one status, its calls of one status.

``ix_jobs_account_status`` serves the jobs list filtered by status (newest first, keyset) and the
overview's running jobs and latest failures; ``ix_calls_account_status`` the overview's queue
depth and age. Without them each is a scan of all the account's jobs or calls.

Revision ID: 0012_console
"""

from __future__ import annotations

from alembic import op

revision = "0012_console"
down_revision = "0011_retry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_account_status", "jobs", ["account_id", "status", "created_at"])
    op.create_index("ix_calls_account_status", "calls", ["account_id", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_account_status", table_name="calls")
    op.drop_index("ix_jobs_account_status", table_name="jobs")
