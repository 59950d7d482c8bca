"""Fluxo's configuration, read from ``FLUXO_*`` environment variables.

Every setting has a default that runs the embedded, all-in-one Fluxo (SQLite under ``FLUXO_HOME``).
A bad value raises :class:`ConfigError` naming the variable and what it accepts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fluxo_core.errors import ConfigError
from fluxo_core.ir.workflow import DEFAULT_ENGINE, ENGINES
from fluxo_core.logs import LOG_FORMATS, LogFormat

__all__ = ["ENVIRONMENTS", "FluxoConfig", "log_format_from_env", "served_url"]

# FLUXO_ENV: what this installation is for. Only ``production`` changes behaviour today: what
# exists to show or try Fluxo (``fluxo demo``) refuses to run there.
ENVIRONMENTS = ("development", "staging", "production")


class FluxoConfig(BaseModel):
    """All settings. Build it with :meth:`from_env`; tests build it directly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    database_url: str
    transport: str = "sql"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    max_packet_bytes: int = 1_048_576
    host: str = "127.0.0.1"
    port: int = 8240
    poll_interval_s: float = 1.0
    output_retention_s: float = 86_400.0
    lease_s: float = 5.0
    # How often the trigger supervisor looks for due cron slots and changed triggers.
    trigger_tick_s: float = 1.0
    http_allow: tuple[str, ...] = ()
    http_deny: tuple[str, ...] = ()
    engines: tuple[str, ...] = (DEFAULT_ENGINE,)
    # FLUXO_PUBLIC_URL as set; None: external engines call the address served (gateway_url).
    public_url: str | None = None
    nodered_url: str = "http://127.0.0.1:1880"
    nodered_admin_token: str | None = Field(default=None, repr=False)
    argo_url: str | None = None
    argo_namespace: str = "argo"
    argo_token: str | None = Field(default=None, repr=False)
    argo_verify_tls: bool = True
    # FLUXO_KUBERNETES: how Fluxo reaches a Kubernetes API for cron triggers scheduled there
    # (spec.cron.scheduler: kubernetes): "off", "in-cluster" (the pod's service account) or
    # "kubeconfig" (FLUXO_KUBECONFIG, its current context or FLUXO_KUBERNETES_CONTEXT).
    kubernetes: Literal["off", "in-cluster", "kubeconfig"] = "off"
    kubeconfig: Path | None = None
    kubernetes_context: str | None = None
    # The namespace of Fluxo's CronJobs; None: the service account's, or the context's.
    kubernetes_namespace: str | None = None
    # How often the CronJobs are compared with their triggers (a pause reaches them then).
    kubernetes_sync_s: float = 30.0
    # The key the stored secrets are encrypted with; unset: a key file in the home, made once.
    secret_key: str | None = Field(default=None, repr=False)
    # FLUXO_LOG_FORMAT: text lines (the default) or one JSON object per line.
    log_format: LogFormat = "text"
    # Where spans go over OTLP/HTTP (the full URL of the traces endpoint); None: no spans.
    otlp_traces_endpoint: str | None = None
    # FLUXO_ENV: one of ENVIRONMENTS.
    environment: str = "development"

    @property
    def production(self) -> bool:
        """Whether ``FLUXO_ENV=production``: demo data and load are refused here."""
        return self.environment == "production"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FluxoConfig:
        env = os.environ if env is None else env
        home = Path(env.get("FLUXO_HOME") or Path.home() / ".fluxo").expanduser()
        url = env.get("FLUXO_DATABASE_URL") or f"sqlite:///{home / 'fluxo.db'}"
        transport = env.get("FLUXO_TRANSPORT", "sql")
        if transport not in ("sql", "rabbitmq"):
            raise ConfigError(
                f"FLUXO_TRANSPORT={transport!r} is not a transport; use 'sql' or 'rabbitmq'",
                setting="FLUXO_TRANSPORT",
            )
        port = _int(env, "FLUXO_PORT", 8240, minimum=0)
        return cls(
            home=home,
            database_url=normalize_database_url(url),
            transport=transport,
            amqp_url=env.get("FLUXO_AMQP_URL", cls.model_fields["amqp_url"].default),
            max_packet_bytes=_int(env, "FLUXO_MAX_PACKET_BYTES", 1_048_576, minimum=1024),
            host=env.get("FLUXO_HOST", "127.0.0.1"),
            port=port,
            poll_interval_s=_float(env, "FLUXO_POLL_INTERVAL", 1.0),
            output_retention_s=_float(env, "FLUXO_OUTPUT_RETENTION_S", 86_400.0),
            lease_s=_float(env, "FLUXO_LEASE_S", 5.0),
            trigger_tick_s=_float(env, "FLUXO_TRIGGER_TICK_S", 1.0),
            http_allow=_list(env, "FLUXO_HTTP_ALLOW"),
            http_deny=_list(env, "FLUXO_HTTP_DENY"),
            engines=_engines(env),
            public_url=env.get("FLUXO_PUBLIC_URL") or None,
            nodered_url=env.get("FLUXO_NODERED_URL", "http://127.0.0.1:1880"),
            nodered_admin_token=env.get("FLUXO_NODERED_ADMIN_TOKEN") or None,
            argo_url=env.get("FLUXO_ARGO_URL") or None,
            argo_namespace=env.get("FLUXO_ARGO_NAMESPACE", "argo"),
            argo_token=env.get("FLUXO_ARGO_TOKEN") or None,
            argo_verify_tls=env.get("FLUXO_ARGO_VERIFY_TLS", "true").lower()
            not in ("0", "false", "no"),
            kubernetes=_kubernetes(env),
            kubeconfig=Path(env["FLUXO_KUBECONFIG"]).expanduser()
            if env.get("FLUXO_KUBECONFIG")
            else None,
            kubernetes_context=env.get("FLUXO_KUBERNETES_CONTEXT") or None,
            kubernetes_namespace=env.get("FLUXO_KUBERNETES_NAMESPACE") or None,
            kubernetes_sync_s=_float(env, "FLUXO_KUBERNETES_SYNC_S", 30.0),
            secret_key=env.get("FLUXO_SECRET_KEY") or None,
            log_format=log_format_from_env(env),
            otlp_traces_endpoint=_otlp_traces_endpoint(env),
            environment=_environment(env),
        )

    @property
    def gateway_url(self) -> str:
        """Where external engines (Node-RED flows, Argo templates) call the gateway, sending
        their engine token: ``FLUXO_PUBLIC_URL`` if set, else the address this Fluxo serves.

        Derived, not stored, so that a server started on another host or port (``fluxo up
        --port P``) hands its engines that address instead of the default one, where anything
        else may listen.
        """
        return self.public_url or served_url(self.host, self.port)

    def ensure_home(self) -> Path:
        """Create the Fluxo home, private to this user (0700); tighten an existing one.

        It holds the SQLite database, the admin token and the secrets' key: nobody else on the
        machine may list or read it.
        """
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.home.stat()
            # A home made by an older Fluxo (0755) is tightened; one owned by another user is
            # theirs to set.
            if info.st_mode & 0o077 and info.st_uid == os.getuid():
                self.home.chmod(0o700)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the Fluxo home {self.home} ({exc.strerror}); set FLUXO_HOME "
                "to a folder you may write",
                setting="FLUXO_HOME",
            ) from exc
        return self.home


