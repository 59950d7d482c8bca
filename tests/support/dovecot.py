"""A real Dovecot IMAP server for the tests, started on loopback with a generated configuration.

Everything lives in a temporary folder: the configuration, a passwd-file with one user, the
user's maildir, a self-signed certificate (STARTTLS on one port, TLS on another), the runtime
and log files. Run as an unprivileged user, Dovecot runs every process as that user; run as
root (a CI container), its mail processes run as ``nobody``, since Dovecot refuses mail access as
UID 0. Mail is delivered straight into the maildir (``new/``), which works while the server is
down too, as a mail transfer agent would.

``DOVECOT_BIN`` overrides the binary; without one the tests skip (with ``CI=true`` they fail):
``scripts/setup`` installs ``dovecot-imapd``.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.tls import SelfSigned, make_self_signed

USER = "ada@example.test"
PASSWORD = "imap-Pa55-9c1e7d"


def dovecot_binary() -> str | None:
    return (
        os.environ.get("DOVECOT_BIN")
        or shutil.which("dovecot")
        or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Dovecot:
    root: Path
    binary: str
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    cert: SelfSigned | None = None
    extra_config: str = ""

    @property
    def maildir(self) -> Path:
        return self.root / "home" / USER / "Maildir"

    def configure(self) -> None:
        self.cert = make_self_signed(self.root / "tls")
        me = pwd.getpwuid(os.getuid())
        if os.getuid() == 0:
            mail = pwd.getpwnam("nobody")
            internal, login = "dovecot", "dovenull"
        else:
            mail, internal, login = me, me.pw_name, me.pw_name
        home = self.root / "home" / USER
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            for path in [home.parent, home, *home.rglob("*")]:
                os.chown(path, mail.pw_uid, mail.pw_gid)
            # Dovecot's unprivileged processes read the certificate key as root at start-up;
            # the folder only has to let them reach their own runtime files.
            self.root.chmod(0o755)
        (self.root / "passwd").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{mail.pw_uid}:{mail.pw_gid}::{home}::\n"
        )
        (self.root / "run").mkdir(exist_ok=True)
        (self.root / "dovecot.conf").write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = fluxo-test-{uuid.uuid4().hex[:8]}
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.cert.cert}
ssl_key = <{self.cert.key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name}
default_login_user = {login}
first_valid_uid = {min(mail.pw_uid, 1)}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.root}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
{self.extra_config}
"""
        )

    def start(self) -> None:
        """Start the server and wait until it answers on both ports."""
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # log_path gets everything, start-up failures too
            start_new_session=True,  # its own process group: kill() takes every child along
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited at start: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer within 15 s: {self.log()}")

    def kill(self) -> None:
        """SIGKILL the server and every process of it: its connections drop at once."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP (or SIGCONT) every process of the server: its connections stay open, silent."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)  # a frozen server cannot stop
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def log(self) -> str:
        path = self.root / "dovecot.log"
        text = path.read_text(errors="replace")[-2000:] if path.exists() else ""
        return text

    def deliver(self, raw: bytes) -> None:
        """Put a message into the user's INBOX, as a local delivery agent does (tmp/, then new/)."""
        name = f"{time.time():.6f}.{uuid.uuid4().hex}.fluxo-test"
        temporary = self.maildir / "tmp" / name
        temporary.write_bytes(raw)
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(temporary, nobody.pw_uid, nobody.pw_gid)
        temporary.rename(self.maildir / "new" / name)

    def flags(self) -> dict[int, set[str]]:
        """Every message's UID and flags, read over a separate IMAP connection."""
        with imaplib.IMAP4("127.0.0.1", self.port) as imap:
            imap.starttls(self.cert.client_context() if self.cert else None)
            imap.login(USER, PASSWORD)
            imap.select("INBOX", readonly=True)
            _status, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            result: dict[int, set[str]] = {}
            for item in data:
                if not isinstance(item, bytes):
                    continue
                text = item.decode()
                uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                flags = text.split("FLAGS (")[1].split(")")[0].split()
                result[uid] = set(flags)
            return result

    def folder_count(self, folder: str) -> int:
        with imaplib.IMAP4("127.0.0.1", self.port) as imap:
            imap.starttls(self.cert.client_context() if self.cert else None)
            imap.login(USER, PASSWORD)
            status, data = imap.select(folder, readonly=True)
            return int(data[0] or 0) if status == "OK" else -1

    def create_folder(self, folder: str) -> None:
        with imaplib.IMAP4("127.0.0.1", self.port) as imap:
            imap.starttls(self.cert.client_context() if self.cert else None)
            imap.login(USER, PASSWORD)
            imap.create(folder)


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    """A running Dovecot with one user and an empty INBOX; stopped (and checked) afterwards."""
    from tests.conftest import require_server

    binary = dovecot_binary()
    require_server("Dovecot", binary is not None, "install dovecot-imapd (scripts/setup)")
    assert binary is not None
    with server_root(tmp_path) as root:
        server = Dovecot(root, binary)
        server.configure()
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def server_root(tmp_path: Path) -> Iterator[Path]:
    """The folder a Dovecot lives in. Run as root, Dovecot's unprivileged processes must reach
    their files, and pytest's own temporary folders are private (0700): use a folder of /tmp."""
    if os.getuid() != 0:
        root = tmp_path / "dovecot"
        root.mkdir()
        yield root
        return
    root = Path(tempfile.mkdtemp(prefix="fluxo-dovecot-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
