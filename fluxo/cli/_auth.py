"""``fluxo users`` and ``fluxo token``: an account's users, roles and API tokens.

With ``FLUXO_URL`` the sub-commands ask that server (``/v1/users``, ``/v1/tokens``) as
``FLUXO_TOKEN``, with that token's account and role. Without it they work on the local database
as its operator (whoever holds the Fluxo home), with every right in any account (``--account``),
as ``fluxo token`` always did; the bare ``fluxo token --account A --user U`` is always local.
A token's value is printed once; ``list`` never shows it. Passwords are read from standard
input (a pipe) or a hidden prompt, never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import re
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fluxo.cli._client import HttpClient, server_or_database
from fluxo.control.auth import Auth, check_password_rules
from fluxo.control.platform import open_database
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError, ValidationError
from fluxo_core.storage import AccountStore, Role
from fluxo_core.storage.accounts import PLATFORM_ACCOUNT

__all__ = ["add_token_parser", "add_users_parser", "parse_duration"]

_ROLES = [r.value for r in Role]
_ACCOUNT_HELP = (
    f"the account (local database only; default: {PLATFORM_ACCOUNT!r}, the platform's own; "
    "with FLUXO_URL it is FLUXO_TOKEN's)"
)


def add_token_parser(subparsers: Any, engines: Sequence[str]) -> argparse.ArgumentParser:
    """``fluxo token create|list|revoke``; the bare ``fluxo token --account A --user U`` creates."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "token",
        help="API tokens of an account: create (also the bare form), list, revoke",
        description="create prints the token once; list shows id, name, user, role, created, "
        "expires and last use, never the value.",
    )
    _create_options(p, engines)
    p.set_defaults(func=_cmd_token_local)
    sub = p.add_subparsers(required=False, metavar="ACTION")
    q = sub.add_parser("create", help="create a token and print it (this once)")
    _create_options(q, engines)
    q.set_defaults(func=_cmd_token_create)
    q = sub.add_parser("list", help="the account's tokens: never their values")
    q.add_argument("--account", help=_ACCOUNT_HELP)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    q.set_defaults(func=_cmd_token_list)
    q = sub.add_parser("revoke", help="revoke a token by its id; it answers 401 from then on")
    q.add_argument("token_id", help="the token's id (tok_..., see 'fluxo token list')")
    q.add_argument("--account", help=_ACCOUNT_HELP)
    q.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    q.set_defaults(func=_cmd_token_revoke)
    return p


def _create_options(p: argparse.ArgumentParser, engines: Sequence[str]) -> None:
    p.add_argument("--account", help=_ACCOUNT_HELP)
    p.add_argument("--user", help="the user the token acts as (required)")
    p.add_argument("--name", default="cli", help="a name to tell it by")
    p.add_argument(
        "--role",
        choices=_ROLES,
        help="what it may do (default: the user's role if the user exists, else "
        "account-admin; platform-admin in the platform's account)",
    )
    p.add_argument("--expires-in", help="a lifetime such as 90d, 12h, 30m or 3600 (seconds)")
    p.add_argument(
        "--engine",
        choices=list(engines),
        help="an engine's token: it only makes the calls and reports of that engine's jobs",
    )
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")


def add_users_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "users", help="an account's users and their roles (add, list, remove, passwd)"
    )
    sub = p.add_subparsers(required=True, metavar="ACTION")
    q = sub.add_parser("add", help="add a user with one role")
    q.add_argument("user")
    q.add_argument("--role", required=True, choices=_ROLES)
    q.add_argument(
        "--password",
        action="store_true",
        help="give it a password for console sign-in (read from stdin, or prompted for)",
    )
    q.set_defaults(func=_cmd_users_add)
    q = sub.add_parser("list", help="the users and their roles")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_users_list)
    q = sub.add_parser("remove", help="remove a user; its tokens and sessions are revoked")
    q.add_argument("user")
    q.set_defaults(func=_cmd_users_remove)
    q = sub.add_parser(
        "passwd", help="set a user's password (stdin or a prompt); its sessions are revoked"
    )
    q.add_argument("user")
    q.set_defaults(func=_cmd_users_passwd)
    for action in sub.choices.values():
        action.add_argument("--account", help=_ACCOUNT_HELP)
        action.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    return p


_DURATION = re.compile(r"^([0-9]{1,9})([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    found = _DURATION.fullmatch(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise ValidationError(
            f"--expires-in {text!r} is not a lifetime; write e.g. 90d, 12h, 30m or 3600",
            problems=[("--expires-in", "a number with s, m, h or d")],
        )
    return float(int(found.group(1)) * _UNIT_S[found.group(2)])


class _Target:
    """Where a sub-command acts: the server (FLUXO_URL) or the local database's ``account``."""

    def __init__(self, remote: HttpClient | None, auth: Auth | None, account: str) -> None:
        self.remote = remote
        self.auth = auth
        self.account = account

    @property
    def local(self) -> Auth:
        assert self.auth is not None  # only called when remote is None
        return self.auth


@contextlib.asynccontextmanager
async def _target(args: argparse.Namespace, config: FluxoConfig) -> AsyncIterator[_Target]:
    async with server_or_database(args, config) as target:
        if target.client is not None:
            yield _Target(target.client, None, "")
        else:
            assert target.db is not None
            auth = Auth(target.db, AccountStore(target.db))
            yield _Target(None, auth, target.account)


