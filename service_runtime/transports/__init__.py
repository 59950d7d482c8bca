"""Queue transports, one module per backend, chosen by name (``sql``, ``rabbitmq``)."""

from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError
from fluxo_core.storage import Database
from service_runtime.transports.base import (
    Delivery,
    OutgoingMessage,
    TakesInTransaction,
    Transport,
    TransportCapabilities,
    dead_letter_queue,
)
from service_runtime.transports.sql import SqlTransport, queue_channel


def make_transport(config: FluxoConfig, db: Database) -> Transport:
    """The transport ``config.transport`` names (``sql`` or ``rabbitmq``), loaded only when chosen."""
    if config.transport == "sql":
        return SqlTransport(db, poll_interval_s=config.poll_interval_s)
    if config.transport == "rabbitmq":
        from service_runtime.transports.rabbitmq import RabbitMqTransport

        return RabbitMqTransport(db, config.amqp_url, max_poll_interval_s=config.poll_interval_s)
    raise ConfigError(
        f"unknown transport {config.transport!r}: use 'sql' or 'rabbitmq' (FLUXO_TRANSPORT)"
    )


__all__ = [
    "Delivery",
    "OutgoingMessage",
    "SqlTransport",
    "TakesInTransaction",
    "Transport",
    "TransportCapabilities",
    "dead_letter_queue",
    "make_transport",
    "queue_channel",
]
