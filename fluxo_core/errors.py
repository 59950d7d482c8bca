"""The one error hierarchy of Fluxo.

Every failure that crosses a package boundary is a :class:`FluxoError`. Context travels as keyword
attributes (never only inside the message), ``retryable`` tells the runtime whether trying again can
help, and ``http_status`` tells the API faces how to answer. Driver errors (SQLAlchemy, httpx, aio-pika)
are mapped at the boundary that meets them and re-raised ``from exc``.

::

    FluxoError
    ├── ConfigError                    bad or missing configuration (names the setting and the fix)
    ├── ValidationError                bad input; ``problems`` lists every ``(location, message)``
    │   ├── MalformedRequestError      a body that is not even parseable (bad JSON)
    │   ├── IRValidationError          a workflow document breaks the IR (fields or graph: edges, cycles)
    │   ├── PacketValidationError      a packet does not match the envelope
    │   ├── PayloadSchemaError         a payload does not match a service's input schema
    │   ├── PayloadTooLargeError       a packet is over the configured size limit
    │   └── DocumentTooComplexError    a document nests too deep or expands too far (aliases, nodes)
    ├── NotFoundError                  a named thing does not exist
    │   ├── UnknownServiceError        no service of that name (and version)
    │   └── CallNotFoundError          no call with that id in this account
    ├── ConflictError                  the request conflicts with stored state (reused id, stale version)
    ├── UnsupportedFeatureError        the chosen engine cannot run this step (names the step)
    ├── AuthError                      no or bad credentials
    ├── PermissionDeniedError          credentials are fine but the target belongs to another account
    ├── AdmissionDeniedError           refused by policy: blocked account/workflow/service, quota
    │   ├── QuotaExceededError         a calls or spend quota of the period is used up (403)
    │   ├── ConcurrencyLimitError      as many jobs run as the concurrency limit allows (409)
    │   ├── RateLimitedError           over a request-rate limit; ``retry_after_s`` says when (429)
    │   └── BlockedError               refused by a block (fluxo block); its job ends blocked
    ├── ServiceError                   a service handler failed (``retryable`` decides retries)
    │   └── ServiceTimeoutError        a handler ran past its timeout (retryable)
    ├── CallFailedError                a call ended failed or dead-lettered (for waiting callers)
    ├── CallTimeoutError               a synchronous wait for a result ran out (the call goes on)
    ├── StorageError                   the database failed (``retryable`` for connection/lock errors)
    ├── TransportError                 a queue transport failed (``retryable`` for connection errors)
    └── EngineUnavailableError         an external engine (Node-RED, Argo) failed or is unreachable
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

__all__ = [
    "AdmissionDeniedError",
    "AuthError",
    "BlockedError",
    "CallFailedError",
    "CallNotFoundError",
    "CallTimeoutError",
    "ConcurrencyLimitError",
    "ConfigError",
    "ConflictError",
    "DocumentTooComplexError",
    "EngineUnavailableError",
    "FluxoError",
    "IRValidationError",
    "MalformedRequestError",
    "NotFoundError",
    "PacketValidationError",
    "PayloadSchemaError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Problem",
    "QuotaExceededError",
    "RateLimitedError",
    "ServiceError",
    "ServiceTimeoutError",
    "StorageError",
    "TransportError",
    "TriggerHeldError",
    "UnknownServiceError",
    "UnsupportedFeatureError",
    "ValidationError",
]


class FluxoError(Exception):
    """Root of every Fluxo error.

    Attributes:
        message: what went wrong and, where there is one, the fix.
        retryable: whether the same operation may succeed if tried again.
        context: keyword attributes naming the things involved (never secrets).
    """

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    default_retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, retryable: bool | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = self.default_retryable if retryable is None else retryable
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, as the HTTP API returns it."""
        body: dict[str, Any] = {
            "code": self.code,
            "type": type(self).__name__,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.context:
            body["context"] = {k: v for k, v in self.context.items() if _jsonable(v)}
        return body


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict | type(None))


class ConfigError(FluxoError):
    code = "config"


Problem = tuple[str, str]
"""One validation problem: ``(location, message)``, e.g. ``("payload[2].sku", "field required")``."""


