"""A managed local Node-RED under the Fluxo home: install, start, stop, status.

``fluxo nodered install|start|stop|status``, the test fixtures and ``.ci/run`` all use this one
class, so the Node-RED the tests run is the one users run. Layout (``$FLUXO_HOME/nodered/``)::

    app/                  package.json pinning node-red, node_modules/ (npm install; another
                          directory when install was given one, recorded in managed.json)
    node/                 a Node 22 binary from the npm registry, only when the system's is too old
    data/                 userDir: settings.js (headless, loopback only), flows.json
    credential.secret     the key of flows_cred.json (0600; settings.js reads it, never embeds it)
    admin.password        the password of the adminAuth user ``admin`` (0600; settings.js holds
                          only its bcrypt hash), unless installed with ``admin_auth=False``
    managed.json          what install chose: versions, node binary, port, editor, admin auth
    nodered.pid           the running process (its own session: it outlives the command)
    nodered.log           its console log (metrics events included)

Why each setting (Node-RED validates little and defaults to a desktop tool): ``uiHost`` loopback
so nothing outside the machine reaches the Admin API; ``adminAuth`` on, because loopback is not a
boundary between local users and processes, and whoever can deploy a flow runs code as the
Node-RED user (the engine logs in with the ``POST /auth/token`` password flow, see
:meth:`ManagedNodeRed.admin_login`); ``credentialSecret`` fixed, or Node-RED
makes a random key and ``flows_cred.json`` becomes unreadable after a move; ``disableEditor``
unless asked (the Admin API keeps working); ``metrics`` on in the console logger so every node's
receive/send/done is observable from outside; external module installs off (flows cannot pull
code from npm at run time); the flows read the Fluxo API token from the ``FLUXO_TOKEN``
environment variable, passed at start and never written to disk by Fluxo or printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from fluxo_core.errors import ConfigError, FluxoError

__all__ = [
    "DEFAULT_PORT",
    "NODE_DIST_VERSION",
    "NODE_RED_VERSION",
    "ManagedNodeRed",
    "ManagedStatus",
    "NodeRedInstallError",
    "read_env_file",
]

NODE_RED_VERSION: Final = "4.1.15"
"""The pinned Node-RED: 4.1.x runs on Node >= 18.5 (5.x needs Node >= 22.9)."""
NODE_DIST_VERSION: Final = "22.22.0"
"""The Node binary fetched from the npm registry (``node-<os>-<arch>``) when the system's is old."""
DEFAULT_PORT: Final = 1880
ADMIN_USER: Final = "admin"

# Launches Node-RED in its own session and prints its pid, then exits: the server outlives the
# command that started it and is never a zombie child of a long-lived caller (a test session).
_LAUNCHER: Final = """
import os, subprocess, sys
log = open(sys.argv[1], "ab")
proc = subprocess.Popen(sys.argv[3:], cwd=sys.argv[2], stdin=subprocess.DEVNULL, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
sys.stdout.write(str(proc.pid))
sys.stdout.flush()
os._exit(0)
"""


class NodeRedInstallError(FluxoError):
    """The managed Node-RED could not be installed, started or stopped (the message says why)."""

    code = "nodered_managed"


