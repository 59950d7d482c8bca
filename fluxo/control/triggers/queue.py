"""Queue triggers: each message of a RabbitMQ queue or an MQTT topic starts one job.

A message is acknowledged only after ``fire`` returned, so a Fluxo that dies before that leaves
it with the broker, which delivers it again; the event id makes the repeat give the first job
back. The event id is the message's id: AMQP's ``message_id`` property, or for MQTT (which has
none) the JSON body's ``spec.queue.idField`` (default ``id``). A message without one is
identified by a digest of its body, so identical bodies are one event: publish with an id to
send the same body twice.

The body must be JSON (an object, array or value) within ``maxMessageBytes`` and the document
limits. A **poison** message (over the size, not UTF-8 JSON, or refused by the job for good, such
as an input the workflow does not take) is not retried: it goes to a dead-letter place with the
reason, then is acknowledged:

- RabbitMQ: the durable queue ``deadLetterQueue`` (default ``<queue>.dead``), the original body
  and headers with ``x-fluxo-dead-reason`` and ``x-fluxo-trigger`` added (published with
  publisher confirms before the original is acknowledged);
- MQTT: the topic ``deadLetterTopic`` (default ``fluxo/dead-letters/<trigger>``), a JSON
  ``{"reason", "trigger", "topic", "body"}`` (the body as text, or Base64 with
  ``"encoding": "base64"``), at QoS 1.

A held trigger (paused, blocked) keeps the message unacknowledged and offers it again every
``HELD_RETRY_S``; a retryable refusal (the database away, a quota) is retried with backoff.

MQTT: QoS 1 with a persistent session (``clean_session`` false, the stable client id
``clientId``, default ``fluxo-<account>-<trigger>``), so the broker keeps what is published
while Fluxo is down. The PUBACK is sent after ``fire`` returned (paho's manual acknowledgement,
:mod:`._mqtt`), so a message whose job was not committed is sent again when the session
comes back. One client id is one session: run an MQTT trigger on one Fluxo process, since a
second connection with the same id takes the session over.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import orjson

from fluxo.control.hosts import connect_address, trigger_endpoint
from fluxo.control.triggers._mqtt import MqttSession
from fluxo.control.triggers.source import SourceFactory, TriggerSink, TriggerSource
from fluxo_core.errors import (
    ConfigError,
    DocumentTooComplexError,
    FluxoError,
    MalformedRequestError,
    NotFoundError,
    ServiceError,
    TriggerHeldError,
)
from fluxo_core.ir.documents import DocumentLimits, parse_json
from fluxo_core.redaction import hidden_from_logs
from fluxo_core.storage import SecretStore
from fluxo_core.storage.outputs import ServiceOutputStore
from fluxo_core.storage.triggers import TriggerRow

if TYPE_CHECKING:
    from services.http.policy import HostPolicy

__all__ = [
    "HELD_RETRY_S",
    "MqttSource",
    "PoisonMessageError",
    "RabbitSource",
    "decode",
    "fire_settled",
    "queue_event_id",
    "queue_sources",
]

log = logging.getLogger(__name__)

HELD_RETRY_S: Final = 5.0
PREFETCH: Final = 16
MAX_EVENT_ID: Final = 160
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


class PoisonMessageError(Exception):
    """A message no retry can start a job with; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(body: bytes, max_bytes: int, limits: DocumentLimits) -> Any:
    """The JSON document of a message body.

    Raises:
        PoisonMessageError: over ``max_bytes``, not UTF-8 JSON, or beyond the document limits.
    """
    if len(body) > max_bytes:
        raise PoisonMessageError(
            f"the message is {len(body)} bytes, over the limit of {max_bytes} bytes"
        )
    try:
        return parse_json(body, limits=limits, where="message")
    except (MalformedRequestError, DocumentTooComplexError) as exc:
        raise PoisonMessageError(f"the message is not a JSON document: {exc.message}") from None


def queue_event_id(message_id: str | None, body: bytes) -> str:
    """What makes a message the same one: its id, else its body's digest."""
    if message_id:
        return f"id:{message_id}"[:MAX_EVENT_ID]
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


async def fire_settled(sink: TriggerSink, event_id: str, payload: Any, *, where: str) -> str | None:
    """Fire until it is committed (None) or refused for good (the reason): a held trigger or
    a retryable refusal (the database away, a quota) is retried, with backoff."""
    failures = 0
    while True:
        try:
            await sink.fire(event_id, payload)
            return None
        except TriggerHeldError:
            await asyncio.sleep(HELD_RETRY_S)
        except FluxoError as exc:
            if not exc.retryable:
                return f"the job was refused: {exc.message}"
            failures += 1
            log.warning("queue trigger %s: %s (retrying)", where, exc.message)
            await asyncio.sleep(min(30.0, 0.5 * 2**failures))


