"""Keeping credentials out of what Fluxo shows and logs.

Three tools, each used in one place:

* :func:`mask_credentials`: a packet as people see it (a job's input, its steps' inputs and
  outputs, a call record's result). Values of credential-looking keys (``authorization``,
  ``x-api-key``, ``password``, ``*_token``, ...) become ``"***"``; a secret reference
  (``{"secret": "NAME"}``) is kept, since it names a stored secret and holds no value.
* :func:`redact_text`: free text that may quote a request (an HTTP parser error shows the raw
  header line) or a URL with an ``api_key=`` in its query.
* :func:`install_log_redaction`: runs :func:`redact_text` over every log record of the process,
  its message and its traceback, whichever logger made it and whichever handler writes it;
  :func:`hidden_from_logs` adds values to blank out while they are in use (the secrets the http
  service is sending: a library's debug log may print a response header that echoes one).

This module imports nothing of Fluxo's, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "MASK",
    "hidden_from_logs",
    "install_log_redaction",
    "is_credential_key",
    "is_secret_reference",
    "mask_credentials",
    "redact_text",
]

MASK = "***"

# Compared after lower-casing and turning '-' into '_', so header and field spellings match alike.
_CREDENTIAL_NAMES = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "credentials",
    }
)
_CREDENTIAL_SUFFIXES = ("_token", "_secret", "_password", "_api_key", "_apikey", "_private_key")
_REFERENCE_KEYS = frozenset({"secret", "prefix"})


@functools.lru_cache(maxsize=4096)  # packets repeat the same few keys; this runs once per key
def is_credential_key(key: str) -> bool:
    """Whether a field or header of this name holds a credential (``X-Api-Key``, ``password``,
    ``access_token``, ``client_secret``, ...)."""
    name = key.lower().replace("-", "_")
    return name in _CREDENTIAL_NAMES or name.endswith(_CREDENTIAL_SUFFIXES)


def is_secret_reference(value: Any) -> bool:
    """``{"secret": "NAME"}`` (with an optional string ``prefix``): a stored secret, by name."""
    return (
        isinstance(value, Mapping)
        and "secret" in value
        and set(value) <= _REFERENCE_KEYS
        and isinstance(value["secret"], str)
        and isinstance(value.get("prefix", ""), str)
    )


def mask_credentials(value: Any) -> Any:
    """``value`` with the values of credential-looking keys replaced by ``"***"``, at any depth.

    A secret reference and ``None`` are kept as they are (neither holds a credential). The input is
    never changed; parts without anything to mask are returned as they are, not copied.
    """
    if isinstance(value, dict):
        masked: dict[Any, Any] | None = None
        for key, item in value.items():
            if isinstance(key, str) and is_credential_key(key):
                new = item if item is None or is_secret_reference(item) else MASK
            elif isinstance(item, dict | list):
                new = mask_credentials(item)
            else:
                continue  # a scalar under an ordinary key: nothing to mask
            if new is not item:
                if masked is None:
                    masked = dict(value)
                masked[key] = new
        return value if masked is None else masked
    if isinstance(value, list):
        items: list[Any] | None = None
        for i, item in enumerate(value):
            if isinstance(item, dict | list):
                new = mask_credentials(item)
                if new is not item:
                    if items is None:
                        items = list(value)
                    items[i] = new
        return value if items is None else items
    return value


# A credential-looking name, then ':' or '=' (or the "', b'" of a header tuple's repr), then the
# value: up to a quote, the end of the line, an escaped byte (a parser error prints the raw line
# as a bytes literal) or the next query parameter. Spaces are allowed inside, so
# "Authorization: Bearer abc" loses its scheme too.
_KEYED = re.compile(
    r"""(?ix)
    ( \b[\w-]*(?:authorization|cookie|passw(?:or)?d|passphrase|secret|token|api[_-]?key)\b
      (?: ["']? [ \t]* [:=] [ \t]* ["']? | ["'] , [ \t]* b? ["'] ) )
    ( [^"'\r\n\\&]+ )
    """
)
_SCHEMED = re.compile(r"(?i)\b(bearer|basic)[ \t]+[A-Za-z0-9._~+/=-]{8,}")
_FLUXO_TOKEN = re.compile(r"\bfxo_[A-Za-z0-9_-]{6,}")


def redact_text(text: str) -> str:
    """``text`` with header values, ``key=value`` pairs and bearer tokens that look like
    credentials replaced by ``***``; Fluxo tokens (``fxo_...``) wherever they appear."""
    if not text:
        return text
    text = _KEYED.sub(lambda m: m.group(1) + MASK, text)
    text = _SCHEMED.sub(lambda m: m.group(1) + " " + MASK, text)
    return _FLUXO_TOKEN.sub("fxo_" + MASK, text)


_RecordFactory = Callable[..., logging.LogRecord]


class _RedactingFactory:
    """Wraps the log record factory: each record is redacted once, as it is made."""

    def __init__(self, inner: _RecordFactory) -> None:
        self.inner = inner
        # Values in use right now (counted: two calls may send the same secret at once). Records
        # are made on the event loop and in database and handler threads alike.
        self._hidden: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            self._redact(record)
        except Exception:  # a record that cannot even be formatted: drop its parts, keep the line
            record.msg, record.args = "[log record withheld: it could not be redacted]", None
            record.exc_info, record.exc_text = None, None
        return record

    def hide(self, values: Iterable[str]) -> None:
        with self._lock:
            self._hidden.update(v for v in values if v)

    def unhide(self, values: Iterable[str]) -> None:
        with self._lock:
            self._hidden.subtract(v for v in values if v)
            for value in [v for v, n in self._hidden.items() if n <= 0]:
                del self._hidden[value]

    def _redact(self, record: logging.LogRecord) -> None:
        with self._lock:
            hidden = sorted(self._hidden, key=len, reverse=True)

        def clean(text: str) -> str:
            for value in hidden:
                text = text.replace(value, MASK)
            return redact_text(text)

        record.msg = clean(record.getMessage())
        record.args = None
        if record.exc_info:
            # Formatted here, once, so no handler ever formats the raw exception (its message
            # may quote a request); formatters print exc_text and skip exc_info when it is set.
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = clean(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = clean(record.exc_text)
        if record.stack_info:
            record.stack_info = clean(record.stack_info)


@contextlib.contextmanager
def hidden_from_logs(values: Iterable[str]) -> Iterator[None]:
    """Blank ``values`` out of every log record made while the block runs.

    Only where :func:`install_log_redaction` was called (every Fluxo process does); elsewhere
    the embedding program owns its logging and this does nothing.
    """
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingFactory):
        yield
        return
    kept = list(values)
    factory.hide(kept)
    try:
        yield
    finally:
        factory.unhide(kept)


def install_log_redaction() -> None:
    """Redact every log record this process makes from now on (idempotent).

    A record factory rather than a handler filter: it covers every logger and every handler,
    including handlers added later (a test's log capture, a library's own).
    """
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(current))
