"""Accounts and API tokens.

A user token is bound to exactly one account and one user. An engine token (``engine`` set) is
what an external engine (Node-RED, Argo) sends back to the gateway: it is bound to one account
too and may only act for live jobs of that account and its engine, each call then running as the
job's own user (see ``JobService.engine_job``); a job of another account is not found.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from fluxo_core.errors import AuthError, ConfigError, NotFoundError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import accounts, api_tokens

__all__ = ["AccountStore", "Principal"]

TOKEN_PREFIX = "fxo_"


@dataclass(frozen=True)
class Principal:
    """Who a request is from: one account and one user, as the token says."""

    account_id: str
    user_id: str
    engine: str | None = None  # set for an engine's token: it acts only for that engine's jobs


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure_account(self, account_id: str, name: str | None = None) -> None:
        def run(tx: Transaction) -> None:
            exists = tx.conn.scalar(sa.select(accounts.c.id).where(accounts.c.id == account_id))
            if exists is None:
                tx.execute(
                    sa.insert(accounts).values(
                        id=account_id,
                        name=name or account_id,
                        blocked=False,
                        created_at=time.time(),
                    )
                )

        await self.db.transact(run)

    async def issue_token(
        self,
        account_id: str,
        user_id: str,
        name: str = "default",
        *,
        engine: str | None = None,
        token: str | None = None,
    ) -> str:
        """Create a token; returns it. Only its digest is stored, so it cannot be shown again.

        Args:
            engine: make it an engine's token (``nodered``, ``argo``).
            token: register this value instead of generating one (a secret that already lives
                in the engine's environment or a vault); at least 24 characters.
        """
        if token is not None and len(token) < 24:
            raise ConfigError("a registered token must be at least 24 characters long")
        token = token or TOKEN_PREFIX + secrets.token_urlsafe(32)

        def run(tx: Transaction) -> None:
            found = tx.conn.scalar(sa.select(accounts.c.id).where(accounts.c.id == account_id))
            if found is None:
                raise NotFoundError(f"account {account_id!r} does not exist", account_id=account_id)
            tx.execute(
                sa.insert(api_tokens).values(
                    digest=_digest(token),
                    account_id=account_id,
                    user_id=user_id,
                    name=name,
                    created_at=time.time(),
                    revoked=False,
                    engine=engine,
                )
            )

        await self.db.transact(run)
        return token

    async def authenticate(self, token: str) -> Principal:
        # Tokens are printable ASCII; anything else (a non-ASCII byte, which the HTTP server
        # hands over as a lone surrogate) is no token of ours, and could not even be digested.
        if not (token.isascii() and token.isprintable()):
            raise AuthError(
                "the bearer token holds characters no Fluxo token has (tokens are printable "
                "ASCII); send the token exactly as issued"
            )
        query = sa.select(api_tokens.c.account_id, api_tokens.c.user_id, api_tokens.c.engine).where(
            api_tokens.c.digest == _digest(token), api_tokens.c.revoked.is_(False)
        )
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise AuthError("the bearer token is unknown or revoked; ask for a new token")
        return Principal(account_id=row.account_id, user_id=row.user_id, engine=row.engine)

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
