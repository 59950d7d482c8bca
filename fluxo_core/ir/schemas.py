"""JSON Schema export of the model (``fluxo schema packet``)."""

from __future__ import annotations

from typing import Any

from fluxo_core.errors import NotFoundError
from fluxo_core.ir.packet import Packet

_MODELS = {"packet": Packet}


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the named model (``packet``)."""
    try:
        model = _MODELS[name]
    except KeyError:
        raise NotFoundError(
            f"no schema named {name!r}; choose one of: {', '.join(sorted(_MODELS))}", name=name
        ) from None
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
