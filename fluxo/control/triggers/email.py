"""Email triggers: each new message of a mailbox (IMAP) starts one job.

The source watches the trigger's folder with :class:`~fluxo.control.mailbox.MailboxWatcher`
and fires each new message that passes the filters with the event id ``mid:<Message-ID>`` (or
``uid:<UIDVALIDITY>:<UID>`` for a message without one), so the same message delivered again,
or offered again after a crash, gives the first job back instead of a second. Only after
``fire`` returned is the message marked seen or moved (``spec.email.after``): a crash between
receiving and marking loses nothing, since an unseen message is offered again on reconnect.

Attachments are stored in the :class:`~fluxo_core.storage.attachments.AttachmentStore`; the
payload lists each with its reference, fetched at
``GET /v1/triggers/{name}/attachments/{ref}``.

A held trigger (paused, blocked) keeps the message unseen and offers it again every
``HELD_RETRY_S``; a job refused for another reason (a quota, a workflow not applied) leaves
the message unseen too, and it comes back on the next reconnect. The watcher's health becomes
the trigger's: ``connected``, or ``degraded`` with the error while it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any, Final

from fluxo.control.mailbox import (
    AttachmentInfo,
    MailboxError,
    MailboxHealth,
    MailboxSettings,
    MailboxWatcher,
    MailMessage,
    MessageKey,
)
from fluxo.control.triggers.source import TriggerSink
from fluxo_core.errors import (
    ConfigError,
    FluxoError,
    NotFoundError,
    PayloadTooLargeError,
    TriggerHeldError,
)
from fluxo_core.storage import SecretStore
from fluxo_core.storage.attachments import AttachmentStore
from fluxo_core.storage.triggers import TriggerRow

if TYPE_CHECKING:
    from services import StoredAttachment
    from services.http.policy import HostPolicy

__all__ = ["HELD_RETRY_S", "EmailSource", "MailAttachments", "email_event_id", "email_sources"]

log = logging.getLogger(__name__)

HELD_RETRY_S: Final = 5.0
"""How often a held trigger's waiting message is offered again."""
MAX_EVENT_ID: Final = 180


def email_event_id(message: MailMessage) -> str:
    """What makes a message the same one: its Message-ID, else where it is in the folder."""
    if message.message_id:
        return f"mid:{message.message_id}"[:MAX_EVENT_ID]
    return f"uid:{message.key.folder}:{message.key.dedup_key}"[:MAX_EVENT_ID]


