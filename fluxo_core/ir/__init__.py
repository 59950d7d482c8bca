"""The model: packets, workflow IR and their JSON Schemas. Imports nothing of ours but errors."""

from fluxo_core.ir.packet import (
    Account,
    Actor,
    Packet,
    Payload,
    User,
    new_packet_id,
    new_span_id,
    new_trace_id,
    parse_packet,
)
from fluxo_core.ir.schemas import json_schema

__all__ = [
    "Account",
    "Actor",
    "Packet",
    "Payload",
    "User",
    "json_schema",
    "new_packet_id",
    "new_span_id",
    "new_trace_id",
    "parse_packet",
]