def served_url(host: str, port: int) -> str:
    """The URL a client on this machine calls a server listening on ``host:port`` at.

    A wildcard address listens on every interface, loopback included; it cannot be called.
    """
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}"


def normalize_database_url(url: str) -> str:
    """Accept the usual spellings; return the URL with the driver Fluxo uses (pysqlite, psycopg 3)."""
    for prefix, driver in (
        ("sqlite+aiosqlite:", "sqlite:"),
        ("sqlite:", "sqlite:"),
        ("postgresql+psycopg:", "postgresql+psycopg:"),
        ("postgresql:", "postgresql+psycopg:"),
        ("postgres:", "postgresql+psycopg:"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    raise ConfigError(
        "FLUXO_DATABASE_URL must be a SQLite URL (sqlite:////abs/path/fluxo.db) or a PostgreSQL "
        "URL (postgresql+psycopg://user@host/db)",
        setting="FLUXO_DATABASE_URL",
    )


def log_format_from_env(env: Mapping[str, str]) -> LogFormat:
    """``FLUXO_LOG_FORMAT``: ``text`` (the default) or ``json``."""
    raw = env.get("FLUXO_LOG_FORMAT") or "text"
    for name in LOG_FORMATS:
        if raw.lower() == name:
            return name
    raise ConfigError(
        f"FLUXO_LOG_FORMAT={raw!r} is not a log format; use 'text' or 'json'",
        setting="FLUXO_LOG_FORMAT",
    )


def _otlp_traces_endpoint(env: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL, from the first of: ``FLUXO_OTLP_ENDPOINT`` (a base URL, as
    ``OTEL_EXPORTER_OTLP_ENDPOINT``), ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL),
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is appended). None when none is set, or
    when ``OTEL_SDK_DISABLED`` or ``OTEL_TRACES_EXPORTER=none`` turns tracing off."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    for name, full in (
        ("FLUXO_OTLP_ENDPOINT", False),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", True),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", False),
    ):
        raw = (env.get(name) or "").strip()
        if not raw:
            continue
        if not raw.startswith(("http://", "https://")):
            raise ConfigError(
                f"{name}={raw!r} is not an http(s) URL; give the OTLP/HTTP endpoint, e.g. "
                "http://127.0.0.1:4318",
                setting=name,
            )
        return raw if full else raw.rstrip("/") + "/v1/traces"
    return None


