"""Where the Kubernetes API is and how to prove who Fluxo is: in-cluster, or by a kubeconfig.

In a pod, the service account's token, CA and namespace are files under
:data:`SERVICE_ACCOUNT_DIR` and the API's address is in ``KUBERNETES_SERVICE_HOST`` and
``KUBERNETES_SERVICE_PORT``. Outside, a kubeconfig names clusters, users and contexts; the
current context (or the one asked for) picks a cluster (``server``, its CA as
``certificate-authority-data`` or ``certificate-authority``) and a user (``token``,
``tokenFile``, or a client certificate as data or files). Credential plugins (``exec``,
``auth-provider``) run programs and are refused: give the user a token or a certificate.

Every problem is a :class:`~fluxo_core.errors.ConfigError` naming the file, the place in it and
the fix; no message holds a credential.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fluxo_core.errors import ConfigError, FluxoError
from fluxo_core.ir import DocumentLimits, parse_yaml

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "KubernetesConfig",
    "in_cluster_config",
    "kubeconfig_config",
]

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_KUBECONFIG_BYTES: Final = 1_048_576
_NAMESPACE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, kw_only=True)
class KubernetesConfig:
    """The API server and Fluxo's credentials there.

    Attributes:
        server: ``https://host:port`` of the API server.
        namespace: where Fluxo's objects (CronJobs) live.
        token: a bearer token; ``token_file``: a file holding one, read again as it rotates
            (projected service-account tokens do).
        ca_pem: the PEM of the CA the server's certificate is checked against (None: the
            system's); ``verify_tls``: False only for ``insecure-skip-tls-verify``.
        client_cert_pem, client_key_pem: a client certificate and its key.
        source: where this came from, for messages (``in-cluster``, ``kubeconfig /path``).
    """

    server: str
    namespace: str = "default"
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    ca_pem: str | None = None
    verify_tls: bool = True
    client_cert_pem: str | None = None
    client_key_pem: str | None = field(default=None, repr=False)
    source: str = "configuration"

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^\s/?#]+/?$", self.server):
            raise ConfigError(
                f"{self.source}: the Kubernetes API server {self.server[:100]!r} is not "
                "http(s)://host[:port]; give the API server's address",
                setting="kubernetes.server",
            )
        if not _NAMESPACE.match(self.namespace):
            raise ConfigError(
                f"{self.source}: {self.namespace[:80]!r} is not a Kubernetes namespace name; "
                "set FLUXO_KUBERNETES_NAMESPACE to one (lowercase letters, digits, '-')",
                setting="FLUXO_KUBERNETES_NAMESPACE",
            )

    def with_namespace(self, namespace: str | None) -> KubernetesConfig:
        if not namespace:
            return self
        return KubernetesConfig(
            server=self.server,
            namespace=namespace,
            token=self.token,
            token_file=self.token_file,
            ca_pem=self.ca_pem,
            verify_tls=self.verify_tls,
            client_cert_pem=self.client_cert_pem,
            client_key_pem=self.client_key_pem,
            source=self.source,
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What httpx verifies the server with (and presents as client certificate)."""
        if not self.verify_tls and self.client_cert_pem is None:
            return False
        context = (
            ssl.create_default_context(cadata=self.ca_pem)
            if self.ca_pem
            else (ssl.create_default_context())
        )
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert_pem is not None and self.client_key_pem is not None:
            _load_client_certificate(context, self.client_cert_pem, self.client_key_pem)
        return context


def _load_client_certificate(context: ssl.SSLContext, cert: str, key: str) -> None:
    # The ssl module loads a certificate only from files: a private folder that lives for the
    # call, so the key is on disk (mode 0600) for no longer than the load.
    with tempfile.TemporaryDirectory(prefix="fluxo-kube-") as folder:
        cert_path, key_path = Path(folder) / "client.crt", Path(folder) / "client.key"
        for path, text in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise ConfigError(
                "the Kubernetes client certificate and key do not load together "
                f"({exc.reason or 'bad PEM'}); check client-certificate and client-key",
                setting="kubeconfig",
            ) from exc


def in_cluster_config(
    env: Mapping[str, str], folder: Path = SERVICE_ACCOUNT_DIR
) -> KubernetesConfig:
    """The API as a pod sees it: the service account's files and the service's address.

    Raises:
        ConfigError: not in a pod (no ``KUBERNETES_SERVICE_HOST``) or no token file.
    """
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError(
            "FLUXO_KUBERNETES=in-cluster but KUBERNETES_SERVICE_HOST is not set: Fluxo does not "
            "run in a Kubernetes pod; use FLUXO_KUBERNETES=kubeconfig with FLUXO_KUBECONFIG",
            setting="FLUXO_KUBERNETES",
        )
    token = folder / "token"
    if not token.is_file():
        raise ConfigError(
            f"FLUXO_KUBERNETES=in-cluster but {token} is missing; mount the pod's service "
            "account token (automountServiceAccountToken: true)",
            setting="FLUXO_KUBERNETES",
        )
    ca = folder / "ca.crt"
    namespace = folder / "namespace"
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return KubernetesConfig(
        server=server,
        namespace=namespace.read_text().strip() if namespace.is_file() else "default",
        token_file=token,
        ca_pem=ca.read_text() if ca.is_file() else None,
        source="in-cluster",
    )


