"""Engine tokens and the run handle of jobs on external engines.

``api_tokens.engine``: a token issued to an engine (Node-RED, Argo) rather than to a user. It may
only act for live jobs of that engine, and each call then runs as the job's own account.
``jobs.run_id``: the engine's name for the job's run (an Argo Workflow's name), set at start.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("engine", sa.String(20)))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("run_id", sa.String(253)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("run_id")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("engine")
