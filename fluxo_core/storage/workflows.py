"""Workflow versions. Applying a changed spec makes a new version; running jobs keep theirs."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pydantic
import sqlalchemy as sa

from fluxo_core.errors import IRValidationError, NotFoundError
from fluxo_core.ir import DEFAULT_ENGINE, Workflow
from fluxo_core.ir._problems import problems_from_pydantic
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
    """Stored workflow versions of every account.

    Args:
        cache_size: parsed versions kept in memory (least recently used go first). A version
            never changes once stored, so a cached one is never stale; parsing and validating a
            document costs far more than reading it.
    """

    def __init__(
        self, db: Database, *, default_engine: str = DEFAULT_ENGINE, cache_size: int = 1024
    ) -> None:
        self.db = db
        self.default_engine = default_engine
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str, int], AppliedWorkflow] = OrderedDict()
        # Built once: every job creation runs these, and building a statement costs more than
        # SQLite takes to execute it.
        key = (workflows.c.account_id == sa.bindparam("account_id")) & (
            workflows.c.name == sa.bindparam("name")
        )
        self._newest = sa.select(sa.func.max(workflows.c.version)).where(key)
        self._document = sa.select(workflows.c.document).where(
            key, workflows.c.version == sa.bindparam("version")
        )

    async def apply(self, workflow: Workflow, account_id: str) -> AppliedWorkflow:
        """Store ``workflow`` for ``account_id``: a new version if its spec changed."""
        name = workflow.metadata.name
        digest = workflow.content_hash()
        engine = workflow.spec.engine or self.default_engine
        _check_readable(_stamp(workflow, account_id, 1))

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
                    document=_document(stamped),
                    created_at=time.time(),
                )
            )
            return version, True

        version, created = await self.db.transact(run)
        return AppliedWorkflow(_stamp(workflow, account_id, version), version, created)

    async def get(self, account_id: str, name: str, version: int | None = None) -> AppliedWorkflow:
        """A stored version (the newest when ``version`` is None)."""
        params: dict[str, Any] = {"account_id": account_id, "name": name}
        if version is None:
            latest = await self.db.read(lambda conn: conn.scalar(self._newest, params))
            if latest is None:
                raise _not_found(account_id, name, None)
            version = int(latest)
        cache_key = (account_id, name, version)
        cached = self._cache.get(cache_key)
        if cached is not None:
            self._cache.move_to_end(cache_key)
            return cached
        params["version"] = version
        document = await self.db.read(lambda conn: conn.scalar(self._document, params))
        if document is None:
            raise _not_found(account_id, name, version)
        applied = AppliedWorkflow(Workflow.model_validate_json(document), version, False)
        self._cache[cache_key] = applied
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return applied

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


def _not_found(account_id: str, name: str, version: int | None) -> NotFoundError:
    which = f"{name}@{version}" if version is not None else name
    return NotFoundError(
        f"no workflow {which!r} in account {account_id!r}; apply it first (fluxo apply -f FILE)",
        workflow=which,
    )


def _document(workflow: Workflow) -> str:
    # As set, not without Nones: see fluxo_core.ir.workflow_document.
    return workflow.model_dump_json(by_alias=True, exclude_unset=True)


def _check_readable(workflow: Workflow) -> None:
    """Nothing is stored that cannot be read back: the stored form must validate again.

    The metadata stamped on (account, version) is not validated by ``model_copy``, so this also
    catches an account id the IR does not accept.
    """
    try:
        Workflow.model_validate_json(_document(workflow))
    except (pydantic.ValidationError, IRValidationError) as exc:
        problems = (
            exc.problems if isinstance(exc, IRValidationError) else problems_from_pydantic(exc)
        )
        raise IRValidationError(
            f"workflow {workflow.metadata.name!r} would not read back as stored; fix the fields "
            "listed below",
            problems=problems,
            workflow=workflow.metadata.name,
        ) from exc


def _stamp(workflow: Workflow, account_id: str, version: int) -> Workflow:
    metadata = workflow.metadata.model_copy(update={"account": account_id, "version": str(version)})
    return workflow.model_copy(update={"metadata": metadata})
