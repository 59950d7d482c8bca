"""Settings of the built-in services (limits, the ``http`` host policy), from Fluxo's configuration."""

from __future__ import annotations

from dataclasses import dataclass

from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError
from services.http.policy import HostRules

__all__ = ["BuiltinConfig"]


@dataclass(frozen=True)
class BuiltinConfig:
    """Settings of the built-in services.

    Attributes:
        http_allow: hosts, ``*.suffix`` wildcards or CIDRs the ``http`` service may reach even
            though they are internal (``FLUXO_HTTP_ALLOW``).
        http_deny: hosts, wildcards or CIDRs it may never reach (``FLUXO_HTTP_DENY``); deny wins.
        http_default_timeout_s: the timeout of a request that does not set ``timeout_s``.
        http_max_timeout_s: the cap on a request's ``timeout_s``.
        http_max_body_bytes: response bodies over this size are truncated, with a marker.
        http_max_redirects: how many redirects one request may follow.
        http_max_items: the most requests one call (an array payload) may make.
        http_concurrency: how many requests of one call run at the same time.
        transform_timeout_ms: the time budget of each JSONata expression of a ``transform`` call.
        comm_timeout_s: the cap on the time ``email-send``, ``sms-send`` and ``webhook-send``
            wait for the provider (each sets its own ``timeout_s`` below it).
        comm_max_attachments: the most attachments one email may carry.
        comm_max_attachment_bytes: the most bytes the attachments of one email may add up to.
        webhook_max_attempts: the cap on a webhook's delivery attempts within one call.
        webhook_backoff_s: the first wait between webhook attempts (doubled each time).
    """

    http_allow: tuple[str, ...] = ()
    http_deny: tuple[str, ...] = ()
    http_default_timeout_s: float = 10.0
    http_max_timeout_s: float = 60.0
    http_max_body_bytes: int = 1_048_576
    http_max_redirects: int = 5
    http_max_items: int = 100
    http_concurrency: int = 8
    transform_timeout_ms: int = 1000
    comm_timeout_s: float = 60.0
    comm_max_attachments: int = 10
    comm_max_attachment_bytes: int = 10_485_760
    webhook_max_attempts: int = 5
    webhook_backoff_s: float = 0.5

    def __post_init__(self) -> None:
        positive = {
            "http_default_timeout_s": self.http_default_timeout_s,
            "http_max_timeout_s": self.http_max_timeout_s,
            "http_max_body_bytes": self.http_max_body_bytes,
            "http_max_items": self.http_max_items,
            "http_concurrency": self.http_concurrency,
            "transform_timeout_ms": self.transform_timeout_ms,
            "comm_timeout_s": self.comm_timeout_s,
            "comm_max_attachments": self.comm_max_attachments,
            "comm_max_attachment_bytes": self.comm_max_attachment_bytes,
            "webhook_max_attempts": self.webhook_max_attempts,
            "webhook_backoff_s": self.webhook_backoff_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(
                    f"builtin config {name}={value!r} must be above zero", setting=name
                )
        if self.http_max_redirects < 0:
            raise ConfigError("builtin config http_max_redirects must not be negative")
        # Parse the host rules now so that a bad entry fails at start-up, not at the first call.
        HostRules.parse(self.http_allow, "FLUXO_HTTP_ALLOW")
        HostRules.parse(self.http_deny, "FLUXO_HTTP_DENY")

    @classmethod
    def from_fluxo_config(cls, config: FluxoConfig) -> BuiltinConfig:
        """The built-in settings that come from Fluxo's configuration (``FLUXO_HTTP_*``)."""
        return cls(http_allow=config.http_allow, http_deny=config.http_deny)
