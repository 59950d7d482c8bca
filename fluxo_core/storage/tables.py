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
    # Users, roles and tokens (migration 0005_auth): a public id to list and revoke a token by
    # (never its value or digest), the role it acts with, "api" or "session", an optional expiry,
    # and the last use (written at most once a minute per token).
    Column("id", String(32), unique=True),
    Column("role", String(20), nullable=False, default="account-admin"),
    Column("kind", String(10), nullable=False, default="api"),
    Column("expires_at", Float),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)

# The users of an account, one role each; a password (argon2 hash) only for console sign-in.
users = Table(
    "users",
    metadata,
    Column("account_id", String(128), ForeignKey("accounts.id"), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("password_hash", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
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
    # The price policy: whether failed, retried and cancelled calls are billed (default: not).
    Column("bill_failed", Boolean, nullable=False, default=False, server_default="0"),
    Column("bill_retried", Boolean, nullable=False, default=False, server_default="0"),
    Column("bill_cancelled", Boolean, nullable=False, default=False, server_default="0"),
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
    # A failed call a job retry superseded: the id of the call its packet is now answered by
    # (the step's next attempt; see fluxo.control.job_control).
    Column("retry_id", String(128)),
    Index("ix_calls_account_created", "account_id", "created_at"),
    Index("ix_calls_job", "job_id"),
    Index("ix_calls_account_status", "account_id", "status", "created_at"),
    # What a service output trigger reads: an account's calls of one service, as they finish.
    Index("ix_calls_account_service_finished", "account_id", "service", "finished_at"),
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
    # What the record charges: a call's final outcome (succeeded, failed, cancelled), one retried
    # attempt of a call (retried, with its attempt number), or a credit (a negative amount with
    # its reason and who made it). A call has at most one record per outcome and attempt
    # number (0: its final outcome), so its success is charged once, whatever happened before.
    Column("outcome", String(20), nullable=False, default="succeeded", server_default="succeeded"),
    Column("attempt", Integer, nullable=False, default=0, server_default="0"),
    Column("reason", Text),
    Column("created_by", String(128)),
    UniqueConstraint("call_id", "outcome", "attempt"),
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

# The flow files workflows were imported from (spec.source), once per account and digest: the
# versions that name one share it, so editing an imported workflow does not copy its flow.
workflow_sources = Table(
    "workflow_sources",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("format", String(20), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
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
    # A workflow service's child job: the caller's job, step and call, and the service.
    Column("parent_job_id", String(128)),
    Column("parent_step_id", String(100)),
    Column("parent_call_id", String(128)),
    Column("via_service", String(100)),
    UniqueConstraint("account_id", "workflow", "idempotency_key"),
    Index("ix_jobs_account_created", "account_id", "created_at"),
    Index("ix_jobs_account_workflow_status", "account_id", "workflow", "status"),
    Index("ix_jobs_account_status", "account_id", "status", "created_at"),
    Index("ix_jobs_parent_call", "parent_call_id"),
    Index("ix_jobs_parent_job", "parent_job_id"),
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

# --- invoices ------------------------------------------------------------------------------------

# Issued invoices: a draft is computed from the ledger and never stored; issuing freezes its lines
# here, numbered per account (``number``: ACME-2026-0001, ``seq`` the account's counter).
invoices = Table(
    "invoices",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("number", String(160), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("issued_by", String(128), nullable=False),
    UniqueConstraint("number"),
    UniqueConstraint("account_id", "seq"),
)

# The frozen lines of an issued invoice: usage, one per service, workflow and currency; and
# credits, one per credit entry (``description``: its reason).
invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("kind", String(10), nullable=False),
    Column("description", Text),
    Column("service", String(100), nullable=False),
    Column("workflow", String(100)),
    Column("currency", String(3), nullable=False),
    Column("calls", Integer, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
)

# --- declarative resources -----------------------------------------------------------------------

# One row per resource (kind and name) of an account: what ``fluxo apply`` wrote (``spec``, JSON)
# and what the platform's controllers wrote (``status``, JSON). ``resource_version`` grows on
# every write, ``generation`` only when the spec changes; an apply naming a resource_version that
# is not the stored one is refused (see ResourceStore).
resources = Table(
    "resources",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("kind", String(40), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("uid", String(36), nullable=False),
    Column("api_version", String(40), nullable=False),
    Column("labels", Text, nullable=False),
    Column("spec", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("resource_version", BigInteger, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("uid"),
)

# --- quotas and limits (fluxo_core/storage/quotas.py) ---------------------------------------------

# A named limit of one account: calls or spend per UTC day/month, concurrent jobs, or a request
# rate, for the whole account or one of its workflows or services. Spend is in micros of
# ``currency``; a rate is ``limit_value`` requests per ``period`` (second, minute, hour).
quotas = Table(
    "quotas",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("scope", String(20), nullable=False),
    Column("target", String(100)),
    Column("kind", String(20), nullable=False),
    Column("limit_value", BigInteger, nullable=False),
    Column("period", String(10)),
    Column("currency", String(3)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# What a calls or spend quota used in one period (``period_key``: 2026-12-06 or 2026-12). One row
# per quota and period, updated by an atomic conditional upsert in the transaction that writes the
# calls (or their usage records), so concurrent writers never count past the limit.
quota_usage = Table(
    "quota_usage",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("period_key", String(10), primary_key=True),
    Column("used", BigInteger, nullable=False),
)

# A quota reached 80% or 100% in a period: once per quota, period and threshold (the unique key).
quota_events = Table(
    "quota_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("account_id", String(128), nullable=False),
    Column("quota", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("period_key", String(10), nullable=False),
    Column("threshold", Integer, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("limit_value", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("account_id", "quota", "period_key", "threshold"),
    Index("ix_quota_events_account_created", "account_id", "created_at"),
)

# Calls an engine wrote (it cannot refuse them in its own transaction) past a calls quota: the
# worker refuses them instead of running them.
quota_refusals = Table(
    "quota_refusals",
    metadata,
    Column("call_id", String(128), primary_key=True),
    Column("account_id", String(128), nullable=False),
    Column("quota", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
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

# The terms the platform applied to a service (a Service resource): they override what the
# service's code declares (the `services` row), field by field where set (NULL: the code's).
# `version` is one version, or "*" for every version. Platform-wide: no account column.
service_terms = Table(
    "service_terms",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", String(50), primary_key=True),
    Column("price_per_call_micros", BigInteger),
    Column("price_per_item_micros", BigInteger),
    Column("currency", String(3)),
    Column("max_attempts", Integer),
    Column("timeout_s", Float),
    Column("applied_at", Float, nullable=False),
)
# One row per Trigger resource: what the supervisor runs, and its health. Written by the
# trigger controller (spec) and by whichever process fires it (health, next fire time).
trigger_state = Table(
    "trigger_state",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("workflow", String(100), nullable=False),
    Column("type", String(20), nullable=False),
    Column("spec", Text, nullable=False),  # the resource's spec as JSON
    Column("generation", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("paused_by", String(300)),  # fluxo triggers pause: who; NULL when running
    Column("paused_at", Float),
    Column("health", String(12), nullable=False),  # connected | degraded | failing
    Column("held", Text),  # why it does not fire now (a block, a paused workflow), or NULL
    Column("next_fire_at", Float),  # cron: the slot it fires next; claimed by compare-and-set
    Column("last_event_id", String(200)),
    Column("last_event_at", Float),
    Column("last_job_id", String(64)),
    Column("last_error", Text),
    Column("jobs_created", BigInteger, nullable=False),
    Column("lag_s", Float),  # how late the last event started its job
    Column("updated_at", Float, nullable=False),
    # A service output trigger: the finish time of calls it has read up to (migration 0018).
    Column("cursor", Float),
)
Index("ix_trigger_state_type_next", trigger_state.c.type, trigger_state.c.next_fire_at)

# Attachments of the mail an email trigger received, fetched by the reference a job's payload
# holds (GET /v1/triggers/{name}/attachments/{ref}). The reference is a digest of the account,
# trigger and bytes: the same attachment delivered again is one row. Deleted with its trigger.
trigger_attachments = Table(
    "trigger_attachments",
    metadata,
    Column("ref", String(64), primary_key=True),
    Column("account_id", String(128), nullable=False),
    Column("trigger", String(100), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_trigger_attachments_account_trigger", "account_id", "trigger"),
)

# Calls whose handler answered DEFERRED and that are not completed yet (see
# service_runtime.deferred): a small table, so what looks for open ones never scans the calls.
deferred_calls = Table(
    "deferred_calls",
    metadata,
    Column("call_id", String(128), primary_key=True),
    Column("service", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_deferred_calls_service", "service"),
)

# Node-RED context kept by the step engine for the flows it runs: one row per scope, its keys as
# one JSON object. Flow and node context belong to an account's workflow (scope "flow",
# "node:<node id>"); global context to the account (workflow ""). `version` counts the writes,
# so a step that read an older version is run again instead of writing over a newer one.
nodered_context = Table(
    "nodered_context",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("workflow", String(100), primary_key=True),
    Column("scope", String(300), primary_key=True),
    Column("data", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Files of the Node-RED `file`/`file in` nodes the step engine runs: a virtual filesystem per
# account (fluxo_core.storage.nodered_files), never the server's. `path` is normalized and
# absolute; `kind` is "file" or "dir". `version` counts the writes of a file.
nodered_files = Table(
    "nodered_files",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)
