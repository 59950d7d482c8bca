"""Logs: the text or JSON lines Fluxo's processes write, with the ids of what they handle.

Where a job step, a gateway call or a worker's message is handled, the handler binds the ids of
that work with :func:`bind_ids` (a context variable, so concurrent tasks each keep their own,
and a handler thread gets the ids of the call it runs). Every record logged meanwhile carries
them: :class:`JsonFormatter` writes one JSON object per line with ``time``, ``level``,
``logger``, ``message`` and, when known, ``job_id``, ``call_id``, ``trace_id``, ``span_id`` and
``account``.

Binding costs one tuple and a context variable set, whether JSON logs are on or not, so the hot
path does not ask which format is configured.

Secrets: the message and traceback of every record are redacted where the record is made
(:func:`fluxo_core.redaction.install_log_redaction`), before any formatter sees them; the
formatter writes nothing else of the record but the ids bound here, which hold no secret.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

import orjson

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "LogFormat",
    "bind_ids",
    "bound_ids",
    "configure_logging",
    "reset_ids",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# (job_id, call_id, trace_id, span_id, account): a plain tuple, the cheapest thing to build
# once per call on the worker's path.
_Ids = tuple[str | None, str | None, str | None, str | None, str | None]
_FIELDS = ("job_id", "call_id", "trace_id", "span_id", "account")
_IDS: contextvars.ContextVar[_Ids | None] = contextvars.ContextVar("fluxo_log_ids", default=None)


def bind_ids(
    *,
    job_id: str | None = None,
    call_id: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    account: str | None = None,
) -> contextvars.Token[_Ids | None]:
    """Carry these ids on every record logged in this context until :func:`reset_ids`.

    A binding replaces the one around it (what is handled now is one thing). Use it as
    ``token = bind_ids(...)`` then ``try: ... finally: reset_ids(token)``.
    """
    return _IDS.set((job_id, call_id, trace_id, span_id, account))


def reset_ids(token: contextvars.Token[_Ids | None]) -> None:
    """Back to the ids bound before :func:`bind_ids` returned ``token``."""
    _IDS.reset(token)


def bound_ids() -> dict[str, str]:
    """The ids bound in this context, by name (those that are known)."""
    ids = _IDS.get()
    if ids is None:
        return {}
    return {name: value for name, value in zip(_FIELDS, ids, strict=True) if value}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids bound
    with :func:`bind_ids`, and ``exception`` / ``stack`` when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(bound_ids())
        # The redacting record factory formats the traceback into exc_text (redacted) and
        # clears exc_info; without it (an embedding program), format it here.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def configure_logging(*, level: int, log_format: LogFormat = "text") -> None:
    """Log records of ``level`` and above to stderr, as text lines or JSON lines.

    For Fluxo's own processes (the ``fluxo`` command); a program that embeds Fluxo keeps its
    own logging and may use :class:`JsonFormatter` itself.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level, handlers=[handler])
