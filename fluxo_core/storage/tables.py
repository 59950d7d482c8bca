"""The database schema (SQLAlchemy Core). Alembic migrations under ``migrations/`` create it.

Times that the queue compares (``visible_at``) are float epoch seconds so that SQLite and
PostgreSQL order and compare them the same way; money is integer micro-units (1e-6 of the currency)
so no float ever touches a price.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row per message waiting in a queue (SQL transport). A claimed message is hidden until
# `visible_at` (its lease); acking deletes the row in the consumer's result transaction.
queue_messages = Table(
    "queue_messages",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("queue", String(200), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False, default="{}"),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=5),
    Column("visible_at", Float, nullable=False),
    Column("lease_token", String(32)),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Index("ix_queue_messages_ready", "queue", "visible_at", "id"),
)

# Messages committed with a state change, waiting for the relay to publish them to a broker.
outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("queue", String(200), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("delay_s", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
)

# Which messages a consumer has already applied: the exactly-once guard.
inbox = Table(
    "inbox",
    metadata,
    Column("consumer", String(200), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("processed_at", Float, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("blocked", Boolean, nullable=False, default=False),
    Column("blocked_reason", Text),
    Column("created_at", Float, nullable=False),
)

# API tokens are stored as SHA-256 digests; the token itself is shown once, at creation.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    # Set for an engine's token: it acts only for live jobs of that engine (see AccountStore).
    Column("engine", String(20)),
)

# Services known to the platform (declared by the processes that run them).
services = Table(
    "services",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", String(50), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("input_schema", Text),
    Column("output_schema", Text),
    Column("price_per_call_micros", BigInteger, nullable=False, default=0),
    Column("price_per_item_micros", BigInteger, nullable=False, default=0),
    Column("currency", String(3), nullable=False, default="EUR"),
    Column("max_attempts", Integer, nullable=False, default=5),
    Column("timeout_s", Float, nullable=False, default=30.0),
    Column("updated_at", Float, nullable=False),
)

# One row per service call: its request, status and result. The call id is the request packet id.
calls = Table(
    "calls",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("account_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("service", String(100), nullable=False),
    Column("version", String(50), nullable=False),
    Column("job_id", String(128)),
    Column("step_id", String(128)),
    Column("status", String(20), nullable=False),
    Column("request", LargeBinary, nullable=False),
    Column("result", LargeBinary),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reply_to", String(200)),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Index("ix_calls_account_created", "account_id", "created_at"),
    Index("ix_calls_job", "job_id"),
)

# The usage ledger: one record per completed call, committed with its result.
usage_records = Table(
    "usage_records",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("call_id", String(128), nullable=False),
    Column("account_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("service", String(100), nullable=False),
    Column("version", String(50), nullable=False),
    Column("job_id", String(128)),
    Column("step_id", String(128)),
    Column("units", Integer, nullable=False),
    Column("unit_price_micros", BigInteger, nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("call_id"),
    Index("ix_usage_records_account_created", "account_id", "created_at"),
)

# --- workflows and jobs --------------------------------------------------------------------------

# Every applied version of a workflow; re-applying an unchanged spec finds its version by hash.
workflows = Table(
    "workflows",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("engine", String(20), nullable=False),
    Column("document", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("account_id", "name", "content_hash"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("account_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("workflow", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("engine", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("idempotency_key", String(200)),
    Column("input", LargeBinary, nullable=False),
    Column("result", LargeBinary),
    Column("error", Text),
    Column("active", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("run_id", String(253)),  # the engine's name for the run (external engines)
    UniqueConstraint("account_id", "workflow", "idempotency_key"),
    Index("ix_jobs_account_created", "account_id", "created_at"),
    Index("ix_jobs_account_workflow_status", "account_id", "workflow", "status"),
)

# One row per execution of a step in a job; ``key`` is the step id plus its fan-out position.
job_steps = Table(
    "job_steps",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("key", String(500), primary_key=True),
    Column("step_id", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    Column("call_id", String(128)),
    Column("input", LargeBinary),
    Column("output", LargeBinary),
    Column("error", Text),
    Column("context", Text),
    Column("seq", Integer, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Index("ix_job_steps_call", "call_id"),
)

# Branch results waiting at a join until every item of their split has arrived.
job_joins = Table(
    "job_joins",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("join_key", String(500), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("payload", LargeBinary, nullable=False),
)

# --- secrets -------------------------------------------------------------------------------------

# An account's named secrets (API keys the http service sends), encrypted with AES-GCM under the
# key in the Fluxo home or FLUXO_SECRET_KEY; ``key_id`` names that key, so a value stored under
# another key is reported as such instead of failing to decrypt with no reason given.
secrets = Table(
    "secrets",
    metadata,
    Column("account_id", String(128), ForeignKey("accounts.id"), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# --- blocks --------------------------------------------------------------------------------------

# A block stops an account's work on one target (its whole account, a user, a workflow, a service
# or a trigger) from ``placed_at`` until it is lifted or ``ends_at`` passes. Rows are never
# deleted: lifting fills ``lifted_at``/``lifted_by``.
blocks = Table(
    "blocks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", String(128), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("target", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("placed_by", String(300), nullable=False),
    Column("placed_at", Float, nullable=False),
    Column("ends_at", Float),
    Column("lifted_by", String(300)),
    Column("lifted_at", Float),
    Index("ix_blocks_lifted_at", "lifted_at"),
    Index("ix_blocks_account_placed", "account_id", "placed_at"),
)

# Every place and lift of a block, append-only.
block_audit = Table(
    "block_audit",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("block_id", String(64), nullable=False),
    Column("account_id", String(128), nullable=False),
    Column("action", String(10), nullable=False),  # place | lift
    Column("actor", String(300), nullable=False),
    Column("at", Float, nullable=False),
    Column("detail", Text),
    Index("ix_block_audit_account_seq", "account_id", "seq"),
)

# A paused workflow: its new jobs are created queued and wait until it is resumed.
workflow_pauses = Table(
    "workflow_pauses",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("workflow", String(100), primary_key=True),
    Column("paused_by", String(300), nullable=False),
    Column("paused_at", Float, nullable=False),
)
