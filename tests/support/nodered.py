"""A real Node-RED for the test session: the managed one, installed and started like a user would.

Shared by the Node-RED integration tests and the engine conformance suite: ``tests/conftest.py``
makes the ``nodered`` fixture visible to every test (it starts only when a test asks for it).

``nodered`` (session scope) installs the pinned Node-RED once into a cache shared between runs
(``FLUXO_TEST_NODERED_HOME``, default ``$XDG_CACHE_HOME/fluxo/test-nodered``: installing takes
~30 s, reusing ~1 s), starts it from a fresh temporary Fluxo home on a free port with
``FLUXO_TOKEN`` set to a random test token, and ``FLUXO_TOKEN_GLOBEX`` to another, for account
``globex`` (tests register these values in their Fluxo database so the flows' gateway calls
authenticate), and stops it at the end. Its Admin API needs a login, as a user's does (adminAuth
is on by default): tests send ``admin_headers`` or give engines the ``admin_token``, which the
fixture gets once by the ``POST /auth/token`` password flow. When Node-RED cannot be installed
or started (no Node.js/npm, no registry), the tests skip saying why, except under ``CI=true``
where that is a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engines.nodered.managed import ManagedNodeRed
from fluxo_core.errors import FluxoError

IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class RunningNodeRed:
    """The session's Node-RED.

    Attributes:
        url: its Admin API and ``http in`` root, with a trailing slash.
        token: the ``FLUXO_TOKEN`` its flows send to Fluxo (register it as an API token).
        globex_token: ``FLUXO_TOKEN_GLOBEX``, which the flows of account ``globex`` send
            instead (one engine token per account on one Node-RED).
        managed: the managed instance (home, log file, ``status()``).
        admin_token: an Admin API bearer token (from ``POST /auth/token`` as user ``admin``).
    """

    url: str
    token: str
    globex_token: str
    managed: ManagedNodeRed
    admin_token: str

    @property
    def admin_headers(self) -> dict[str, str]:
        """Headers that authenticate an Admin API call."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def log_file(self) -> Path:
        return self.managed.log_file


def _cache_dir() -> Path:
    configured = os.environ.get("FLUXO_TEST_NODERED_HOME")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fluxo" / "test-nodered"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One installer at a time per cache (parallel sessions share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def nodered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNodeRed]:
    """Install (cached) and start the managed Node-RED; stop it after the session."""
    cache = _cache_dir()
    home = tmp_path_factory.mktemp("fluxo-home") / "nodered"
    managed = ManagedNodeRed(home, app_dir=cache / "app")
    token, globex_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    try:
        with _locked(cache / "install.lock"):
            managed.install(port=_free_port())
        env = {"FLUXO_TOKEN": token, "FLUXO_TOKEN_GLOBEX": globex_token}
        status = managed.start(env=env, wait_s=60)
    except (FluxoError, OSError) as exc:
        message = f"the managed Node-RED could not be installed or started: {exc}"
        if IN_CI:
            pytest.fail(f"{message}; CI must be able to run `fluxo nodered install`")
        pytest.skip(
            f"{message}; install Node.js >= 18.5 with npm and allow access to the npm registry "
            "(or set FLUXO_TEST_NODERED_HOME to a directory with node-red installed in app/)"
        )
    try:
        login = managed.admin_login(status.url)
        assert login is not None, "the managed Node-RED must have admin auth on by default"
        yield RunningNodeRed(
            url=status.url,
            token=token,
            globex_token=globex_token,
            managed=managed,
            admin_token=admin_token(status.url, *login),
        )
    finally:
        managed.stop()


def admin_token(url: str, username: str, password: str) -> str:
    """A token from Node-RED's ``POST /auth/token`` password flow."""
    response = httpx.post(
        url + "auth/token",
        data={
            "client_id": "node-red-admin",
            "grant_type": "password",
            "scope": "*",
            "username": username,
            "password": password,
        },
        timeout=10,
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token
