"""Secrets: an account's named credentials, stored encrypted.

``secrets``: one row per account and name; ``ciphertext`` is AES-GCM (nonce + sealed value) bound to
its account and name, ``key_id`` names the key it was sealed with.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column(
            "account_id",
            sa.String(128),
            sa.ForeignKey("accounts.id", name="fk_secrets_account_id_accounts"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "name", name="pk_secrets"),
    )


def downgrade() -> None:
    op.drop_table("secrets")
