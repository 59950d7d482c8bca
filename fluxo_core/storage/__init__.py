"""Persistence of the model: schema, migrations, transactions and wake-ups (SQLite, PostgreSQL).

SQL lives here (and in the SQL transport): the repositories below take the storage
:class:`Transaction` or read on their own, and hand back typed rows.
"""

from fluxo_core.storage import tables
from fluxo_core.storage.accounts import AccountStore, Principal, Role, TokenInfo
from fluxo_core.storage.bulk import bulk_insert, bulk_update, one_of
from fluxo_core.storage.calls import CallOutcome, CallOwner, CallRow, CallStore, NewCall
from fluxo_core.storage.database import Database, Subscription, Transaction, map_storage_errors
from fluxo_core.storage.inbox import InboxKey, InboxStore
from fluxo_core.storage.invoices import InvoiceHeader, InvoiceLine, InvoiceLines, InvoiceStore
from fluxo_core.storage.ledger import UsageLedger, UsageRecord
from fluxo_core.storage.outbox import OUTBOX_CHANNEL, NewOutboxMessage, OutboxMessage, OutboxStore
from fluxo_core.storage.queues import DeadLetterRow, LetterOwner, QueueStore
from fluxo_core.storage.secrets import SecretInfo, SecretKey, SecretStore
from fluxo_core.storage.service_terms import ServiceTermsStore, TermsRow
from fluxo_core.storage.services import ServiceRow, ServiceStore
from fluxo_core.storage.users import UserRow, UserStore

__all__ = [
    "OUTBOX_CHANNEL",
    "AccountStore",
    "CallOutcome",
    "CallOwner",
    "CallRow",
    "CallStore",
    "Database",
    "DeadLetterRow",
    "InboxKey",
    "InboxStore",
    "InvoiceHeader",
    "InvoiceLine",
    "InvoiceLines",
    "InvoiceStore",
    "LetterOwner",
    "NewCall",
    "NewOutboxMessage",
    "OutboxMessage",
    "OutboxStore",
    "Principal",
    "QueueStore",
    "Role",
    "SecretInfo",
    "SecretKey",
    "SecretStore",
    "ServiceRow",
    "ServiceStore",
    "ServiceTermsStore",
    "Subscription",
    "TermsRow",
    "TokenInfo",
    "Transaction",
    "UsageLedger",
    "UsageRecord",
    "UserRow",
    "UserStore",
    "bulk_insert",
    "bulk_update",
    "map_storage_errors",
    "one_of",
    "tables",
]