class EmailSource:
    """The source of one email trigger (see the module docstring).

    Args:
        row: the trigger (its ``spec.email``).
        secrets: where ``passwordSecret`` is read, at each connection.
        attachments: where attachments are stored.
        policy: the hosts the mailbox may be on (checked at every connection).
        overrides: settings of the watcher the spec does not hold (the tests' short backoff).
    """

    def __init__(
        self,
        row: TriggerRow,
        secrets: SecretStore | None,
        attachments: AttachmentStore,
        *,
        policy: HostPolicy,
        **overrides: Any,
    ) -> None:
        self.row = row
        self.secrets = secrets
        self.attachments = attachments
        self.policy = policy
        self.overrides = overrides
        self.config: dict[str, Any] = row.spec["email"]

    def settings(self) -> MailboxSettings:
        c = self.config
        context: ssl.SSLContext | None = None
        if c.get("caCertificate"):
            try:
                context = ssl.create_default_context(cadata=c["caCertificate"])
            except (ssl.SSLError, ValueError):
                raise ConfigError(
                    f"trigger {self.row.name!r}: spec.email.caCertificate is not a PEM certificate",
                    setting="spec.email.caCertificate",
                ) from None
        return MailboxSettings(
            host=c["host"],
            port=int(c["port"]),
            username=c["username"],
            password=self._password,
            security=c.get("security", "tls"),
            folder=c.get("folder", "INBOX"),
            from_filter=c.get("fromFilter"),
            subject_filter=c.get("subjectFilter"),
            poll_interval_s=float(c.get("pollIntervalS", 30.0)),
            tls_context=context,
            host_policy=self.policy,
            **self.overrides,
        )

    async def _password(self) -> str:
        name = self.config["passwordSecret"]
        if self.secrets is None:
            raise ConfigError(
                "this installation has no secret store (FLUXO_SECRET_KEY): an email trigger "
                "reads its password from one",
                setting="secrets",
            )
        try:
            return (await self.secrets.reveal(self.row.account_id, [name]))[name]
        except NotFoundError:
            # Degraded, not stopped: the watcher tries again, and a secret set meanwhile is read.
            raise MailboxError(
                f"the secret {name!r} (spec.email.passwordSecret) is not set in account "
                f"{self.row.account_id!r}; set it with fluxo secret set {name}",
                retryable=True,
            ) from None

    async def _store(self, key: MessageKey, info: AttachmentInfo, data: bytes) -> str:
        return await self.attachments.put(
            self.row.account_id, self.row.name, info.filename, info.content_type, data
        )

    async def run(self, sink: TriggerSink) -> None:
        async def on_health(health: MailboxHealth) -> None:
            if health.state == "connected":
                await sink.health("connected")
            elif health.state == "degraded":
                await sink.health("degraded", health.error)

        try:
            settings = self.settings()
        except ConfigError as exc:
            await sink.health("failing", exc.message)
            raise
        watcher = MailboxWatcher(settings, on_health=on_health, store_attachment=self._store)
        try:
            async for message in watcher.messages():
                if await self._fire(sink, message):
                    await self._done(watcher, message)
        finally:
            with contextlib.suppress(Exception):
                await watcher.aclose()

    async def _fire(self, sink: TriggerSink, message: MailMessage) -> bool:
        """Fire the message's job; False when it was refused (the message stays unseen)."""
        while True:
            try:
                await sink.fire(email_event_id(message), message.payload())
                return True
            except TriggerHeldError:
                await asyncio.sleep(HELD_RETRY_S)  # held: the same message, once it is lifted
            except FluxoError as exc:  # recorded as the trigger's last error by the service
                log.warning(
                    "email trigger %s/%s: message %s not started: %s",
                    self.row.account_id,
                    self.row.name,
                    message.key.dedup_key,
                    exc.message,
                )
                return False

    async def _done(self, watcher: MailboxWatcher, message: MailMessage) -> None:
        after = self.config.get("after", "seen")
        try:
            if after.startswith("move:"):
                await watcher.move(message.key, after.removeprefix("move:"))
            else:
                await watcher.mark_seen(message.key)
        except FluxoError as exc:
            # The job is committed; the message is offered again after a reconnect and the
            # event id makes that a repeat, so nothing is lost or doubled.
            log.warning(
                "email trigger %s/%s: message %s could not be marked (%s): %s",
                self.row.account_id,
                self.row.name,
                message.key.dedup_key,
                after,
                exc.message,
            )


def email_sources(
    secrets: SecretStore | None,
    attachments: AttachmentStore,
    *,
    policy: HostPolicy,
    **overrides: Any,
) -> dict[str, Any]:
    """The source factory of the ``email`` type, for the supervisor; ``policy``: the hosts a
    mailbox may be on (:mod:`fluxo.control.hosts`)."""

    def build(row: TriggerRow) -> EmailSource:
        return EmailSource(row, secrets, attachments, policy=policy, **overrides)

    return {"email": build}


class MailAttachments:
    """The attachments email triggers stored, as ``email-send`` reads them by reference
    (:class:`services.AttachmentSource`): a job can forward the files of the mail it started
    with. Within the account only."""

    def __init__(self, store: AttachmentStore) -> None:
        self.store = store

    async def read_attachment(
        self, account_id: str, ref: str, *, max_bytes: int
    ) -> StoredAttachment:
        from services import StoredAttachment

        found = await self.store.find(account_id, ref)
        if found.size > max_bytes:
            raise PayloadTooLargeError(
                f"attachment {ref[:64]!r} is {found.size} bytes, over the {max_bytes} bytes "
                "left for this email's attachments",
                limit=max_bytes,
                size=found.size,
            )
        return StoredAttachment(found.filename, found.content_type, found.data)