def _environment(env: Mapping[str, str]) -> str:
    """``FLUXO_ENV``: ``development`` (the default), ``staging`` or ``production``."""
    raw = (env.get("FLUXO_ENV") or "development").strip().lower()
    if raw not in ENVIRONMENTS:
        raise ConfigError(
            f"FLUXO_ENV={raw!r} is not an environment; use one of {', '.join(ENVIRONMENTS)}",
            setting="FLUXO_ENV",
        )
    return raw


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number", setting=name) from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum of {minimum}", setting=name)
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds", setting=name) from None
    if value <= 0:
        raise ConfigError(f"{name} must be above zero seconds", setting=name)
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in env.get(name, "").split(",") if p.strip())


def _kubernetes(env: Mapping[str, str]) -> Literal["off", "in-cluster", "kubeconfig"]:
    value = env.get("FLUXO_KUBERNETES", "off").strip().lower() or "off"
    if value == "off":
        return "off"
    if value == "in-cluster":
        return "in-cluster"
    if value == "kubeconfig":
        return "kubeconfig"
    raise ConfigError(
        f"FLUXO_KUBERNETES={value[:40]!r} is not a choice; use 'off', 'in-cluster' (Fluxo runs "
        "in a pod) or 'kubeconfig' (with FLUXO_KUBECONFIG)",
        setting="FLUXO_KUBERNETES",
    )


def _engines(env: Mapping[str, str]) -> tuple[str, ...]:
    """``FLUXO_ENGINES``: the engines this Fluxo runs jobs on (the default is always there)."""
    names = _list(env, "FLUXO_ENGINES") or (DEFAULT_ENGINE,)
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ConfigError(
            f"FLUXO_ENGINES names unknown engine(s) {', '.join(unknown)}; "
            f"known: {', '.join(ENGINES)}",
            setting="FLUXO_ENGINES",
        )
    if "argo" in names and not env.get("FLUXO_ARGO_URL"):
        raise ConfigError(
            "FLUXO_ENGINES includes argo but FLUXO_ARGO_URL is not set; give the Argo Server's "
            "URL (e.g. https://argo.example.com/)",
            setting="FLUXO_ARGO_URL",
        )
    return tuple(dict.fromkeys((DEFAULT_ENGINE, *names)))
