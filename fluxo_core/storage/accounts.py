"""Accounts and API tokens.

A user token is bound to exactly one account and one user. An engine token (``engine`` set) is
what an external engine (Node-RED, Argo) sends back to the gateway: it is bound to one account
too and may only act for live jobs of that account and its engine, each call then running as the
job's own user (see ``JobService.engine_job``); a job of another account is not found.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import AuthError, ConfigError, NotFoundError, ValidationError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import accounts, api_tokens

__all__ = [
    "LAST_USE_WRITE_S",
    "PLATFORM_ACCOUNT",
    "AccountRow",
    "AccountStore",
    "Principal",
    "Role",
    "TokenInfo",
]

TOKEN_PREFIX = "fxo_"
SESSION_PREFIX = "fxs_"

PLATFORM_ACCOUNT = "default"
"""The platform's own account (``fluxo up`` issues its admin token): a token issued in it without
a role is a platform admin's, as every token of it was before roles existed."""

LAST_USE_WRITE_S = 60.0
"""A token's ``last_used_at`` is written at most this often: authenticating stays a read."""


class Role(enum.StrEnum):
    """What a user (and each of its tokens) may do in its account, least to most."""

    VIEWER = "viewer"  # reads; every write answers 403
    MEMBER = "member"  # the account's work: workflows, jobs, calls, secrets; its own tokens
    ACCOUNT_ADMIN = "account-admin"  # and the account's users, tokens and sessions
    PLATFORM_ADMIN = "platform-admin"  # and accounts, and platform-wide routes (/metrics)

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank

    @classmethod
    def parse(cls, value: object, where: str = "role") -> Role:
        try:
            return cls(str(value))
        except ValueError:
            names = ", ".join(r.value for r in cls)
            raise ValidationError(
                f"{where} {value!r} is not a role; use one of {names}",
                problems=[(where, f"one of {names}")],
            ) from None


_RANKS = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ACCOUNT_ADMIN: 2, Role.PLATFORM_ADMIN: 3}


@dataclass(frozen=True)
class Principal:
    """Who a request is from: one account and one user with one role, as the token says."""

    account_id: str
    user_id: str
    engine: str | None = None  # set for an engine's token: it acts only for that engine's jobs
    # Principals built inside the platform (a job's own user, the CLI on the local database) act
    # with their account's full rights; a token's principal carries the token's role.
    role: Role = Role.ACCOUNT_ADMIN
    token_id: str | None = None
    kind: str = "api"  # "api" or "session"


@dataclass(frozen=True)
class TokenInfo:
    """A token as it is shown: never its value or its digest."""

    id: str
    account_id: str
    user_id: str
    name: str
    role: Role
    kind: str
    engine: str | None
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "name": self.name,
            "role": self.role.value,
            "kind": self.kind,
            "engine": self.engine,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked": self.revoked,
        }


@dataclass(frozen=True)
class AccountRow:
    id: str
    name: str
    blocked: bool
    created_at: float


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        account_id=row.account_id,
        user_id=row.user_id,
        name=row.name,
        role=Role(row.role),
        kind=row.kind,
        engine=row.engine,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked,
    )


_INFO_COLUMNS = (
    api_tokens.c.id,
    api_tokens.c.account_id,
    api_tokens.c.user_id,
    api_tokens.c.name,
    api_tokens.c.role,
    api_tokens.c.kind,
    api_tokens.c.engine,
    api_tokens.c.created_at,
    api_tokens.c.expires_at,
    api_tokens.c.last_used_at,
    api_tokens.c.revoked,
)


