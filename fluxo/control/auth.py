"""Users, roles, tokens and sign-in: who may do what in an account.

Roles, least to most (:class:`~fluxo_core.storage.Role`): a ``viewer`` reads; a ``member`` does the
account's work (workflows, jobs, calls, secrets) and manages its own tokens; an ``account-admin``
also manages the account's users, tokens and sessions; a ``platform-admin`` (only in the platform's
own account) also creates accounts and reads platform-wide routes (``/metrics``).

Passwords are hashed with argon2id (argon2-cffi), on a worker thread so the event loop keeps
serving. A sign-in never says whether the user or the password was wrong, checks a hash even for
a user that does not exist (so the answer takes as long), and after :data:`MAX_FAILURES` failed
attempts for one account and user within :data:`FAILURE_WINDOW_S` refuses further attempts until
the window has passed, whatever the password.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fluxo_core.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from fluxo_core.storage import AccountStore, Database, Principal, Role, TokenInfo, UserRow
from fluxo_core.storage.accounts import PLATFORM_ACCOUNT
from fluxo_core.storage.users import USER_ID, UserStore

__all__ = [
    "FAILURE_WINDOW_S",
    "MAX_FAILURES",
    "SESSION_TTL_S",
    "Auth",
    "SignIn",
    "check_password_rules",
    "platform_only",
    "require",
]

SESSION_TTL_S = 12 * 3600.0
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0
MAX_TRACKED = 10_000  # (account, user) pairs whose failures are remembered at once
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_SIGN_IN_FAILED = "sign-in failed: the account, user or password is wrong"


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationError(
            f"a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long",
            problems=[("password", f"{MIN_PASSWORD} to {MAX_PASSWORD} characters")],
        )


@dataclass(frozen=True)
class SignIn:
    token: str
    session: TokenInfo


class Auth:
    """The account's users and tokens, with the role rules applied (HTTP API and CLI)."""

    def __init__(
        self,
        db: Database,
        accounts: AccountStore,
        *,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.accounts = accounts
        self.users = UserStore(db, accounts)
        self._hasher = hasher or PasswordHasher()
        # A hash to check when the user does not exist, so that answer takes as long; made at
        # the first sign-in (a hash costs tens of milliseconds and tens of MiB).
        self._dummy: str | None = None
        self._failures: dict[tuple[str, str], list[float]] = {}

    # --- passwords and sessions -------------------------------------------------------------

    async def hash_password(self, password: str) -> str:
        check_password_rules(password)
        return await asyncio.to_thread(self._hasher.hash, password)

    async def sign_in(self, account_id: str, user_id: str, password: str) -> SignIn:
        """A session token for the user, or 401 naming neither what was wrong nor what exists."""
        key = (account_id, user_id)
        now = self.accounts.clock.time()
        recent = [t for t in self._failures.get(key, []) if now - t < FAILURE_WINDOW_S]
        self._failures[key] = recent
        if len(recent) >= MAX_FAILURES:
            raise AuthError(
                f"{_SIGN_IN_FAILED}; too many failed attempts: try again in "
                f"{int(FAILURE_WINDOW_S - (now - recent[0])) + 1} s"
            )
        found = await self.users.password_hash(account_id, user_id)
        if found is None and self._dummy is None:
            self._dummy = await asyncio.to_thread(self._hasher.hash, "fluxo: no such user")
        stored = found[1] if found is not None else self._dummy
        ok = stored is not None and await asyncio.to_thread(self._verify, stored, password)
        if found is None or not ok:
            recent.append(now)
            self._forget_old_failures(now)
            raise AuthError(_SIGN_IN_FAILED)
        self._failures.pop(key, None)
        user = found[0]
        token, info = await self.accounts.create_token(
            account_id,
            user_id,
            "console sign-in",
            role=user.role,
            expires_at=now + SESSION_TTL_S,
            kind="session",
        )
        return SignIn(token, info)

    def _forget_old_failures(self, now: float) -> None:
        """Keep the failure counts bounded: guesses at many made-up user names cost no memory."""
        if len(self._failures) <= MAX_TRACKED:
            return
        for key, times in list(self._failures.items()):
            if not times or now - times[-1] >= FAILURE_WINDOW_S:
                del self._failures[key]
        while len(self._failures) > MAX_TRACKED:  # all recent: the oldest go first
            del self._failures[next(iter(self._failures))]

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    async def sign_out(self, who: Principal) -> None:
        if who.kind != "session" or who.token_id is None:
            raise ValidationError(
                "this is an API token, not a session; revoke it with DELETE /v1/tokens/{id}",
                problems=[("Authorization", "not a session token")],
            )
        await self.accounts.revoke_token(who.account_id, who.token_id)

    # --- users ------------------------------------------------------------------------------

    async def add_user(
        self, who: Principal, user_id: str, role: Role, password: str | None
    ) -> UserRow:
        require(who, Role.ACCOUNT_ADMIN, "add users")
        _grantable(who, role)
        hashed = None if password is None else await self.hash_password(password)
        return await self.users.add(who.account_id, user_id, role, hashed)

    async def remove_user(self, who: Principal, user_id: str) -> None:
        require(who, Role.ACCOUNT_ADMIN, "remove users")
        user = await self.users.get(who.account_id, user_id)
        _grantable(who, user.role)
        await self.users.remove(who.account_id, user_id)

    async def set_password(self, who: Principal, user_id: str, password: str) -> None:
        """A user sets its own password; an account admin any user's of its rank or below."""
        if user_id != who.user_id:
            require(who, Role.ACCOUNT_ADMIN, "set another user's password")
            _grantable(who, (await self.users.get(who.account_id, user_id)).role)
        hashed = await self.hash_password(password)
        await self.users.set_password(who.account_id, user_id, hashed)

    # --- tokens -----------------------------------------------------------------------------

    async def create_token(
        self,
        who: Principal,
        *,
        name: str,
        user_id: str | None = None,
        role: Role | None = None,
        expires_at: float | None = None,
    ) -> tuple[str, TokenInfo]:
        """A token for the caller (or, for an account admin, another user of its account).

        Its role defaults to the user's (the caller's for its own) and can be no higher than the
        caller's or the user's.
        """
        user_id = user_id or who.user_id
        ceiling = who.role
        if user_id != who.user_id:
            require(who, Role.ACCOUNT_ADMIN, "create tokens for other users")
            user = await self.users.get(who.account_id, user_id)
            ceiling = user.role if user.role.rank < ceiling.rank else ceiling
        role = role or ceiling
        if role.rank > ceiling.rank:
            raise PermissionDeniedError(
                f"a token can have at most the role {ceiling.value} here; ask for {role.value} "
                "from an admin",
                role=role.value,
            )
        if expires_at is not None and expires_at <= self.accounts.clock.time():
            raise ValidationError(
                "the expiry is in the past; give a time in the future",
                problems=[("expires_at", "in the past")],
            )
        return await self.accounts.create_token(
            who.account_id, user_id, name, role=role, expires_at=expires_at
        )

    async def list_tokens(self, who: Principal, kind: str = "api") -> list[TokenInfo]:
        """An admin sees the account's; anyone else its own."""
        mine = None if who.role.at_least(Role.ACCOUNT_ADMIN) else who.user_id
        return await self.accounts.list_tokens(who.account_id, user_id=mine, kind=kind)

    async def revoke(self, who: Principal, token_id: str, kind: str) -> None:
        """Revoke a token or session: one's own, or (an admin) any of the account's.

        Another user's token is 404 for a member, as another account's is for anyone.
        """
        info = await self.accounts.get_token(who.account_id, token_id)
        mine = info.user_id == who.user_id
        if info.kind != kind or not (mine or who.role.at_least(Role.ACCOUNT_ADMIN)):
            what = "session" if kind == "session" else "token"
            raise _absent(what, token_id)
        await self.accounts.revoke_token(who.account_id, token_id)

    # --- accounts ---------------------------------------------------------------------------

    async def create_account(
        self,
        who: Principal,
        account_id: str,
        name: str | None,
        admin: tuple[str, str | None] | None,
    ) -> UserRow | None:
        """A new account (platform admins only), with its first account admin if given."""
        platform_only(who)
        existing = {a.id for a in await self.accounts.list_accounts()}
        if account_id in existing:
            raise ConflictError(f"account {account_id!r} already exists", account_id=account_id)
        _check_account_id(account_id)
        await self.accounts.ensure_account(account_id, name)
        if admin is None:
            return None
        user_id, password = admin
        hashed = None if password is None else await self.hash_password(password)
        return await self.users.add(account_id, user_id, Role.ACCOUNT_ADMIN, hashed)


def _absent(what: str, token_id: str) -> NotFoundError:
    return NotFoundError(f"no {what} {token_id!r} in this account", token_id=token_id)


def _check_account_id(account_id: str) -> None:
    if not USER_ID.fullmatch(account_id):
        raise ValidationError(
            f"account id {account_id!r} must be 1-128 letters, digits or . _ @ -",
            problems=[("id", "letters, digits, . _ @ -")],
        )


def require(who: Principal, role: Role, action: str) -> None:
    """403 naming the caller's role unless it is at least ``role``."""
    if not who.role.at_least(role):
        raise PermissionDeniedError(
            f"your role {who.role.value} may not {action}; it needs {role.value} or higher",
            role=who.role.value,
            needed=role.value,
        )


def acts_for_platform(who: Principal) -> bool:
    """Whether ``who`` speaks for the platform itself (the seller): a platform admin, or an
    admin of the platform's own account made in-process (the local CLI, which holds the
    database anyway). A member or viewer of the platform's account does not."""
    return (
        who.account_id == PLATFORM_ACCOUNT
        and who.engine is None
        and who.role.at_least(Role.ACCOUNT_ADMIN)
    )


def platform_only(who: Principal) -> None:
    """404 unless a platform admin: the route's existence is no tenant's business."""
    if who.role is not Role.PLATFORM_ADMIN:
        raise NotFoundError("no such route in this account")


def _grantable(who: Principal, role: Role) -> None:
    if role.rank > who.role.rank:
        raise PermissionDeniedError(
            f"your role {who.role.value} may not grant or manage the role {role.value}",
            role=who.role.value,
        )