async def _cmd_token_local(args: argparse.Namespace, config: FluxoConfig) -> int:
    """The bare ``fluxo token --account A --user U``: on the local database, as always."""
    db = await open_database(config)
    try:
        accounts = AccountStore(db)
        args.account = args.account or PLATFORM_ACCOUNT
        token = await _create(args, Auth(db, accounts))
    finally:
        await db.close()
    print(token)
    return 0


async def _cmd_token_create(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _target(args, config) as target:
        if target.remote is None:
            args.account = target.account
            print(await _create(args, target.local))
            return 0
        if args.engine:
            raise ConfigError(
                "an engine's token is made on the local database: unset FLUXO_URL "
                "(engine tokens are the operator's to issue)"
            )
        body: dict[str, Any] = {"name": args.name, "user_id": args.user, "role": args.role}
        if args.expires_in:
            body["expires_in_s"] = parse_duration(args.expires_in)
        made = await target.remote.call(
            "POST", "/v1/tokens", {k: v for k, v in body.items() if v is not None}
        )
        print(made["token"])
    return 0


async def _cmd_token_list(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _target(args, config) as target:
        if target.remote is None:
            items = [t.to_json() for t in await target.local.accounts.list_tokens(target.account)]
        else:
            items = (await target.remote.call("GET", "/v1/tokens"))["items"]
    _print_tokens(items, as_json=args.json)
    return 0


async def _cmd_token_revoke(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _target(args, config) as target:
        if target.remote is None:
            await target.local.accounts.revoke_token(target.account, args.token_id)
        else:
            await target.remote.call("DELETE", f"/v1/tokens/{quote(args.token_id, safe='')}")
    print(f"token/{args.token_id} revoked")
    return 0


async def _create(args: argparse.Namespace, auth: Auth) -> str:
    accounts = auth.accounts
    if not args.user:
        raise ValidationError(
            "fluxo token needs --user (the user the token acts as)",
            problems=[("--user", "required")],
        )
    await accounts.ensure_account(args.account)
    role = None if args.role is None else Role(args.role)
    if role is None and args.engine is None:
        user = await auth.users.find(args.account, args.user)
        role = None if user is None else user.role
    expires_at = None
    if args.expires_in:
        expires_at = accounts.clock.time() + parse_duration(args.expires_in)
    token, _ = await accounts.create_token(
        args.account,
        args.user,
        args.name,
        engine=args.engine,
        role=role,
        expires_at=expires_at,
    )
    return token


def _when(at: float | str | None) -> str:
    if at is None:
        return "-"
    if isinstance(at, str):
        at = datetime.fromisoformat(at).timestamp()
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def _print_tokens(items: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(items, indent=2))
        return
    header = ("ID", "NAME", "USER", "ROLE", "CREATED", "EXPIRES", "LAST USED", "STATE")
    rows = [
        (
            t["id"],
            t["name"],
            t["user_id"],
            t["role"] + (f" ({t['engine']})" if t.get("engine") else ""),
            _when(t["created_at"]),
            _when(t.get("expires_at")),
            _when(t.get("last_used_at")),
            "revoked" if t.get("revoked") else "active",
        )
        for t in items
    ]
    _table(header, rows)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


async def _cmd_users_add(args: argparse.Namespace, config: FluxoConfig) -> int:
    password = await asyncio.to_thread(_read_password, args.user) if args.password else None
    async with _target(args, config) as target:
        if target.remote is None:
            auth = target.local
            await auth.accounts.ensure_account(target.account)
            hashed = None if password is None else await auth.hash_password(password)
            await auth.users.add(target.account, args.user, Role(args.role), hashed)
        else:
            body = {"user_id": args.user, "role": args.role, "password": password}
            await target.remote.call(
                "POST", "/v1/users", {k: v for k, v in body.items() if v is not None}
            )
    print(f"user/{args.user} added as {args.role}")
    return 0


async def _cmd_users_list(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _target(args, config) as target:
        if target.remote is None:
            items = [u.to_json() for u in await target.local.users.list(target.account)]
        else:
            items = (await target.remote.call("GET", "/v1/users"))["items"]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    rows = [
        (u["user_id"], u["role"], "yes" if u["has_password"] else "no", _when(u["created_at"]))
        for u in items
    ]
    _table(("USER", "ROLE", "PASSWORD", "CREATED"), rows)
    return 0


async def _cmd_users_remove(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _target(args, config) as target:
        if target.remote is None:
            await target.local.users.remove(target.account, args.user)
        else:
            await target.remote.call("DELETE", f"/v1/users/{quote(args.user, safe='')}")
    print(f"user/{args.user} removed; its tokens and sessions are revoked")
    return 0


async def _cmd_users_passwd(args: argparse.Namespace, config: FluxoConfig) -> int:
    password = await asyncio.to_thread(_read_password, args.user)
    async with _target(args, config) as target:
        if target.remote is None:
            auth = target.local
            await auth.users.get(target.account, args.user)
            hashed = await auth.hash_password(password)
            await auth.users.set_password(target.account, args.user, hashed)
        else:
            path = f"/v1/users/{quote(args.user, safe='')}/password"
            await target.remote.call("PUT", path, {"password": password})
    print(f"user/{args.user} password set; its sessions are revoked")
    return 0


def _read_password(user: str) -> str:
    """From stdin (a pipe; one trailing newline dropped) or a hidden prompt, asked twice."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {user} (not shown): ")
        if getpass.getpass("again: ") != password:
            raise ValidationError(
                "the two passwords differ; run the command again",
                problems=[("password", "the two entries differ")],
            )
    else:
        password = sys.stdin.read()
        password = password[:-1] if password.endswith("\n") else password
    check_password_rules(password)
    return password