class AccountStore:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock  # token times: creation, expiry, last use
        # Token id -> when this process last wrote its last use: most requests skip even the
        # conditional UPDATE (several processes may each write once a minute: harmless).
        self._last_use_written: dict[str, float] = {}

    async def ensure_account(self, account_id: str, name: str | None = None) -> None:
        def run(tx: Transaction) -> None:
            exists = tx.conn.scalar(sa.select(accounts.c.id).where(accounts.c.id == account_id))
            if exists is None:
                tx.execute(
                    sa.insert(accounts).values(
                        id=account_id,
                        name=name or account_id,
                        blocked=False,
                        created_at=self.clock.time(),
                    )
                )

        await self.db.transact(run)

    async def require_account(self, account_id: str) -> None:
        """Raises NotFoundError unless the account exists."""
        query = sa.select(accounts.c.id).where(accounts.c.id == account_id)
        if await self.db.read(lambda conn: conn.scalar(query)) is None:
            raise NotFoundError(
                f"no account {account_id[:128]!r}; list them with GET /v1/accounts",
                account_id=account_id[:128],
            )

    async def list_accounts(self) -> list[AccountRow]:
        query = sa.select(
            accounts.c.id, accounts.c.name, accounts.c.blocked, accounts.c.created_at
        ).order_by(accounts.c.id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [AccountRow(r.id, r.name, bool(r.blocked), r.created_at) for r in rows]

    async def issue_token(
        self,
        account_id: str,
        user_id: str,
        name: str = "default",
        *,
        engine: str | None = None,
        token: str | None = None,
        role: Role | None = None,
        expires_at: float | None = None,
    ) -> str:
        """Create a token; returns it. Only its digest is stored, so it cannot be shown again.

        Args:
            engine: make it an engine's token (``nodered``, ``argo``).
            token: register this value instead of generating one (a secret that already lives
                in the engine's environment or a vault); at least 24 characters.
            role: what it may do; by default all of its account's work (``account-admin``;
                ``platform-admin`` in the platform's own account), as tokens did before roles;
                ``member`` for an engine's token.
            expires_at: epoch seconds after which it answers 401.
        """
        value, _ = await self.create_token(
            account_id,
            user_id,
            name,
            engine=engine,
            token=token,
            role=role,
            expires_at=expires_at,
        )
        return value

    async def create_token(
        self,
        account_id: str,
        user_id: str,
        name: str = "default",
        *,
        engine: str | None = None,
        token: str | None = None,
        role: Role | None = None,
        expires_at: float | None = None,
        kind: str = "api",
    ) -> tuple[str, TokenInfo]:
        """:meth:`issue_token`, returning the token and how it is listed."""
        if token is not None and len(token) < 24:
            raise ConfigError("a registered token must be at least 24 characters long")
        prefix = SESSION_PREFIX if kind == "session" else TOKEN_PREFIX
        token = token or prefix + secrets.token_urlsafe(32)
        if role is None and engine is not None:
            role = Role.MEMBER  # an engine's calls are its account's work, nothing more
        elif role is None:
            role = Role.PLATFORM_ADMIN if account_id == PLATFORM_ACCOUNT else Role.ACCOUNT_ADMIN
        if role is Role.PLATFORM_ADMIN and account_id != PLATFORM_ACCOUNT:
            raise ValidationError(
                f"the platform-admin role exists only in the platform's account "
                f"{PLATFORM_ACCOUNT!r}; give a user of {account_id!r} account-admin instead",
                problems=[("role", "platform-admin only in the platform's account")],
            )
        info = TokenInfo(
            id=("ses_" if kind == "session" else "tok_") + secrets.token_hex(8),
            account_id=account_id,
            user_id=user_id,
            name=name,
            role=role,
            kind=kind,
            engine=engine,
            created_at=self.clock.time(),
            expires_at=expires_at,
            last_used_at=None,
            revoked=False,
        )

        def run(tx: Transaction) -> None:
            found = tx.conn.scalar(sa.select(accounts.c.id).where(accounts.c.id == account_id))
            if found is None:
                raise NotFoundError(f"account {account_id!r} does not exist", account_id=account_id)
            tx.execute(
                sa.insert(api_tokens).values(
                    digest=_digest(token),
                    id=info.id,
                    account_id=account_id,
                    user_id=user_id,
                    name=name,
                    created_at=info.created_at,
                    revoked=False,
                    engine=engine,
                    role=role.value,
                    kind=kind,
                    expires_at=expires_at,
                )
            )

        await self.db.transact(run)
        return token, info

    async def authenticate(self, token: str) -> Principal:
        # Tokens are printable ASCII; anything else (a non-ASCII byte, which the HTTP server
        # hands over as a lone surrogate) is no token of ours, and could not even be digested.
        if not (token.isascii() and token.isprintable()):
            raise AuthError(
                "the bearer token holds characters no Fluxo token has (tokens are printable "
                "ASCII); send the token exactly as issued"
            )
        query = sa.select(
            api_tokens.c.id,
            api_tokens.c.account_id,
            api_tokens.c.user_id,
            api_tokens.c.engine,
            api_tokens.c.role,
            api_tokens.c.kind,
            api_tokens.c.revoked,
            api_tokens.c.expires_at,
            api_tokens.c.last_used_at,
        ).where(api_tokens.c.digest == _digest(token))
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise AuthError("the bearer token is unknown; ask for a new token")
        what = "session" if row.kind == "session" else "token"
        if row.revoked:
            raise AuthError(
                f"this {what} ({row.id}) was revoked; sign in again or ask for a new token",
                token_id=row.id,
            )
        now = self.clock.time()
        if row.expires_at is not None and row.expires_at <= now:
            raise AuthError(
                f"this {what} ({row.id}) expired at {_iso(row.expires_at)}; sign in again or "
                "ask for a new token",
                token_id=row.id,
            )
        await self._note_use(row.id, row.last_used_at, now)
        return Principal(
            account_id=row.account_id,
            user_id=row.user_id,
            engine=row.engine,
            role=Role(row.role),
            token_id=row.id,
            kind=row.kind,
        )

    async def _note_use(self, token_id: str, last_used_at: float | None, now: float) -> None:
        """Record a use at most once per :data:`LAST_USE_WRITE_S` per token."""
        written = max(last_used_at or 0.0, self._last_use_written.get(token_id, 0.0))
        if now - written < LAST_USE_WRITE_S:
            return
        self._last_use_written[token_id] = now
        stale = now - LAST_USE_WRITE_S
        update = (
            sa.update(api_tokens)
            .where(
                api_tokens.c.id == token_id,
                sa.or_(api_tokens.c.last_used_at.is_(None), api_tokens.c.last_used_at <= stale),
            )
            .values(last_used_at=now)
        )
        await self.db.transact(lambda tx: tx.execute(update))

    async def list_tokens(
        self, account_id: str, *, user_id: str | None = None, kind: str = "api"
    ) -> list[TokenInfo]:
        """The account's tokens (or only ``user_id``'s) of ``kind``, revoked ones included."""
        query = (
            sa.select(*_INFO_COLUMNS)
            .where(api_tokens.c.account_id == account_id, api_tokens.c.kind == kind)
            .order_by(api_tokens.c.created_at, api_tokens.c.id)
        )
        if user_id is not None:
            query = query.where(api_tokens.c.user_id == user_id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_token_info(r) for r in rows]

    async def get_token(self, account_id: str, token_id: str) -> TokenInfo:
        query = sa.select(*_INFO_COLUMNS).where(
            api_tokens.c.account_id == account_id, api_tokens.c.id == token_id
        )
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFoundError(
                f"no token or session {token_id!r} in this account; list them with GET /v1/tokens",
                token_id=token_id,
            )
        return _token_info(row)

    async def revoke_token(self, account_id: str, token_id: str) -> None:
        """Revoke one token or session of the account (404 for another account's)."""

        def run(tx: Transaction) -> None:
            result = tx.execute(
                sa.update(api_tokens)
                .where(api_tokens.c.account_id == account_id, api_tokens.c.id == token_id)
                .values(revoked=True, revoked_at=sa.func.coalesce(api_tokens.c.revoked_at, now))
            )
            if result.rowcount == 0:
                raise NotFoundError(
                    f"no token or session {token_id!r} in this account",
                    token_id=token_id,
                )

        now = self.clock.time()
        await self.db.transact(run)

    def revoke_user_on(
        self, tx: Transaction, account_id: str, user_id: str, kind: str | None
    ) -> None:
        """Revoke a user's tokens (``kind`` None: and sessions) inside the caller's transaction."""
        query = sa.update(api_tokens).where(
            api_tokens.c.account_id == account_id,
            api_tokens.c.user_id == user_id,
            api_tokens.c.revoked.is_(False),
        )
        if kind is not None:
            query = query.where(api_tokens.c.kind == kind)
        tx.execute(query.values(revoked=True, revoked_at=self.clock.time()))

    async def set_blocked(self, account_id: str, blocked: bool, reason: str | None = None) -> None:
        def run(tx: Transaction) -> None:
            result = tx.execute(
                sa.update(accounts)
                .where(accounts.c.id == account_id)
                .values(blocked=blocked, blocked_reason=reason if blocked else None)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"account {account_id!r} does not exist", account_id=account_id)
            tx.notify("policy")

        await self.db.transact(run)

    async def blocked_reasons(self, account_ids: Iterable[str]) -> dict[str, str | None]:
        """For each account: the block reason if blocked (or unknown), else None. One query."""
        ids = sorted(set(account_ids))
        if not ids:
            return {}
        return await self.db.read(lambda conn: self.blocked_reasons_on(conn, ids))

    def blocked_reasons_on(
        self, conn: sa.Connection, account_ids: Iterable[str]
    ) -> dict[str, str | None]:
        """:meth:`blocked_reasons` on a connection the caller holds (inside its transaction)."""
        ids = sorted(set(account_ids))
        if not ids:
            return {}
        query = sa.select(accounts.c.id, accounts.c.blocked, accounts.c.blocked_reason).where(
            accounts.c.id.in_(ids)
        )
        rows = {r.id: r for r in conn.execute(query).all()}
        reasons: dict[str, str | None] = {}
        for account_id in ids:
            row = rows.get(account_id)
            if row is None:
                reasons[account_id] = "unknown account"
            else:
                reasons[account_id] = (row.blocked_reason or "blocked") if row.blocked else None
        return reasons