def _backoff(failures: int, low: float, high: float) -> float:
    step = min(high, low * 2.0 ** (failures - 1))
    return step / 2 + random.uniform(0, step / 2)


class _Source:
    """What both brokers share: the config, the password, the reconnect loop."""

    kind = "queue"

    def __init__(
        self,
        row: TriggerRow,
        secrets: SecretStore | None,
        limits: DocumentLimits,
        *,
        policy: HostPolicy,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
    ) -> None:
        self.row = row
        self.secrets = secrets
        self.limits = limits
        self.policy = policy
        self.config: dict[str, Any] = row.spec["queue"]
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s

    @property
    def where(self) -> str:
        return f"{self.row.account_id}/{self.row.name}"

    @property
    def port(self) -> int:
        endpoint = trigger_endpoint(self.row.spec)
        if endpoint is None:  # a rabbitmq or mqtt spec always has one
            raise _BrokenSourceError(f"trigger {self.row.name!r} names no broker")
        return endpoint[2]

    async def address(self) -> str:
        """The broker's host as the host policy lets it be reached (:mod:`fluxo.control.hosts`),
        vetted at every connection."""
        try:
            return await connect_address(
                self.policy, self.config["host"], self.port, tls=bool(self.config.get("tls"))
            )
        except ServiceError as exc:
            raise _BrokenSourceError(exc.message) from None

    @property
    def max_bytes(self) -> int:
        return int(self.config.get("maxMessageBytes", 1_048_576))

    async def password(self) -> str | None:
        name = self.config.get("passwordSecret")
        if name is None:
            return None
        if self.secrets is None:
            raise _BrokenSourceError("this installation has no secret store (FLUXO_SECRET_KEY)")
        try:
            return (await self.secrets.reveal(self.row.account_id, [name]))[name]
        except NotFoundError:
            raise _BrokenSourceError(
                f"the secret {name!r} (spec.queue.passwordSecret) is not set in account "
                f"{self.row.account_id!r}; set it with fluxo secret set {name}"
            ) from None

    async def run(self, sink: TriggerSink) -> None:
        failures = 0
        while True:
            try:
                await self.consume(sink, connected=lambda: sink.health("connected"))
                raise _BrokenSourceError("the broker closed the connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker away, refused or lost: retried with backoff
                failures += 1
                reason = _describe(exc)
                await sink.health("degraded", f"{self.config['source']} {self.target}: {reason}")
                log.warning("queue trigger %s: %s", self.where, reason)
            await asyncio.sleep(_backoff(failures, self.reconnect_min_s, self.reconnect_max_s))

    @property
    def target(self) -> str:
        raise NotImplementedError

    async def consume(self, sink: TriggerSink, connected: Callable[[], Awaitable[None]]) -> None:
        raise NotImplementedError


class _BrokenSourceError(Exception):
    """The source cannot go on with this connection (reported, then retried)."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _BrokenSourceError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "the broker did not answer in time"
    text = str(exc)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RabbitSource(_Source):
    """Consumes ``spec.queue.queue`` (declared durable if it is not there)."""

    @property
    def target(self) -> str:
        return f"{self.config['host']}/{self.config['queue']}"

    @property
    def dead_queue(self) -> str:
        return str(self.config.get("deadLetterQueue") or f"{self.config['queue']}.dead")

    async def consume(self, sink: TriggerSink, connected: Callable[[], Awaitable[None]]) -> None:
        c = self.config
        host = await self.address()
        password = await self.password()
        secret = [password] if password else []
        with hidden_from_logs(secret):
            connection = await aio_pika.connect(
                host=host,
                port=self.port,
                login=c.get("username") or "guest",
                password=password or "guest",
                virtualhost=c.get("vhost", "/"),
                ssl=bool(c.get("tls")),
                ssl_context=ssl.create_default_context() if c.get("tls") else None,
                timeout=15,
            )
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            channel.close_callbacks.add(lambda *_: lost.set())
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(c["queue"], durable=True)
            await channel.declare_queue(self.dead_queue, durable=True)

            async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                try:
                    await self._handle(sink, channel, message)
                except Exception as exc:  # left unacknowledged: the broker delivers it again
                    log.warning("queue trigger %s: %s", self.where, _describe(exc))
                    lost.set()

            await queue.consume(handle, no_ack=False)
            await connected()
            await lost.wait()

    async def _handle(
        self,
        sink: TriggerSink,
        channel: aio_pika.abc.AbstractChannel,
        message: aio_pika.abc.AbstractIncomingMessage,
    ) -> None:
        try:
            body = decode(message.body, self.max_bytes, self.limits)
        except PoisonMessageError as poison:
            await self._dead(channel, message, poison.reason)
            return
        payload = {
            "body": body,
            "messageId": message.message_id,
            "queue": self.config["queue"],
            "routingKey": message.routing_key,
        }
        event_id = queue_event_id(message.message_id, message.body)
        refused = await fire_settled(sink, event_id, payload, where=self.where)
        if refused is not None:
            await self._dead(channel, message, refused)
            return
        await message.ack()

    async def _dead(
        self,
        channel: aio_pika.abc.AbstractChannel,
        message: aio_pika.abc.AbstractIncomingMessage,
        reason: str,
    ) -> None:
        headers = dict(message.headers or {})
        headers.update({"x-fluxo-dead-reason": reason[:1000], "x-fluxo-trigger": self.row.name})
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=message.body,
                headers=headers,
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.dead_queue,
        )
        await message.ack()
        log.warning(
            "queue trigger %s: a message went to %s: %s", self.where, self.dead_queue, reason
        )


class MqttSource(_Source):
    """Subscribes ``spec.queue.topic`` at QoS 1 with a persistent session."""

    @property
    def target(self) -> str:
        return f"{self.config['host']}/{self.config['topic']}"

    @property
    def client_id(self) -> str:
        given = self.config.get("clientId")
        if given:
            return str(given)
        return _SAFE_ID.sub("-", f"fluxo-{self.row.account_id}-{self.row.name}")[:64]

    @property
    def dead_topic(self) -> str:
        return str(self.config.get("deadLetterTopic") or f"fluxo/dead-letters/{self.row.name}")

    async def consume(self, sink: TriggerSink, connected: Callable[[], Awaitable[None]]) -> None:
        c = self.config
        host = await self.address()
        password = await self.password()
        # The PUBACK goes out when the job is committed, not when the message arrives (paho's
        # manual acknowledgement, set before connecting: the broker sends the session's waiting
        # messages at once).
        session = MqttSession(
            host,
            self.port,
            client_id=self.client_id,
            username=c.get("username"),
            password=password,
            tls_context=ssl.create_default_context() if c.get("tls") else None,
        )
        try:
            with hidden_from_logs([password] if password else []):
                await session.connect()
            await session.subscribe(c["topic"], qos=1)
            await connected()
            while True:
                message = await session.next_message()
                await self._handle(sink, session, message)
                session.ack(message)
        finally:
            await session.aclose()

    async def _handle(self, sink: TriggerSink, session: MqttSession, message: Any) -> None:
        raw = bytes(message.payload)
        topic = str(message.topic)
        try:
            body = decode(raw, self.max_bytes, self.limits)
        except PoisonMessageError as poison:
            await self._dead(session, topic, raw, poison.reason)
            return
        id_field = self.config.get("idField", "id")
        found = body.get(id_field) if isinstance(body, dict) else None
        message_id = str(found)[:128] if isinstance(found, str | int) and found != "" else None
        payload = {"body": body, "messageId": message_id, "topic": topic}
        # The digest covers the topic too: the same reading on two sensors' topics is two events.
        event_id = queue_event_id(message_id, topic.encode() + b"\x00" + raw)
        refused = await fire_settled(sink, event_id, payload, where=self.where)
        if refused is not None:
            await self._dead(session, topic, raw, refused)

    async def _dead(self, session: MqttSession, topic: str, raw: bytes, reason: str) -> None:
        envelope: dict[str, Any] = {
            "reason": reason[:1000],
            "trigger": self.row.name,
            "topic": topic,
        }
        try:
            envelope["body"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            envelope.update(body=base64.b64encode(raw).decode(), encoding="base64")
        await session.publish(self.dead_topic, orjson.dumps(envelope), qos=1)
        log.warning(
            "queue trigger %s: a message went to %s: %s", self.where, self.dead_topic, reason
        )


def queue_sources(
    secrets: SecretStore | None,
    limits: DocumentLimits,
    *,
    policy: HostPolicy,
    outputs: ServiceOutputStore | None = None,
    **overrides: Any,
) -> dict[str, SourceFactory]:
    """The source factory of the ``queue`` type, for the supervisor; ``policy``: the hosts a
    broker may be on (:mod:`fluxo.control.hosts`); ``outputs``: where ``source: fluxo``
    triggers read the outputs of Fluxo services (None: they report failing)."""
    from fluxo.control.triggers.outputs import ServiceOutputSource

    def build(row: TriggerRow) -> TriggerSource:
        source = row.spec["queue"]["source"]
        if source == "fluxo":
            if outputs is None:
                raise ConfigError(
                    "this installation reads no Fluxo service outputs", setting="outputs"
                )
            return ServiceOutputSource(row, outputs)
        kind = RabbitSource if source == "rabbitmq" else MqttSource
        return kind(row, secrets, limits, policy=policy, **overrides)

    return {"queue": build}
