"""Persistence of the model: schema, migrations, transactions and wake-ups (SQLite, PostgreSQL)."""

from fluxo_core.storage import tables
from fluxo_core.storage.accounts import AccountStore, Principal
from fluxo_core.storage.bulk import bulk_insert, bulk_update, one_of
from fluxo_core.storage.database import Database, Subscription, Transaction, map_storage_errors
from fluxo_core.storage.secrets import SecretInfo, SecretKey, SecretStore

__all__ = [
    "AccountStore",
    "Database",
    "Principal",
    "SecretInfo",
    "SecretKey",
    "SecretStore",
    "Subscription",
    "Transaction",
    "bulk_insert",
    "bulk_update",
    "map_storage_errors",
    "one_of",
    "tables",
]
