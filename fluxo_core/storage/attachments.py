"""The attachments of mail an email trigger received, kept for the jobs that read them.

A job's payload lists each attachment with a reference (``att_<hex>``); the bytes are fetched by
it, within the account (``GET /v1/triggers/{name}/attachments/{ref}``). The reference is a
digest of the account, the trigger and the bytes, so a message offered again (after a crash
before it was marked seen, or delivered twice) stores nothing new. Each attachment is bounded by
the mailbox's ``max_attachment_bytes``; the rows of a trigger go when it is deleted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlalchemy as sa

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import NotFoundError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import trigger_attachments

__all__ = ["Attachment", "AttachmentStore", "attachment_ref"]


@dataclass(frozen=True, slots=True)
class Attachment:
    ref: str
    account_id: str
    trigger: str
    filename: str
    content_type: str
    size: int
    data: bytes


def attachment_ref(account_id: str, trigger: str, data: bytes) -> str:
    digest = hashlib.sha256()
    for part in (account_id.encode(), trigger.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(data)
    return f"att_{digest.hexdigest()[:48]}"


class AttachmentStore:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def put(
        self, account_id: str, trigger: str, filename: str, content_type: str, data: bytes
    ) -> str:
        """Store ``data`` (once per account, trigger and content); its reference."""
        ref = attachment_ref(account_id, trigger, data)
        now = self.clock.time()

        def run(tx: Transaction) -> None:
            found = tx.conn.execute(
                sa.select(trigger_attachments.c.ref).where(trigger_attachments.c.ref == ref)
            ).first()
            if found is None:
                tx.execute(
                    sa.insert(trigger_attachments).values(
                        ref=ref,
                        account_id=account_id,
                        trigger=trigger,
                        filename=filename[:255],
                        content_type=content_type[:200],
                        size=len(data),
                        data=data,
                        created_at=now,
                    )
                )

        await self.db.transact(run)
        return ref

    async def get(self, account_id: str, trigger: str, ref: str) -> Attachment:
        """Raises: NotFoundError: no such attachment of this account's trigger (another
        account's is not found either)."""
        table = trigger_attachments
        query = sa.select(table).where(
            table.c.ref == ref, table.c.account_id == account_id, table.c.trigger == trigger
        )
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFoundError(
                f"no attachment {ref[:64]!r} of trigger {trigger!r} in account {account_id!r}; "
                "the job's payload lists the references (attachments[].ref)",
                kind="attachment",
                id=ref[:64],
            )
        return Attachment(
            row.ref,
            row.account_id,
            row.trigger,
            row.filename,
            row.content_type,
            int(row.size),
            bytes(row.data),
        )

    async def find(self, account_id: str, ref: str) -> Attachment:
        """The attachment ``ref`` of any trigger of the account (what a job's step, such as
        ``email-send``, names it by).

        Raises:
            NotFoundError: no such attachment in this account.
        """
        table = trigger_attachments
        query = sa.select(table.c.trigger).where(
            table.c.ref == ref, table.c.account_id == account_id
        )
        trigger = await self.db.read(lambda conn: conn.scalar(query))
        if trigger is None:
            raise NotFoundError(
                f"no attachment {ref[:64]!r} in account {account_id!r}; an email trigger's job "
                "payload lists the references (attachments[].ref)",
                kind="attachment",
                id=ref[:64],
            )
        return await self.get(account_id, trigger, ref)

    async def delete_trigger(self, account_id: str, trigger: str) -> int:
        """Remove the attachments of a deleted trigger; how many."""
        table = trigger_attachments

        def run(tx: Transaction) -> int:
            result = tx.execute(
                sa.delete(table).where(table.c.account_id == account_id, table.c.trigger == trigger)
            )
            return int(result.rowcount or 0)

        return await self.db.transact(run)
