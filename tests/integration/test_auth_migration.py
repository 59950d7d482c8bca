"""Migration 0005_auth keeps every token that existed working, with the rights it had."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import fluxo_core.storage.database as storage_database
from fluxo_core.storage import AccountStore, Database, Role
from fluxo_core.storage.accounts import _digest

MIGRATIONS = Path(storage_database.__file__).with_name("migrations")


def _upgrade(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


async def test_tokens_from_before_roles_keep_their_rights(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    _upgrade(url, "0004")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for account in ("default", "acme"):
            conn.execute(
                sa.text(
                    "INSERT INTO accounts (id, name, blocked, created_at) VALUES (:a, :a, 0, 0)"
                ),
                {"a": account},
            )
        for token, account, user, engine_name in (
            ("old-admin-token-0123456789", "default", "admin", None),
            ("old-acme-token-0123456789", "acme", "ada", None),
            ("old-engine-token-0123456789", "acme", "node-red", "nodered"),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO api_tokens (digest, account_id, user_id, name, created_at, "
                    "revoked, engine) VALUES (:d, :a, :u, 'old', 0, 0, :e)"
                ),
                {"d": _digest(token), "a": account, "u": user, "e": engine_name},
            )
    engine.dispose()

    db = Database(url)
    try:
        await db.migrate()
        accounts = AccountStore(db)
        admin = await accounts.authenticate("old-admin-token-0123456789")
        acme = await accounts.authenticate("old-acme-token-0123456789")
        engine_token = await accounts.authenticate("old-engine-token-0123456789")
        listed = await accounts.list_tokens("acme")
    finally:
        await db.close()
    assert admin.role is Role.PLATFORM_ADMIN
    assert (acme.role, acme.account_id, acme.user_id) == (Role.ACCOUNT_ADMIN, "acme", "ada")
    assert (engine_token.role, engine_token.engine) == (Role.MEMBER, "nodered")
    # Each got its own public id to be listed and revoked by.
    ids = [t.id for t in listed]
    assert len(set(ids)) == 2
    assert all(i.startswith("tok_") for i in ids)
