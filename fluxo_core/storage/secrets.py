"""Secrets: an account's named credentials, stored encrypted, read back only to be used.

A workflow never holds a credential: it names one (``{"secret": "stripe"}``) and the service that
sends it (the ``http`` service) asks :meth:`SecretStore.reveal` for the value at call time, for the
call's own account. The value is sealed with AES-GCM under a 256-bit key; the name and account are
bound in as associated data, so a sealed value copied to another row does not open. Nothing here
ever returns a value except :meth:`SecretStore.reveal`, and no error quotes one.

The key is ``FLUXO_SECRET_KEY`` (32 bytes, base64) or, unset, the file ``secret.key`` in the Fluxo
home, made on first use with mode 0600. Every process that stores or uses secrets (``fluxo up``,
``fluxo worker``, the CLI) needs the same key: on several machines, give each the same
``FLUXO_SECRET_KEY``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets as random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError, NotFoundError, StorageError, ValidationError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import accounts
from fluxo_core.storage.tables import secrets as secrets_table

__all__ = ["KEY_FILE", "MAX_SECRET_CHARS", "SecretInfo", "SecretKey", "SecretStore"]

KEY_FILE = "secret.key"
MAX_SECRET_CHARS = 16_384
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_NONCE_BYTES = 12
_MAKE_KEY = "openssl rand -base64 32"


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown of a secret: its name and when it was set. Never its value."""

    name: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, repr=False)
class SecretKey:
    """The AES-256 key secrets are sealed with, and its id (a digest prefix, safe to show)."""

    key: bytes
    key_id: str

    @classmethod
    def parse(cls, text: str, source: str) -> SecretKey:
        """A key from its base64 text (standard or URL-safe alphabet).

        Raises:
            ConfigError: not base64 of exactly 32 bytes; the message names ``source``.
        """
        raw = text.strip().replace("-", "+").replace("_", "/")
        try:
            key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ConfigError(
                f"{source} must be 32 random bytes in base64 (make one with: {_MAKE_KEY})",
                setting="FLUXO_SECRET_KEY",
            )
        return cls(key, hashlib.sha256(key).hexdigest()[:16])

    def __repr__(self) -> str:
        return f"SecretKey(key_id={self.key_id!r})"


