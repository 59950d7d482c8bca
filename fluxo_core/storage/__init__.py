"""Persistence of the model: schema, migrations, transactions and wake-ups (SQLite, PostgreSQL)."""

from fluxo_core.storage import tables
from fluxo_core.storage.accounts import AccountStore, Principal
from fluxo_core.storage.bulk import bulk_insert
from fluxo_core.storage.database import Database, Subscription, Transaction, map_storage_errors

__all__ = [
    "AccountStore",
    "Database",
    "Principal",
    "Subscription",
    "Transaction",
    "bulk_insert",
    "map_storage_errors",
    "tables",
]
