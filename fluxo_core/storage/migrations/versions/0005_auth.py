"""Users, roles and tokens.

``users``: one row per user of an account, with its one role and, for console sign-in, an argon2
hash of its password. ``api_tokens`` gains a public ``id`` (to list and revoke a token by; never
its value or digest), the ``role`` it acts with, its ``kind`` (``api`` or ``session``), an optional
``expires_at``, ``last_used_at`` and ``revoked_at``.

Tokens issued before this revision could do everything in their account: they become
``account-admin`` tokens, those of the platform's own account (``default``, whose token
``fluxo up`` issues and which alone could read ``/metrics``) ``platform-admin`` tokens, and
engines' tokens ``member`` tokens (their routes are limited apart from roles, as before).

Revision ID: 0005_auth
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0005_auth"
down_revision = "0004"
branch_labels = None
depends_on = None

PLATFORM_ACCOUNT = "default"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column(
            "account_id",
            sa.String(128),
            sa.ForeignKey("accounts.id", name="fk_users_account_id_accounts"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "user_id", name="pk_users"),
    )
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("id", sa.String(32)))
        batch.add_column(
            sa.Column("role", sa.String(20), nullable=False, server_default="account-admin")
        )
        batch.add_column(sa.Column("kind", sa.String(10), nullable=False, server_default="api"))
        batch.add_column(sa.Column("expires_at", sa.Float))
        batch.add_column(sa.Column("last_used_at", sa.Float))
        batch.add_column(sa.Column("revoked_at", sa.Float))
    tokens = sa.table(
        "api_tokens",
        sa.column("digest", sa.String),
        sa.column("id", sa.String),
        sa.column("role", sa.String),
        sa.column("account_id", sa.String),
        sa.column("engine", sa.String),
    )
    conn = op.get_bind()
    for (digest,) in conn.execute(sa.select(tokens.c.digest)).all():
        conn.execute(
            sa.update(tokens)
            .where(tokens.c.digest == digest)
            .values(id="tok_" + secrets.token_hex(8))
        )
    conn.execute(
        sa.update(tokens)
        .where(tokens.c.account_id == PLATFORM_ACCOUNT, tokens.c.engine.is_(None))
        .values(role="platform-admin")
    )
    conn.execute(sa.update(tokens).where(tokens.c.engine.is_not(None)).values(role="member"))
    with op.batch_alter_table("api_tokens") as batch:
        batch.create_unique_constraint("uq_api_tokens_id", ["id"])


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_constraint("uq_api_tokens_id", type_="unique")
        for column in ("revoked_at", "last_used_at", "expires_at", "kind", "role", "id"):
            batch.drop_column(column)
    op.drop_table("users")