def kubeconfig_config(path: Path, context: str | None = None) -> KubernetesConfig:
    """The API a kubeconfig's current context (or ``context``) names.

    Raises:
        ConfigError: an unreadable or malformed file, a missing context, cluster or user, a
            credential plugin; each names the file and where in it.
    """
    where = f"kubeconfig {path}"
    try:
        size = path.stat().st_size
        if size > MAX_KUBECONFIG_BYTES:
            raise ConfigError(
                f"{where} is {size} bytes, over {MAX_KUBECONFIG_BYTES}; point FLUXO_KUBECONFIG "
                "at a kubeconfig",
                setting="FLUXO_KUBECONFIG",
            )
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {where} ({type(exc).__name__}); set FLUXO_KUBECONFIG to a readable "
            "kubeconfig file",
            setting="FLUXO_KUBECONFIG",
        ) from exc
    limits = DocumentLimits(
        max_bytes=MAX_KUBECONFIG_BYTES, max_depth=20, max_aliases=50, setting="FLUXO_KUBECONFIG"
    )
    try:
        document = parse_yaml(text, limits=limits, where=str(path))
    except FluxoError as exc:
        raise ConfigError(f"{where} is not a kubeconfig: {exc.message}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{where} is not a kubeconfig: expected a mapping with contexts")
    return _from_kubeconfig(document, path, context)


def _from_kubeconfig(doc: dict[str, Any], path: Path, wanted: str | None) -> KubernetesConfig:
    where = f"kubeconfig {path}"
    name = wanted or doc.get("current-context")
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{where}: no current-context; set one (kubectl config use-context NAME) or name "
            "the context in FLUXO_KUBERNETES_CONTEXT",
            setting="FLUXO_KUBERNETES_CONTEXT",
        )
    context = _named(doc, "contexts", "context", name, where)
    cluster_name, user_name = context.get("cluster"), context.get("user")
    cluster = _named(doc, "clusters", "cluster", cluster_name, where, via=f"context {name!r}")
    user = (
        _named(doc, "users", "user", user_name, where, via=f"context {name!r}") if user_name else {}
    )
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"{where}: clusters[{cluster_name!r}].cluster.server is missing")
    for plugin in ("exec", "auth-provider"):
        if plugin in user:
            raise ConfigError(
                f"{where}: users[{user_name!r}].user.{plugin} runs a credential plugin, which "
                "Fluxo does not; give that user a token (a service account's) or a client "
                "certificate",
                setting="FLUXO_KUBECONFIG",
            )
    folder = path.parent
    namespace = context.get("namespace")
    return KubernetesConfig(
        server=server,
        namespace=namespace if isinstance(namespace, str) and namespace else "default",
        token=_text(user, "token", where, f"users[{user_name!r}].user"),
        token_file=_path(folder, user.get("tokenFile")),
        ca_pem=_pem(
            cluster, "certificate-authority", folder, where, f"clusters[{cluster_name!r}].cluster"
        ),
        verify_tls=not cluster.get("insecure-skip-tls-verify", False),
        client_cert_pem=_pem(
            user, "client-certificate", folder, where, f"users[{user_name!r}].user"
        ),
        client_key_pem=_pem(user, "client-key", folder, where, f"users[{user_name!r}].user"),
        source=where,
    )


def _named(
    doc: dict[str, Any], plural: str, key: str, name: Any, where: str, via: str = ""
) -> dict[str, Any]:
    entries = doc.get(plural) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: {plural} must be a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key)
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {plural}[{name!r}].{key} must be a mapping")
            return value
    known = ", ".join(
        repr(e.get("name")) for e in entries[:10] if isinstance(e, dict) and e.get("name")
    )
    named = f" ({via} names it)" if via else ""
    raise ConfigError(
        f"{where}: no {key} {str(name)[:80]!r} in {plural}{named}; the file has {known or 'none'}",
        setting="FLUXO_KUBECONFIG",
    )


def _text(entry: dict[str, Any], key: str, where: str, place: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {place}.{key} must be text")
    return value


def _path(folder: Path, value: Any) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    return (folder / Path(value).expanduser()).resolve()


def _pem(entry: dict[str, Any], key: str, folder: Path, where: str, place: str) -> str | None:
    """``<key>-data`` (base64 of PEM) or ``<key>`` (a file, relative to the kubeconfig)."""
    data = entry.get(f"{key}-data")
    if data is not None:
        try:
            text = base64.b64decode(str(data), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{where}: {place}.{key}-data is not base64 of a PEM text; encode the PEM "
                "with base64 -w0",
                setting="FLUXO_KUBECONFIG",
            ) from exc
        if "-----BEGIN" not in text:
            raise ConfigError(f"{where}: {place}.{key}-data does not hold a PEM text")
        return text
    file = _path(folder, entry.get(key))
    if file is None:
        return None
    try:
        return file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{where}: {place}.{key} names {file}, which cannot be read ({type(exc).__name__})",
            setting="FLUXO_KUBECONFIG",
        ) from exc
