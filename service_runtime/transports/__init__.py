"""Queue transports, one module per backend, chosen by name (``sql``, ``rabbitmq``)."""

from service_runtime.transports.base import (
    Delivery,
    OutgoingMessage,
    Transport,
    TransportCapabilities,
    dead_letter_queue,
)
from service_runtime.transports.sql import SqlTransport, queue_channel

__all__ = [
    "Delivery",
    "OutgoingMessage",
    "SqlTransport",
    "Transport",
    "TransportCapabilities",
    "dead_letter_queue",
    "queue_channel",
]
