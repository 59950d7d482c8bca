"""The processes a test started, read from /proc (Linux), to show none is left behind."""

from __future__ import annotations

import os
from pathlib import Path


def descendants(pid: int | None = None) -> set[int]:
    """The live processes below ``pid`` (default: this one), children of children included.

    Zombies count: a child that exited but was never reaped is a leak too.
    """
    root = os.getpid() if pid is None else pid
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat.rpartition(")")[2].split()
        parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return found