class SecretStore:
    """An account's named secrets, sealed in the ``secrets`` table.

    Args:
        db: the database.
        key: the key, or the path of the key file to read (and to create, 0600, when the first
            secret is stored).
    """

    def __init__(self, db: Database, key: SecretKey | Path) -> None:
        self.db = db
        self._key = key if isinstance(key, SecretKey) else None
        self._key_file = key if isinstance(key, Path) else None

    @classmethod
    def for_config(cls, db: Database, config: FluxoConfig) -> SecretStore:
        """The store with ``FLUXO_SECRET_KEY``, or else the key file in the Fluxo home."""
        if config.secret_key is not None:
            return cls(db, SecretKey.parse(config.secret_key, "FLUXO_SECRET_KEY"))
        return cls(db, config.home / KEY_FILE)

    # -- writing ------------------------------------------------------------------------------

    async def put(self, account_id: str, name: str, value: str) -> tuple[SecretInfo, bool]:
        """Store (or replace) a secret; returns it as shown and whether it is new.

        Raises:
            ValidationError: a bad name, or an empty or oversized value (never quoted).
            NotFoundError: the account does not exist.
        """
        _check_name(name)
        if not isinstance(value, str) or not value:
            raise ValidationError(
                "a secret's value must be a non-empty string", problems=[("value", "empty")]
            )
        if len(value) > MAX_SECRET_CHARS:
            raise ValidationError(
                f"a secret's value is at most {MAX_SECRET_CHARS} characters; this one has "
                f"{len(value)}",
                problems=[("value", "too long")],
            )
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, which JSON can spell ("\ud800")
            raise ValidationError(
                "a secret's value must be valid Unicode text (it holds a lone surrogate)",
                problems=[("value", "not valid Unicode")],
            ) from exc
        key = await self._sealing_key()
        nonce = random.token_bytes(_NONCE_BYTES)
        sealed = nonce + AESGCM(key.key).encrypt(nonce, data, _bound_to(account_id, name))
        now = time.time()

        def run(tx: Transaction) -> tuple[SecretInfo, bool]:
            if tx.conn.scalar(sa.select(accounts.c.id).where(accounts.c.id == account_id)) is None:
                raise NotFoundError(f"account {account_id!r} does not exist", account_id=account_id)
            where = (secrets_table.c.account_id == account_id) & (secrets_table.c.name == name)
            created_at = tx.conn.scalar(sa.select(secrets_table.c.created_at).where(where))
            values = {"ciphertext": sealed, "key_id": key.key_id, "updated_at": now}
            if created_at is None:
                tx.execute(
                    sa.insert(secrets_table).values(
                        account_id=account_id, name=name, created_at=now, **values
                    )
                )
                return SecretInfo(name, now, now), True
            tx.execute(sa.update(secrets_table).where(where).values(**values))
            return SecretInfo(name, created_at, now), False

        return await self.db.transact(run)

    async def delete(self, account_id: str, name: str) -> None:
        """Remove a secret.

        Raises:
            NotFoundError: the account has no secret of that name.
        """
        _check_name(name)

        def run(tx: Transaction) -> int:
            return tx.execute(
                sa.delete(secrets_table).where(
                    (secrets_table.c.account_id == account_id) & (secrets_table.c.name == name)
                )
            ).rowcount

        if await self.db.transact(run) == 0:
            raise _missing(account_id, name)

    # -- reading ------------------------------------------------------------------------------

    async def list(self, account_id: str) -> list[SecretInfo]:
        """The account's secrets by name: names and times only."""
        query = (
            sa.select(secrets_table.c.name, secrets_table.c.created_at, secrets_table.c.updated_at)
            .where(secrets_table.c.account_id == account_id)
            .order_by(secrets_table.c.name)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [SecretInfo(r.name, r.created_at, r.updated_at) for r in rows]

    async def reveal(self, account_id: str, names: Iterable[str]) -> dict[str, str]:
        """The values of the account's secrets ``names``: only for the service that sends them.

        Raises:
            NotFoundError: one of the names is not set in this account (the first one missing).
            ConfigError: a value was sealed with another key than this Fluxo's.
            StorageError: a sealed value was altered.
        """
        wanted = sorted(set(names))
        if not wanted:
            return {}
        query = sa.select(
            secrets_table.c.name, secrets_table.c.ciphertext, secrets_table.c.key_id
        ).where((secrets_table.c.account_id == account_id) & secrets_table.c.name.in_(wanted))
        rows = {r.name: r for r in await self.db.read(lambda conn: conn.execute(query).all())}
        for name in wanted:
            if name not in rows:
                raise _missing(account_id, name)
        key = await self._opening_key()
        values: dict[str, str] = {}
        for name in wanted:
            row = rows[name]
            if key is None or row.key_id != key.key_id:
                raise ConfigError(
                    f"secret {name!r} of account {account_id!r} was stored under key "
                    f"{row.key_id}, but this Fluxo's key is "
                    f"{key.key_id if key else 'not set'}; give every Fluxo process the same "
                    f"FLUXO_SECRET_KEY (or {KEY_FILE} in its home), or set the secret again",
                    secret=name,
                    setting="FLUXO_SECRET_KEY",
                )
            sealed = bytes(row.ciphertext)
            nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
            try:
                plain = AESGCM(key.key).decrypt(nonce, body, _bound_to(account_id, name))
            except InvalidTag as exc:
                raise StorageError(
                    f"secret {name!r} of account {account_id!r} does not open with its key: the "
                    "stored value was altered or moved; set the secret again",
                    secret=name,
                ) from exc
            values[name] = plain.decode("utf-8")
        return values

    # -- the key ------------------------------------------------------------------------------

    async def _opening_key(self) -> SecretKey | None:
        """The key, if there is one yet (a key file is only made when a secret is stored)."""
        if self._key is None and self._key_file is not None:
            self._key = await asyncio.to_thread(_load_key_file, self._key_file, False)
        return self._key

    async def _sealing_key(self) -> SecretKey:
        """The key, making the key file if this is the first secret ever stored."""
        if self._key is None and self._key_file is not None:
            self._key = await asyncio.to_thread(_load_key_file, self._key_file, True)
        if self._key is None:  # a created key file always loads; this keeps the type exact
            raise ConfigError("no key to seal secrets with; set FLUXO_SECRET_KEY")
        return self._key


def _bound_to(account_id: str, name: str) -> bytes:
    return f"fluxo-secret\0{account_id}\0{name}".encode()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValidationError(
            "a secret's name is 1-100 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit (e.g. stripe, crm.api-key)",
            problems=[("name", "invalid")],
        )


def _missing(account_id: str, name: str) -> NotFoundError:
    return NotFoundError(
        f"secret {name!r} is not set in account {account_id!r}; set it with "
        f"`fluxo secret set {name} --account {account_id}` (or PUT /v1/secrets/{name})",
        secret=name,
        account_id=account_id,
    )


def _load_key_file(path: Path, create: bool) -> SecretKey | None:
    """Read the key file; with ``create``, make it first if it is missing (0600, atomically)."""
    try:
        return SecretKey.parse(path.read_text(encoding="ascii"), f"the key file {path}")
    except FileNotFoundError:
        if not create:
            return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the secrets' key file {path} ({exc}); fix its permissions or set "
            "FLUXO_SECRET_KEY",
            setting="FLUXO_SECRET_KEY",
        ) from exc
    text = base64.b64encode(random.token_bytes(32)).decode("ascii")
    # Written whole to a private temporary file, then linked into place: a second process
    # creating the key at the same moment finds either no file or a complete one, never half.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{random.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return SecretKey.parse(path.read_text(encoding="ascii"), f"the key file {path}")