@dataclass(frozen=True)
class ManagedStatus:
    """What ``fluxo nodered status`` reports.

    Attributes:
        running: whether the managed process is alive.
        pid: its pid, when running.
        url: where its Admin API (and the flows' ``http in`` routes) answer.
        port: its port.
        installed: the installed Node-RED version (None: not installed).
        version: the version the running server reports (None: not running or not answering).
        home: the managed directory.
        log_file: its console log.
        editor: whether the editor is served.
        admin_auth: whether the Admin API needs a login (user ``admin``, see ``password_file``).
        password_file: where the admin password is kept (0600).
    """

    running: bool
    pid: int | None
    url: str
    port: int
    installed: str | None
    version: str | None
    home: str
    log_file: str
    editor: bool
    admin_auth: bool
    password_file: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ManagedNodeRed:
    """One Node-RED installed and run under ``home`` (``$FLUXO_HOME/nodered``).

    Args:
        home: the managed directory (the CLI passes ``$FLUXO_HOME/nodered``).
        app_dir: where node-red's ``node_modules`` live; default ``home/app``. Tests point several
            homes at one cached install, since installing takes half a minute.
        progress: called with one line per slow step (the CLI prints them to stderr).
    """

    def __init__(
        self,
        home: Path,
        *,
        app_dir: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.home = Path(home).expanduser()
        self.state_file = self.home / "managed.json"
        recorded = self._state(required=False).get("app_dir")
        # An install elsewhere (a test cache) is recorded, so `fluxo nodered start` finds it too.
        self.app_dir = (
            Path(app_dir).expanduser()
            if app_dir
            else Path(recorded)
            if isinstance(recorded, str) and recorded
            else self.home / "app"
        )
        self.data_dir = self.home / "data"
        self.settings_file = self.data_dir / "settings.js"
        self.secret_file = self.home / "credential.secret"
        self.password_file = self.home / "admin.password"
        self.pid_file = self.home / "nodered.pid"
        self.log_file = self.home / "nodered.log"
        self._progress = progress or (lambda _line: None)

    # -- install --------------------------------------------------------------------------------

    def install(
        self,
        *,
        port: int = DEFAULT_PORT,
        editor: bool = False,
        admin_auth: bool = True,
        metrics: bool = True,
        version: str = NODE_RED_VERSION,
        node_dist: bool = False,
        force: bool = False,
    ) -> ManagedStatus:
        """Install Node-RED (once) and write its settings (every time; cheap and idempotent).

        Args:
            port: the port it listens on (loopback only).
            editor: serve the flow editor too (the Admin API works either way).
            admin_auth: protect the Admin API (and the editor) with the user ``admin`` and a
                password generated at the first install and kept in ``admin.password``. Turn it
                off only where no other local user or process may deploy flows.
            metrics: log every node event (receive/send/done with the message id).
            version: the node-red version to install.
            node_dist: use a Node binary from the npm registry even if the system's would do.
            force: reinstall node-red even when the same version is installed.
        """
        _check_port(port)
        self.home.mkdir(parents=True, exist_ok=True)
        node = self._ensure_node(version, force_dist=node_dist)
        if force or self.installed_version() != version:
            self._npm_install(node, version)
        else:
            self._progress(f"node-red {version} is already installed in {self.app_dir}")
        _write_secret(self.secret_file, lambda: secrets.token_hex(32))
        password_hash = None
        if admin_auth:
            password = _write_secret(self.password_file, lambda: secrets.token_urlsafe(24))
            password_hash = self._bcrypt(node, password)
        # Earlier installs kept a static admin token beside it; settings.js no longer reads it.
        (self.home / "admin.token").unlink(missing_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Node-RED writes its login sessions (.sessions.json: bearer tokens) and the flows with
        # the process umask: only the owner may enter the directories that hold them.
        self.home.chmod(0o700)
        self.data_dir.chmod(0o700)
        _write_private(
            self.settings_file,
            self._settings_js(editor=editor, password_hash=password_hash, metrics=metrics),
        )
        state = {
            "node_red_version": version,
            "node": node,
            "app_dir": str(self.app_dir),
            "port": port,
            "editor": editor,
            "admin_auth": admin_auth,
            "metrics": metrics,
        }
        _write_private(self.state_file, json.dumps(state, indent=2) + "\n")
        return self.status()

    def installed_version(self) -> str | None:
        """The version of node-red in ``app_dir`` (None when absent)."""
        try:
            package = json.loads(
                (self.app_dir / "node_modules" / "node-red" / "package.json").read_text()
            )
        except (OSError, ValueError):
            return None
        value = package.get("version") if isinstance(package, dict) else None
        return value if isinstance(value, str) else None

    def _ensure_node(self, version: str, *, force_dist: bool) -> str:
        """A Node binary new enough for ``version`` of node-red: the system's, else a download."""
        needed = (22, 9) if _major(version) >= 5 else (18, 5)
        system = shutil.which("node")
        if system and not force_dist:
            found = _node_version(system)
            if found is not None and found >= needed:
                return system
            have = ".".join(map(str, found)) if found else "unknown"
            self._progress(
                f"the system's Node.js ({have}) is older than {'.'.join(map(str, needed))}; "
                f"fetching Node {NODE_DIST_VERSION} from the npm registry"
            )
        return self._download_node()

    def _download_node(self) -> str:
        target = self.home / "node"
        binary = target / "package" / "bin" / "node"
        if binary.exists() and _node_version(str(binary)) is not None:
            return str(binary)
        npm = shutil.which("npm")
        if npm is None:
            raise NodeRedInstallError(
                "npm is needed to fetch Node-RED (and a Node.js binary) from the npm registry; "
                "install Node.js 18.5 or later with npm, then run `fluxo nodered install` again"
            )
        package = f"{_node_dist_package()}@{NODE_DIST_VERSION}"
        with tempfile.TemporaryDirectory(prefix="fluxo-node-") as tmp:
            _run(
                [npm, "pack", package, "--pack-destination", tmp],
                cwd=tmp,
                what=f"npm pack {package}",
            )
            tarballs = list(Path(tmp).glob("*.tgz"))
            if not tarballs:
                raise NodeRedInstallError(f"npm pack {package} wrote no tarball")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with tarfile.open(tarballs[0]) as archive:
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(target, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    archive.extractall(target)  # a registry package we asked for by name
        if not binary.exists():
            raise NodeRedInstallError(f"{package} holds no bin/node; cannot run Node-RED")
        binary.chmod(0o755)
        return str(binary)

    def _npm_install(self, node: str, version: str) -> None:
        self.app_dir.mkdir(parents=True, exist_ok=True)
        package = {
            "name": "fluxo-managed-nodered",
            "private": True,
            "description": "Node-RED managed by Fluxo (fluxo nodered install)",
            "dependencies": {"node-red": version},
        }
        (self.app_dir / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        # The npm that comes with a downloaded Node when there is one: an old system npm may not
        # read today's lockfiles.
        bundled = Path(node).parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        npm = [node, str(bundled)] if bundled.exists() else [shutil.which("npm") or "npm"]
        self._progress(f"installing node-red {version} into {self.app_dir} (about 30 s)")
        env = {**os.environ, "PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        _run(
            [
                *npm,
                "install",
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--loglevel=error",
            ],
            cwd=str(self.app_dir),
            what=f"npm install node-red@{version}",
            env=env,
        )
        if self.installed_version() != version:
            raise NodeRedInstallError(
                f"npm install finished but {self.app_dir}/node_modules/node-red is not {version}"
            )

    def _bcrypt(self, node: str, password: str) -> str:
        """adminAuth wants a bcrypt hash: computed with the bcryptjs that node-red ships."""
        script = (
            "process.stdout.write(require('bcryptjs').hashSync(process.env.FLUXO_NODERED_PW, 10))"
        )
        out = _run(
            [node, "-e", script],
            cwd=str(self.app_dir),
            what="hash the admin password",
            env={**os.environ, "FLUXO_NODERED_PW": password},
        )
        if not out.startswith("$2"):
            raise NodeRedInstallError("could not hash the admin password with bcryptjs")
        return out.strip()

    def _settings_js(self, *, editor: bool, password_hash: str | None, metrics: bool) -> str:
        def js(value: Any) -> str:
            return json.dumps(value)

        admin = ""
        if password_hash is not None:
            admin = f"""
    // The one admin user (editor and Admin API); its password is in {self.password_file.name}.
    // Clients (the Fluxo engine, node-red-admin) get a token by POST /auth/token.
    adminAuth: {{
        type: "credentials",
        users: [{{ username: {js(ADMIN_USER)}, password: {js(password_hash)}, permissions: "*" }}],
    }},"""
        return f"""// Written by `fluxo nodered install`; rewritten on every install (edits are lost).
// A headless Node-RED for Fluxo: loopback only, settings explained in engines/nodered/managed.py.
const fs = require("fs");

module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: Number(process.env.FLUXO_NODERED_PORT) || {DEFAULT_PORT},
    userDir: {js(str(self.data_dir))},
    flowFile: "flows.json",
    flowFilePretty: true,
    credentialSecret: fs.readFileSync({js(str(self.secret_file))}, "utf8").trim(),
    httpAdminRoot: "/",
    httpNodeRoot: "/",
    disableEditor: {js(not editor)},{admin}
    runtimeState: {{ enabled: true, ui: false }},
    telemetry: {{ enabled: false, updateNotification: false }},
    diagnostics: {{ enabled: true, ui: false }},
    externalModules: {{
        autoInstall: false,
        palette: {{ allowInstall: false, allowUpload: false }},
        modules: {{ allowInstall: false }},
    }},
    functionExternalModules: false,
    exportGlobalContextKeys: false,
    logging: {{
        console: {{ level: "info", metrics: {js(metrics)}, audit: false }},
    }},
    editorTheme: {{ projects: {{ enabled: false }}, tours: false }},
}};
"""

    # -- run ------------------------------------------------------------------------------------

    def start(
        self,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        wait_s: float = 60.0,
    ) -> ManagedStatus:
        """Start Node-RED in the background (no-op when it already runs) and wait until it answers.

        Args:
            env: extra environment for the flows, e.g. ``{"FLUXO_TOKEN": ...}``; the rest of the
                environment is passed through.
            port: listen here instead of the installed port.
            wait_s: how long to wait for the Admin API to answer.
        """
        state = self._state()
        current = self.status()
        if current.running:
            return current
        node = str(state.get("node") or "")
        red = self.app_dir / "node_modules" / "node-red" / "red.js"
        if not red.exists() or not node or not Path(node).exists():
            raise NodeRedInstallError(
                f"Node-RED is not installed in {self.home}; run `fluxo nodered install` first"
            )
        listen = port or int(state.get("port") or DEFAULT_PORT)
        _check_port(listen)
        if _port_busy(listen):
            raise NodeRedInstallError(
                f"port {listen} on 127.0.0.1 is taken by another process; stop it or choose "
                "another port (`fluxo nodered start --port N`)",
                port=listen,
            )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- fluxo nodered start, port {listen} ---\n".encode())
        full_env = {**os.environ, **(env or {}), "FLUXO_NODERED_PORT": str(listen)}
        command = [node, str(red), "--settings", str(self.settings_file), "--userDir"]
        command.append(str(self.data_dir))
        launched = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(self.log_file), str(self.data_dir), *command],
            env=full_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if launched.returncode != 0 or not launched.stdout.strip().isdigit():
            raise NodeRedInstallError(
                f"could not launch Node-RED: {_tail(launched.stderr)}", log_file=str(self.log_file)
            )
        pid = int(launched.stdout.strip())
        self.pid_file.write_text(f"{pid}\n")
        url = _url(listen)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise NodeRedInstallError(
                    f"Node-RED exited while starting; the end of {self.log_file}:\n"
                    f"{_tail(self.log_file.read_text(errors='replace'))}",
                    log_file=str(self.log_file),
                )
            if _answers(url):
                return self.status(port=listen)
            time.sleep(0.2)
        raise NodeRedInstallError(
            f"Node-RED (pid {pid}) did not answer at {url} within {wait_s:.0f} s; see "
            f"{self.log_file} (it keeps running: `fluxo nodered stop` ends it)",
            log_file=str(self.log_file),
        )

    def stop(self, *, timeout_s: float = 15.0) -> bool:
        """Stop the managed Node-RED (SIGTERM, then SIGKILL after ``timeout_s``).

        Returns whether it was running. Only the pid in the pid file is signalled, and only when
        that process is a Node-RED (a stale pid file of a reused pid is just removed).
        """
        pid = self._pid()
        if pid is None or not _alive(pid) or not _is_node_red(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self, *, port: int | None = None) -> ManagedStatus:
        """Running or stopped, the installed version and, when it answers, the running one."""
        state = self._state(required=False)
        listen = port or int(state.get("port") or DEFAULT_PORT)
        pid = self._pid()
        running = pid is not None and _alive(pid) and _is_node_red(pid)
        if running and pid is not None and port is None:
            listen = _listening_port(pid) or listen  # started with --port
        url = _url(listen)
        version = self._running_version(url) if running else None
        return ManagedStatus(
            running=running,
            pid=pid if running else None,
            url=url,
            port=listen,
            installed=self.installed_version(),
            version=version,
            home=str(self.home),
            log_file=str(self.log_file),
            editor=bool(state.get("editor", False)),
            admin_auth=bool(state.get("admin_auth", False)),
            password_file=str(self.password_file),
        )

    def admin_login(self, url: str | None = None) -> tuple[str, str] | None:
        """The adminAuth user and password to log in with (``POST /auth/token``).

        Args:
            url: the Node-RED a client is about to call; the credential is given only when that
                is this managed Node-RED (loopback, its installed or running port), so that it
                is never sent to another server.

        Returns:
            ``(username, password)``; None when admin auth is off, the password file is missing,
            or ``url`` is another server.
        """
        state = self._state(required=False)
        if not state.get("admin_auth"):
            return None
        try:
            password = self.password_file.read_text().strip()
        except OSError:
            return None
        if not password or (url is not None and not self._serves(url, state)):
            return None
        return ADMIN_USER, password

    def _serves(self, url: str, state: Mapping[str, Any]) -> bool:
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            return False
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        ports = {int(state.get("port") or DEFAULT_PORT)}
        pid = self._pid()
        if pid is not None and _alive(pid) and _is_node_red(pid):
            ports.add(_listening_port(pid) or 0)  # started with --port
        return port in ports

    def _running_version(self, url: str) -> str | None:
        try:
            with self._admin_client(url) as client:
                response = client.get("settings")
                data = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return None
        value = data.get("version") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    @contextlib.contextmanager
    def _admin_client(self, url: str) -> Iterator[httpx.Client]:
        """A client of the Admin API, logged in when admin auth is on; the session it opened is
        revoked at the end (each would otherwise stay valid in Node-RED for a week)."""
        with httpx.Client(base_url=url, timeout=5.0) as client:
            login = self.admin_login()
            token = None
            if login is not None:
                response = client.post(
                    "auth/token",
                    data={
                        "client_id": "node-red-admin",
                        "grant_type": "password",
                        "scope": "*",
                        "username": login[0],
                        "password": login[1],
                    },
                )
                token = response.json().get("access_token") if response.is_success else None
                if isinstance(token, str):
                    client.headers["Authorization"] = f"Bearer {token}"
            try:
                yield client
            finally:
                if isinstance(token, str):
                    with contextlib.suppress(httpx.HTTPError):
                        client.post("auth/revoke", json={"token": token})

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _state(self, *, required: bool = True) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            if required:
                raise NodeRedInstallError(
                    f"Node-RED is not installed in {self.home}; run `fluxo nodered install` first"
                ) from None
            return {}
        return data if isinstance(data, dict) else {}


def read_env_file(path: Path) -> dict[str, str]:
    """Environment variables from a file: ``KEY=VALUE`` lines (``export``, quotes and ``#``
    comments allowed); a file holding just one bare value is the ``FLUXO_TOKEN``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the env file {path}: {exc.strerror}") from exc
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    if len(lines) == 1 and "=" not in lines[0]:
        return {"FLUXO_TOKEN": lines[0]}
    env: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ConfigError(f"{path}: entry {number} is not KEY=VALUE")  # no value: secret
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key] = value
    return env


# -- helpers ------------------------------------------------------------------------------------


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/"


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is not a TCP port (1-65535)", setting="port")


def _major(version: str) -> int:
    match = re.match(r"^\D*(\d+)", version)
    return int(match.group(1)) if match else 0


def _node_version(binary: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", out.strip())
    return tuple(int(p) for p in match.groups()) if match else None


def _node_dist_package() -> str:
    system = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system())
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if system is None or arch is None:
        raise NodeRedInstallError(
            f"no Node.js binary package for {platform.system()}/{platform.machine()} on the npm "
            "registry; install Node.js 18.5 or later yourself"
        )
    return f"node-{system}-{arch}"


def _run(command: list[str], *, cwd: str, what: str, env: Mapping[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NodeRedInstallError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise NodeRedInstallError(
            f"{what} failed (exit {done.returncode}):\n{_tail(done.stderr or done.stdout)}"
        )
    return done.stdout


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (settings.js names secret files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def _write_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in ``path``, made once (kept across installs: it unlocks stored credentials)."""
    with contextlib.suppress(OSError):
        value = path.read_text().strip()
        if value:
            return value
    value = make()
    _write_private(path, value + "\n")
    return value


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it has exited and waits for its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all there is
    return stat.rpartition(")")[2].split()[0] != "Z"


def _is_node_red(pid: int) -> bool:
    """Whether ``pid`` is a Node-RED (it renames itself ``node-red``; else ``.../red.js``)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid file
    return b"node-red" in cmdline or b"red.js" in cmdline


def _listening_port(pid: int) -> int | None:
    """The port the Node-RED process was told to use (its FLUXO_NODERED_PORT)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in environ.split(b"\0"):
        if item.startswith(b"FLUXO_NODERED_PORT="):
            value = item.partition(b"=")[2]
            return int(value) if value.isdigit() else None
    return None


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _answers(url: str) -> bool:
    """Whether the Admin API is up (``GET /settings``: 200, or 401 behind adminAuth)."""
    try:
        return httpx.get(url + "settings", timeout=1.0).status_code in (200, 401)
    except httpx.HTTPError:
        return False