class ValidationError(FluxoError):
    """Bad input. ``problems`` holds every problem found, each with its location."""

    http_status = 422
    code = "invalid"

    def __init__(self, message: str, *, problems: Sequence[Problem] = (), **context: Any) -> None:
        self.problems = list(problems)
        if self.problems:
            lines = "\n".join(f"  {loc or '<root>'}: {msg}" for loc, msg in self.problems)
            message = f"{message}\n{lines}"
        super().__init__(message, **context)

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["problems"] = [{"location": loc, "message": msg} for loc, msg in self.problems]
        return body


class MalformedRequestError(ValidationError):
    http_status = 400
    code = "malformed"


class IRValidationError(ValidationError):
    """A workflow document is invalid: every problem, located (``spec.steps[3].next[0]``), with its fix."""

    code = "invalid_workflow"


class PacketValidationError(ValidationError):
    code = "invalid_packet"


class PayloadSchemaError(ValidationError):
    code = "invalid_payload"


class PayloadTooLargeError(ValidationError):
    http_status = 413
    code = "payload_too_large"


class DocumentTooComplexError(ValidationError):
    """A JSON or YAML document is over a structural limit: nesting depth, node count, YAML
    aliases or its size once aliases are expanded. ``limit`` names the limit that was passed."""

    code = "document_too_complex"


class NotFoundError(FluxoError):
    http_status = 404
    code = "not_found"


class UnknownServiceError(NotFoundError):
    code = "unknown_service"


class CallNotFoundError(NotFoundError):
    code = "call_not_found"


class ConflictError(FluxoError):
    http_status = 409
    code = "conflict"


class UnsupportedFeatureError(FluxoError):
    http_status = 422
    code = "unsupported"


class AuthError(FluxoError):
    http_status = 401
    code = "unauthenticated"


class PermissionDeniedError(FluxoError):
    http_status = 403
    code = "forbidden"


class AdmissionDeniedError(FluxoError):
    http_status = 403
    code = "admission_denied"


class QuotaExceededError(AdmissionDeniedError):
    """A quota of calls or spend for the current period (UTC day or month) is used up.

    Context: ``quota`` (its name), ``kind``, ``limit``, ``used``, ``period`` (e.g. ``2026-12``)."""

    http_status = 403
    code = "quota_exceeded"


class ConcurrencyLimitError(AdmissionDeniedError):
    """As many jobs are running as a concurrency limit allows; a new one may start once one ends.

    Context: ``quota``, ``limit``, ``running``."""

    http_status = 409
    code = "concurrency_limit"


class RateLimitedError(AdmissionDeniedError):
    """Over a request-rate limit. ``retry_after_s`` is when the limiter has room again (the API
    sends it as the ``Retry-After`` header, rounded up to whole seconds)."""

    http_status = 429
    code = "rate_limited"
    default_retryable = True

    def __init__(self, message: str, *, retry_after_s: float, **context: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **context)
        self.retry_after_s = retry_after_s


class BlockedError(AdmissionDeniedError):
    """Refused by a block (context: ``block_id``, ``block_reason``, ``target``): a job it stops
    ends ``blocked`` and may be resumed once the block is lifted."""

    code = "blocked"


class TriggerHeldError(AdmissionDeniedError):
    """A trigger that may not fire now (paused, blocked, or its workflow paused or blocked):
    nothing was created; it fires again once what holds it is lifted (context: ``held``)."""

    http_status = 423
    code = "trigger_held"


class ServiceError(FluxoError):
    """A handler failed. Raise it from a handler to choose ``retryable`` explicitly."""

    http_status = 502
    code = "service_failed"
    default_retryable = True


class ServiceTimeoutError(ServiceError):
    http_status = 504
    code = "service_timeout"


class CallFailedError(FluxoError):
    http_status = 502
    code = "call_failed"


class CallTimeoutError(FluxoError):
    http_status = 504
    code = "call_timeout"
    default_retryable = True


class StorageError(FluxoError):
    http_status = 503
    code = "storage"


class TransportError(FluxoError):
    http_status = 503
    code = "transport"


class EngineUnavailableError(FluxoError):
    """An external engine's server failed or could not be reached (``retryable`` for 5xx and
    network errors); each engine raises its own subclass."""

    http_status = 502
    code = "engine_failed"
