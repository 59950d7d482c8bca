"""The users of an account: one role each, and an optional password hash for console sign-in.

The hash is made and checked above this layer (argon2, in ``fluxo.control.auth``); this store
keeps it and never hands it out except to that check (:meth:`UserStore.password_hash`).
Removing a user revokes its tokens and sessions; a new password revokes its sessions.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fluxo_core.errors import ConflictError, NotFoundError, ValidationError
from fluxo_core.storage.accounts import PLATFORM_ACCOUNT, AccountStore, Role
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import accounts, api_tokens, users

__all__ = ["USER_ID", "UserRow", "UserStore"]

USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


@dataclass(frozen=True)
class UserRow:
    account_id: str
    user_id: str
    role: Role
    has_password: bool
    created_at: float
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "user_id": self.user_id,
            "role": self.role.value,
            "has_password": self.has_password,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(),
            "updated_at": datetime.fromtimestamp(self.updated_at, UTC).isoformat(),
        }


def _row(r: sa.Row[Any]) -> UserRow:
    return UserRow(
        account_id=r.account_id,
        user_id=r.user_id,
        role=Role(r.role),
        has_password=r.password_hash is not None,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _not_found(user_id: str) -> NotFoundError:
    return NotFoundError(
        f"no user {user_id!r} in this account; list them with 'fluxo users list'", user_id=user_id
    )


class UserStore:
    def __init__(self, db: Database, accounts_store: AccountStore) -> None:
        self.db = db
        self.accounts = accounts_store

    async def add(
        self, account_id: str, user_id: str, role: Role, password_hash: str | None = None
    ) -> UserRow:
        """A new user; 409 if the account has one of that id, 404 if there is no account."""
        if not USER_ID.fullmatch(user_id):
            raise ValidationError(
                f"user id {user_id!r} must be 1-128 letters, digits or . _ @ - "
                "(starting with a letter or digit)",
                problems=[("user_id", "letters, digits, . _ @ -")],
            )
        if role is Role.PLATFORM_ADMIN and account_id != PLATFORM_ACCOUNT:
            raise ValidationError(
                f"the platform-admin role exists only in the platform's account "
                f"{PLATFORM_ACCOUNT!r}; use account-admin",
                problems=[("role", "platform-admin only in the platform's account")],
            )
        now = time.time()

        def run(tx: Transaction) -> None:
            found = tx.conn.scalar(sa.select(accounts.c.id).where(accounts.c.id == account_id))
            if found is None:
                raise NotFoundError(f"account {account_id!r} does not exist", account_id=account_id)
            exists = tx.conn.scalar(
                sa.select(users.c.user_id).where(
                    users.c.account_id == account_id, users.c.user_id == user_id
                )
            )
            if exists is not None:
                raise ConflictError(
                    f"user {user_id!r} already exists in this account; change its password with "
                    "'fluxo users passwd' or remove it first",
                    user_id=user_id,
                )
            tx.execute(
                sa.insert(users).values(
                    account_id=account_id,
                    user_id=user_id,
                    role=role.value,
                    password_hash=password_hash,
                    created_at=now,
                    updated_at=now,
                )
            )

        await self.db.transact(run)
        return UserRow(account_id, user_id, role, password_hash is not None, now, now)

    async def ensure(self, account_id: str, user_id: str, role: Role) -> None:
        """The user, added with ``role`` (and no password) if it is not there yet."""
        if await self.find(account_id, user_id) is None:
            # Added meanwhile by another process: as wanted.
            with contextlib.suppress(ConflictError):
                await self.add(account_id, user_id, role)

    async def list(self, account_id: str) -> list[UserRow]:
        query = sa.select(users).where(users.c.account_id == account_id).order_by(users.c.user_id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_row(r) for r in rows]

    async def find(self, account_id: str, user_id: str) -> UserRow | None:
        query = sa.select(users).where(users.c.account_id == account_id, users.c.user_id == user_id)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        return None if row is None else _row(row)

    async def get(self, account_id: str, user_id: str) -> UserRow:
        found = await self.find(account_id, user_id)
        if found is None:
            raise _not_found(user_id)
        return found

    async def password_hash(self, account_id: str, user_id: str) -> tuple[UserRow, str] | None:
        """The user and its password hash, for the sign-in check only; None if it has none."""
        query = sa.select(users).where(users.c.account_id == account_id, users.c.user_id == user_id)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None or row.password_hash is None:
            return None
        return _row(row), row.password_hash

    async def set_password(self, account_id: str, user_id: str, password_hash: str) -> None:
        """A new password hash; the user's sessions are revoked (its API tokens stay)."""

        def run(tx: Transaction) -> None:
            result = tx.execute(
                sa.update(users)
                .where(users.c.account_id == account_id, users.c.user_id == user_id)
                .values(password_hash=password_hash, updated_at=time.time())
            )
            if result.rowcount == 0:
                raise _not_found(user_id)
            self.accounts.revoke_user_on(tx, account_id, user_id, "session")

        await self.db.transact(run)

    async def set_role(self, account_id: str, user_id: str, role: Role) -> None:
        """Give a user another role. Its tokens and sessions that carry a higher role than the
        new one are revoked in the same transaction (a token never outranks its user)."""
        if role is Role.PLATFORM_ADMIN and account_id != PLATFORM_ACCOUNT:
            raise ValidationError(
                f"the platform-admin role exists only in the platform's account "
                f"{PLATFORM_ACCOUNT!r}; use account-admin",
                problems=[("role", "platform-admin only in the platform's account")],
            )
        above = [r.value for r in Role if r.rank > role.rank]
        now = time.time()

        def run(tx: Transaction) -> None:
            result = tx.execute(
                sa.update(users)
                .where(users.c.account_id == account_id, users.c.user_id == user_id)
                .values(role=role.value, updated_at=now)
            )
            if result.rowcount == 0:
                raise _not_found(user_id)
            tx.execute(
                sa.update(api_tokens)
                .where(
                    api_tokens.c.account_id == account_id,
                    api_tokens.c.user_id == user_id,
                    api_tokens.c.revoked.is_(False),
                    api_tokens.c.role.in_(above),
                )
                .values(revoked=True, revoked_at=now)
            )

        await self.db.transact(run)

    async def remove(self, account_id: str, user_id: str) -> None:
        """Remove a user; its tokens and sessions are revoked in the same transaction."""

        def run(tx: Transaction) -> None:
            result = tx.execute(
                sa.delete(users).where(users.c.account_id == account_id, users.c.user_id == user_id)
            )
            if result.rowcount == 0:
                raise _not_found(user_id)
            self.accounts.revoke_user_on(tx, account_id, user_id, None)

        await self.db.transact(run)
