"""JSON Schema export of the model (``fluxo schema packet``, ``fluxo schema workflow``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fluxo_core.errors import NotFoundError
from fluxo_core.ir.packet import Packet
from fluxo_core.ir.workflow import Workflow

_MODELS: dict[str, type[BaseModel]] = {"packet": Packet, "workflow": Workflow}


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the named model (``packet`` or ``workflow``)."""
    try:
        model = _MODELS[name]
    except KeyError:
        raise NotFoundError(
            f"no schema named {name!r}; choose one of: {', '.join(sorted(_MODELS))}", name=name
        ) from None
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
