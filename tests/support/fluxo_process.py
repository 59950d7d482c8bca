"""Fluxo as a user runs it: the `fluxo` command in a child process, with a Fluxo home of its own.

Every test that runs `fluxo ...` or `fluxo up` as a real process starts it here, so they all get
the same hermetic environment (no database URL, server URL, token or port inherited from the
machine's shell) and the same start-up handshake.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO", "UpProcess", "fluxo_env", "fluxo_up", "free_port", "run_fluxo"]

REPO = Path(__file__).resolve().parents[2]
# What a developer's shell may have set that would point a test's Fluxo somewhere else.
_INHERITED = (
    "FLUXO_DATABASE_URL",
    "FLUXO_PORT",
    "FLUXO_PUBLIC_URL",
    "FLUXO_URL",
    "FLUXO_TOKEN",
    "FLUXO_SECRET_KEY",
)


def fluxo_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `fluxo` process whose home is ``home``, plus ``extra``."""
    env = dict(os.environ, FLUXO_HOME=str(home))
    for name in _INHERITED:
        env.pop(name, None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_fluxo(
    *args: str, home: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `fluxo ARGS` to its end; its exit code and output are the caller's to check."""
    return subprocess.run(
        [sys.executable, "-m", "fluxo.cli", *args],
        env=fluxo_env(home, **env),
        cwd=REPO,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class UpProcess:
    """A running `fluxo up` and what it printed until it was ready."""

    proc: subprocess.Popen[str]
    output: str

    @property
    def url(self) -> str:
        """The URL it says it runs at."""
        for line in self.output.splitlines():
            if line.startswith("Fluxo is running at "):
                return line.removeprefix("Fluxo is running at ").strip()
        raise AssertionError(f"fluxo up did not say where it runs:\n{self.output}")


@contextlib.contextmanager
def fluxo_up(*args: str, home: Path, **env: str) -> Iterator[UpProcess]:
    """`fluxo up ARGS`, ready once it printed its admin-token line; stopped (SIGTERM) at exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxo.cli", "up", *args],
        env=fluxo_env(home, **env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "admin token" in line or not line:  # ready, or ended
                break
        yield UpProcess(proc, "".join(lines))
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stdout is not None:
            proc.stdout.close()
