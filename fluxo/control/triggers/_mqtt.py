"""An MQTT session on the event loop whose QoS 1 messages are acknowledged by the caller.

A queue trigger must send a message's PUBACK only after the message's job is committed, so that a
Fluxo that dies before that leaves the message with the broker, which sends it again when the
persistent session comes back. paho-mqtt supports this in its public API (``manual_ack=True``,
then :meth:`paho.mqtt.client.Client.ack`); aiomqtt, which wraps paho for asyncio, does not
expose it (up to its latest release, 2.5). So this module drives paho itself through paho's
documented external-event-loop interface, as aiomqtt does: paho tells which socket to watch
(``on_socket_open``, ``on_socket_register_write``, ...), the event loop calls ``loop_read`` and
``loop_write`` when it is ready, and a task calls ``loop_misc`` every second (keepalive).

paho's ``connect`` resolves, connects and (with TLS) shakes hands on a blocking socket, so it runs
in a worker thread; the socket callbacks it calls from there reach the loop thread-safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["MqttSession", "MqttSessionError"]

KEEPALIVE_S: Final = 60


class MqttSessionError(Exception):
    """The broker refused, did not answer in time, or the connection was lost."""


class MqttSession:
    """One connection with a persistent session (``clean_session`` false) and manual acks.

    Args:
        host, port: where the broker is (an address the host policy vetted, or a name over TLS).
        client_id: the session's identity; the broker keeps its subscriptions and unacknowledged
            messages while it is away.
        timeout_s: for connecting, subscribing and each confirmed publish.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.messages: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._waiting: dict[int, asyncio.Future[None]] = {}  # SUBACK and PUBACK, by mid
        self._misc: asyncio.Task[None] | None = None
        self._socket: Any = None
        self._fileno = -1  # the socket's descriptor while the loop watches it
        self._thread = threading.get_ident()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,  # the PUBACK goes out at ack(), not when the message arrives
        )
        if username is not None:
            client.username_pw_set(username, password)
        if tls_context is not None:
            client.tls_set_context(tls_context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = client

    # -- what the trigger calls ----------------------------------------------------------------

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._loop.run_in_executor(
                    None, self._client.connect, self.host, self.port, KEEPALIVE_S
                )
                await self._connected
        except TimeoutError:
            raise MqttSessionError("the broker did not answer in time") from None
        except OSError as exc:
            raise MqttSessionError(f"could not connect: {exc}") from exc

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        result, mid = self._client.subscribe(topic, qos)
        await self._confirmed(result, mid, f"subscribing to {topic!r}")

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and, at QoS 1, wait for the broker's PUBACK."""
        info = self._client.publish(topic, payload, qos)
        if qos == 0:
            return
        await self._confirmed(info.rc, info.mid, f"publishing to {topic!r}")

    async def next_message(self) -> paho.MQTTMessage:
        """The next message; raises :class:`MqttSessionError` once the connection is lost."""
        getting = asyncio.ensure_future(self.messages.get())
        either: set[asyncio.Future[Any]] = {getting, self._lost}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getting.done():
                getting.cancel()
        if getting.done() and not getting.cancelled():
            return getting.result()
        raise MqttSessionError(self._loss())

    def ack(self, message: paho.MQTTMessage) -> None:
        """Acknowledge ``message`` to the broker (its job is committed)."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    async def aclose(self) -> None:
        """Disconnect (the session stays with the broker) and close the socket."""
        with contextlib.suppress(Exception):
            self._client.disconnect()
        # paho closes the socket once DISCONNECT is written; a broker that does not read it
        # gets its socket closed anyway.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await asyncio.wait({self._lost})
        sock = self._socket
        self._drop_socket()
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()

    # -- paho's callbacks ----------------------------------------------------------------------

    async def _confirmed(self, result: MQTTErrorCode, mid: int | None, what: str) -> None:
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttSessionError(f"{what} failed: {paho.error_string(result)}")
        waiter = self._waiting.setdefault(mid, self._loop.create_future())
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.wait({waiter, self._lost}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise MqttSessionError(f"{what}: the broker did not confirm in time") from None
        finally:
            self._waiting.pop(mid, None)
        if not waiter.done():
            raise MqttSessionError(f"{what}: {self._loss()}")
        waiter.result()

    def _loss(self) -> str:
        exc = self._lost.exception() if self._lost.done() else None
        return f"the connection was lost: {exc}" if exc else "the connection was lost"

    def _settle(self, mid: int, error: str | None = None) -> None:
        waiter = self._waiting.setdefault(mid, self._loop.create_future())
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(MqttSessionError(error))

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, _: Any
    ) -> None:
        if self._connected.done():
            return
        if reason.is_failure:
            self._connected.set_exception(MqttSessionError(f"the broker refused: {reason}"))
        else:
            self._connected.set_result(None)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, _: Any) -> None:
        self._lose(MqttSessionError(f"disconnected: {reason}"))

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self.messages.put_nowait(message)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, _: Any) -> None:
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        self._settle(mid, f"the broker refused the subscription: {refused[0]}" if refused else None)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, _: Any) -> None:
        self._settle(mid)

    def _lose(self, error: BaseException) -> None:
        if not self._lost.done():
            self._lost.set_exception(error)
            self._lost.exception()  # retrieved: a loss nobody waits for is not an error
        if not self._connected.done():
            self._connected.set_exception(MqttSessionError(str(error)))

    def _read(self) -> None:
        try:
            while True:
                self._client.loop_read()
                # TLS may hold decoded bytes the socket no longer signals as readable.
                pending = getattr(self._socket, "pending", None)
                if pending is None or pending() == 0:
                    break
        except Exception as exc:  # a broken pipe: the connection is gone
            self._lose(exc)

    def _write(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:
            self._lose(exc)

    async def _keepalive(self) -> None:
        # paho's keepalive clock: a PINGREQ when due, and a broker that stopped answering noticed.
        while True:
            await asyncio.sleep(1)
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        self._lose(MqttSessionError("the connection was closed"))

    # paho calls these from the connecting thread too. From there they reach the loop
    # thread-safely; on the loop they run at once, since a socket paho just closed must leave
    # the selector before its file descriptor is reused by the next socket.

    def _on_loop(self, action: Callable[[], None]) -> None:
        if threading.get_ident() == self._thread:
            action()
        else:
            self._loop.call_soon_threadsafe(action)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        fileno = sock.fileno()

        def watch() -> None:
            self._socket, self._fileno = sock, fileno
            self._loop.add_reader(fileno, self._read)
            self._misc = self._loop.create_task(self._keepalive())

        self._on_loop(watch)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        self._on_loop(self._drop_socket)

    def _drop_socket(self) -> None:
        fileno, self._fileno = self._fileno, -1
        if fileno > -1:
            self._loop.remove_reader(fileno)
            self._loop.remove_writer(fileno)
        if self._misc is not None:
            self._misc.cancel()
        self._lose(MqttSessionError("the connection was closed"))

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def watch() -> None:
            if self._fileno > -1:
                self._loop.add_writer(self._fileno, self._write)

        self._on_loop(watch)

    def _on_socket_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def unwatch() -> None:
            if self._fileno > -1:
                self._loop.remove_writer(self._fileno)

        self._on_loop(unwatch)
