"""Resources: declarative documents (kind, name, spec) per account, with the platform's status.

``resources``: one row per account, kind and name; ``resource_version`` changes on every write,
``generation`` when the spec changes.

Revision ID: 0007_resources
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_resources"
down_revision = "0006_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("api_version", sa.String(40), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("resource_version", sa.BigInteger, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "kind", "name", name="pk_resources"),
        sa.UniqueConstraint("uid", name="uq_resources_uid"),
    )


def downgrade() -> None:
    op.drop_table("resources")
