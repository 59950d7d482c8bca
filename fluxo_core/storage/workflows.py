"""Workflow versions. Applying a changed spec makes a new version; running jobs keep theirs."""

from __future__ import annotations

import hashlib
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
from fluxo_core.storage.tables import workflow_sources, workflows

__all__ = ["AppliedWorkflow", "WorkflowStore"]


@dataclass(frozen=True)
class AppliedWorkflow:
    workflow: Workflow  # with metadata.account and metadata.version filled in
    version: int
    created: bool  # False when the same spec was applied before (a no-op)
    source_created: bool = False  # this apply stored the version's source (spec.source)

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

    async def apply(
        self, workflow: Workflow, account_id: str, *, source: bytes | None = None
    ) -> AppliedWorkflow:
        """Store ``workflow`` for ``account_id``: a new version if its spec changed.

        Args:
            source: the flow ``spec.source`` names (its ``sha256`` is the digest of these
                bytes), stored in the same transaction as the version, once per account and
                digest. Without it, a ``spec.source`` must name a flow stored before.

        Raises:
            IRValidationError: ``spec.source`` names a flow this account never sent.
        """
        name = workflow.metadata.name
        digest = workflow.content_hash()
        engine = workflow.spec.engine or self.default_engine
        _check_readable(_stamp(workflow, account_id, 1))
        ref = workflow.spec.source
        if ref is not None and ref.flow is not None:
            raise ValueError("spec.source.flow is sent, never stored: pass it as source=")
        source_key = ref.sha256 if ref is not None else None
        if source is not None and (
            source_key is None or hashlib.sha256(source).hexdigest() != source_key
        ):
            raise ValueError("source does not match spec.source.sha256")

        def run(tx: Transaction) -> tuple[int, bool, bool]:
            key = (workflows.c.account_id == account_id) & (workflows.c.name == name)
            same = tx.conn.scalar(
                sa.select(workflows.c.version).where(key, workflows.c.content_hash == digest)
            )
            if same is not None:
                return int(same), False, False
            source_created = False
            if ref is not None:
                source_created = self._store_source(tx, account_id, ref.format, source_key, source)
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
            return version, True, source_created

        version, created, source_created = await self.db.transact(run)
        return AppliedWorkflow(
            _stamp(workflow, account_id, version), version, created, source_created
        )

    def _store_source(
        self,
        tx: Transaction,
        account_id: str,
        kind: str,
        sha256: str | None,
        content: bytes | None,
    ) -> bool:
        """Store a version's source unless stored already; True when this call stored it."""
        where = (workflow_sources.c.account_id == account_id) & (
            workflow_sources.c.sha256 == sha256
        )
        if tx.conn.scalar(sa.select(sa.func.count()).where(where)):
            return False
        if content is None or sha256 is None:
            raise IRValidationError(
                "spec.source names a flow this account has not sent: apply the workflow with "
                "`fluxo apply -f FILE`, which reads the flow file spec.source.file names and "
                "sends it along",
                problems=[("spec.source", "no stored flow with this sha256")],
            )
        tx.execute(
            sa.insert(workflow_sources).values(
                account_id=account_id,
                sha256=sha256,
                format=kind,
                content=content,
                created_at=time.time(),
            )
        )
        return True

    async def source(self, account_id: str, sha256: str) -> bytes:
        """The stored flow a version's ``spec.source.sha256`` names."""
        query = sa.select(workflow_sources.c.content).where(
            (workflow_sources.c.account_id == account_id) & (workflow_sources.c.sha256 == sha256)
        )
        content = await self.db.read(lambda conn: conn.scalar(query))
        if content is None:
            raise NotFoundError(
                f"no stored source {sha256} in account {account_id!r}", source=sha256
            )
        return bytes(content)

    async def discard(self, applied: AppliedWorkflow) -> None:
        """Undo :meth:`apply` of a version nothing could run (its engine refused it): the
        version, and its source if that apply stored it. A version applied before stays."""
        if not applied.created:
            return
        account = applied.workflow.metadata.account
        name = applied.workflow.metadata.name
        ref = applied.workflow.spec.source

        def run(tx: Transaction) -> None:
            tx.execute(
                sa.delete(workflows).where(
                    (workflows.c.account_id == account)
                    & (workflows.c.name == name)
                    & (workflows.c.version == applied.version)
                )
            )
            if applied.source_created and ref is not None:
                tx.execute(
                    sa.delete(workflow_sources).where(
                        (workflow_sources.c.account_id == account)
                        & (workflow_sources.c.sha256 == ref.sha256)
                    )
                )

        await self.db.transact(run)
        self._cache.pop((str(account), name, applied.version), None)

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
