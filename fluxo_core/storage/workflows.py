"""Workflow versions. Applying a changed spec makes a new version; running jobs keep theirs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from fluxo_core.errors import NotFoundError
from fluxo_core.ir import Workflow
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import workflows

__all__ = ["AppliedWorkflow", "WorkflowStore"]


@dataclass(frozen=True)
class AppliedWorkflow:
    workflow: Workflow  # with metadata.account and metadata.version filled in
    version: int
    created: bool  # False when the same spec was applied before (a no-op)

    @property
    def ref(self) -> str:
        return f"{self.workflow.metadata.name}@{self.version}"


class WorkflowStore:
    def __init__(self, db: Database, *, default_engine: str = "step") -> None:
        self.db = db
        self.default_engine = default_engine

    async def apply(self, workflow: Workflow, account_id: str) -> AppliedWorkflow:
        """Store ``workflow`` for ``account_id``: a new version if its spec changed."""
        name = workflow.metadata.name
        digest = workflow.content_hash()
        engine = workflow.spec.engine or self.default_engine

        def run(tx: Transaction) -> tuple[int, bool]:
            key = (workflows.c.account_id == account_id) & (workflows.c.name == name)
            same = tx.conn.scalar(
                sa.select(workflows.c.version).where(key, workflows.c.content_hash == digest)
            )
            if same is not None:
                return int(same), False
            latest = tx.conn.scalar(sa.select(sa.func.max(workflows.c.version)).where(key))
            version = int(latest or 0) + 1
            stamped = _stamp(workflow, account_id, version)
            tx.execute(
                sa.insert(workflows).values(
                    account_id=account_id,
                    name=name,
                    version=version,
                    content_hash=digest,
                    engine=engine,
                    document=stamped.model_dump_json(by_alias=True, exclude_none=True),
                    created_at=time.time(),
                )
            )
            return version, True

        version, created = await self.db.transact(run)
        return AppliedWorkflow(_stamp(workflow, account_id, version), version, created)

    async def get(self, account_id: str, name: str, version: int | None = None) -> AppliedWorkflow:
        """A stored version (the newest when ``version`` is None)."""
        query = sa.select(workflows.c.document, workflows.c.version).where(
            workflows.c.account_id == account_id, workflows.c.name == name
        )
        if version is not None:
            query = query.where(workflows.c.version == version)
        query = query.order_by(workflows.c.version.desc()).limit(1)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            which = f"{name}@{version}" if version is not None else name
            raise NotFoundError(
                f"no workflow {which!r} in account {account_id!r}; apply it first "
                "(fluxo apply -f FILE)",
                workflow=which,
            )
        return AppliedWorkflow(Workflow.model_validate_json(row.document), row.version, False)

    async def list(self, account_id: str) -> list[AppliedWorkflow]:
        """The newest version of every workflow of the account."""
        newest = (
            sa.select(workflows.c.name, sa.func.max(workflows.c.version).label("v"))
            .where(workflows.c.account_id == account_id)
            .group_by(workflows.c.name)
            .subquery()
        )
        query = (
            sa.select(workflows.c.document, workflows.c.version)
            .join(newest, (workflows.c.name == newest.c.name) & (workflows.c.version == newest.c.v))
            .where(workflows.c.account_id == account_id)
            .order_by(workflows.c.name)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [
            AppliedWorkflow(Workflow.model_validate_json(r.document), r.version, False)
            for r in rows
        ]


def _stamp(workflow: Workflow, account_id: str, version: int) -> Workflow:
    metadata = workflow.metadata.model_copy(update={"account": account_id, "version": str(version)})
    return workflow.model_copy(update={"metadata": metadata})
