"""Secrets as a user meets them: `fluxo up` and its log, the admin token, `fluxo secret`.

Real processes: the server runs as `fluxo up` with its log going to a file, as under a service
manager; the terminal case runs it on a pseudo-terminal.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.fluxo_process import REPO, fluxo_env, free_port, run_fluxo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

VALUE = "sk_live_51HxQ9dLkT0pFromStdin"


fluxo = run_fluxo


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    home: Path
    log: Path
    output: str


def _read_until(fd: int, marker: bytes, deadline: float) -> bytes:
    seen = b""
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the pseudo-terminal closed: the process ended
                break
            if not chunk:
                break
            seen += chunk
    if marker in seen:  # the rest of the line
        while not seen.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                seen += os.read(fd, 4096)
    return seen


@contextlib.contextmanager
def fluxo_up(home: Path, *, terminal: bool) -> Iterator[Server]:
    """`fluxo up` with stdout on a pipe (or a pseudo-terminal) and stderr, its log, in a file."""
    port = free_port()
    log = home / "server.log"
    home.mkdir(exist_ok=True)
    reader, writer = os.openpty() if terminal else os.pipe()
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fluxo.cli", "up"],
            env=fluxo_env(home, FLUXO_PORT=str(port)),
            cwd=REPO,
            stdout=writer,
            stderr=log_file,
        )
    os.close(writer)
    try:
        output = _read_until(reader, b"admin token", time.monotonic() + 60).decode()
        assert f"Fluxo is running at http://127.0.0.1:{port}" in output, output
        yield Server(proc, f"http://127.0.0.1:{port}", port, home, log, output)
    finally:
        proc.terminate()
        proc.wait(20)
        os.close(reader)


def _malformed_request(port: int, token: str) -> bytes:
    """A request whose Authorization header holds a control byte: aiohttp's parser refuses it
    and logs the raw header line."""
    raw = (
        b"GET /v1/services HTTP/1.1\r\nHost: fluxo\r\n"
        + f"Authorization: Bearer {token}".encode()
        + b"\x01\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_server_log_keeps_no_token_and_the_home_is_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with fluxo_up(home, terminal=False) as server:
        token = (home / "admin.token").read_text().strip()
        assert token not in server.output  # not a terminal: only where the token is
        answer = _malformed_request(server.port, token)
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer
        # The running server's files: the home, the database and its WAL files, the token.
        assert _mode(home) == 0o700
        for name in ("fluxo.db", "fluxo.db-wal", "fluxo.db-shm", "admin.token"):
            assert _mode(home / name) == 0o600, name
        # A secret set through the API by the CLI (value on stdin, never in argv).
        result = fluxo(
            "secret", "set", "stripe", home=tmp_path / "client", stdin=VALUE + "\n",
            FLUXO_URL=server.url, FLUXO_TOKEN=token,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "secret/stripe created"
        listed = httpx.get(
            f"{server.url}/v1/secrets", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        assert [i["name"] for i in listed["items"]] == ["stripe"]
    log = server.log.read_text()
    assert "Error handling request" in log  # the parser's complaint is logged...
    assert "Authorization: ***" in log  # ...with the header line it quotes, redacted
    assert token not in log
    assert token[4:] not in log
    assert VALUE not in log
    assert _mode(home / "secret.key") == 0o600


def test_the_admin_token_is_shown_once_on_a_terminal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with fluxo_up(home, terminal=True) as first:
        token = (home / "admin.token").read_text().strip()
        assert token in first.output
        assert "shown this once" in first.output
    with fluxo_up(home, terminal=True) as second:
        assert token not in second.output
        assert f"admin token: in {home / 'admin.token'}" in second.output
    assert token not in first.log.read_text()  # the log never has it


def test_secret_commands_on_the_local_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert fluxo("token", "--account", "acme", "--user", "ada", home=home).returncode == 0
    result = fluxo("secret", "set", "crm.api-key", "--account", "acme", home=home, stdin=VALUE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "secret/crm.api-key created"
    again = fluxo("secret", "set", "crm.api-key", "--account", "acme", home=home, stdin="v2\n")
    assert again.stdout.strip() == "secret/crm.api-key updated"
    listed = fluxo("secret", "list", "--account", "acme", home=home)
    assert listed.stdout.split() == ["crm.api-key"]
    assert fluxo("secret", "list", home=home).stdout.split() == []  # the default account's

    with sqlite3.connect(home / "fluxo.db") as conn:
        stored = b"".join(bytes(r[0]) for r in conn.execute("SELECT ciphertext FROM secrets"))
    assert stored
    assert VALUE.encode() not in stored
    assert b"v2" not in stored
    assert _mode(home / "secret.key") == 0o600
    assert _mode(home) == 0o700

    empty = fluxo("secret", "set", "x", "--account", "acme", home=home, stdin="")
    assert empty.returncode == 1
    assert "no value for secret 'x'" in empty.stderr
    nobody = fluxo("secret", "set", "x", "--account", "nobody", home=home, stdin="v")
    assert nobody.returncode == 1
    assert "account 'nobody' does not exist" in nobody.stderr
    bad = fluxo("secret", "set", "has space", "--account", "acme", home=home, stdin="v")
    assert bad.returncode == 1
    assert "name" in bad.stderr

    deleted = fluxo("secret", "delete", "crm.api-key", "--account", "acme", home=home)
    assert deleted.stdout.strip() == "secret/crm.api-key deleted"
    assert fluxo("secret", "list", "--account", "acme", home=home).stdout.split() == []
    missing = fluxo("secret", "delete", "crm.api-key", "--account", "acme", home=home)
    assert missing.returncode == 1
    assert "not set in account 'acme'" in missing.stderr
