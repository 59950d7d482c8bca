"""``fluxo nodered install|start|stop|status``: the managed local Node-RED.

Wired into ``fluxo`` by :func:`add_parser`; also runnable on its own
(``python -m fluxo.cli._nodered install``), which ``.ci/run`` relies on. The work is done by
:class:`engines.nodered.ManagedNodeRed`; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.nodered.managed import (
    DEFAULT_PORT,
    NODE_RED_VERSION,
    ManagedNodeRed,
    ManagedStatus,
    read_env_file,
)
from fluxo_core.errors import FluxoError

__all__ = ["add_parser", "main", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``nodered`` and its actions to ``fluxo``'s sub-commands.

    Sets ``func`` to a coroutine ``(args, config) -> int`` as ``fluxo``'s other commands do.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "nodered", help="a managed local Node-RED: install, start, stop, status"
    )
    _add_actions(parser)
    parser.set_defaults(func=_command)
    return parser


def _add_actions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        help="the managed directory (default $FLUXO_HOME/nodered, i.e. ~/.fluxo/nodered)",
    )
    actions = parser.add_subparsers(dest="nodered_action", required=True, metavar="ACTION")

    p = actions.add_parser("install", help="install the pinned Node-RED and write its settings")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default 1880)")
    p.add_argument("--editor", action="store_true", help="serve the flow editor too")
    p.add_argument(
        "--admin-auth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="require a login for the Admin API and the editor (default: on; user 'admin', "
        "password generated and kept in admin.password); --no-admin-auth lets every local "
        "process deploy flows",
    )
    p.add_argument("--no-metrics", action="store_true", help="do not log every node event")
    p.add_argument(
        "--version",
        dest="nodered_version",
        default=NODE_RED_VERSION,
        help=f"the node-red version (default {NODE_RED_VERSION})",
    )
    p.add_argument(
        "--node-dist",
        action="store_true",
        help="run on a Node 22 binary from the npm registry even if the system's Node would do",
    )
    p.add_argument("--force", action="store_true", help="reinstall node-red")
    p.add_argument("--json", action="store_true", help="print the status as JSON")

    p = actions.add_parser("start", help="start it in the background and wait until it answers")
    p.add_argument("--port", type=int, help="listen port (default: the installed one)")
    p.add_argument(
        "--token-env-file",
        type=Path,
        help="KEY=VALUE lines (or just the token) for the flows' environment, e.g. FLUXO_TOKEN; "
        "default: FLUXO_TOKEN is inherited from this environment",
    )
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait (default 60)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")

    actions.add_parser("stop", help="stop it")

    p = actions.add_parser("status", help="running or stopped, and its version")
    p.add_argument("--json", action="store_true", help="print the status as JSON")


async def _command(args: argparse.Namespace, config: Any) -> int:
    """The ``fluxo nodered`` command as ``fluxo``'s dispatcher calls it."""
    if args.home is None:
        args.home = Path(config.home) / "nodered"
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Do ``args.nodered_action``; 0 on success. Raises FluxoError on failure."""
    home = args.home if args.home is not None else _default_home()
    managed = ManagedNodeRed(home, progress=lambda line: print(line, file=sys.stderr))
    action = args.nodered_action
    if action == "install":
        status = managed.install(
            port=args.port,
            editor=args.editor,
            admin_auth=args.admin_auth,
            metrics=not args.no_metrics,
            version=args.nodered_version,
            node_dist=args.node_dist,
            force=args.force,
        )
        if args.json:
            _print_json(status)
        else:
            print(f"node-red {status.installed} installed in {status.home}")
            if status.admin_auth:
                print(f"admin user 'admin', password in {status.password_file}")
            else:
                print("warning: the Admin API has no login: any local process can deploy flows")
        return 0
    if action == "start":
        env = read_env_file(args.token_env_file) if args.token_env_file else {}
        names = [*env, *(k for k, v in os.environ.items() if v)]
        if not any(n == "FLUXO_TOKEN" or n.startswith("FLUXO_TOKEN_") for n in names):
            print(
                "warning: neither FLUXO_TOKEN nor FLUXO_TOKEN_<ACCOUNT> is set, so the flows "
                "cannot call Fluxo; pass --token-env-file or export FLUXO_TOKEN",
                file=sys.stderr,
            )
        status = managed.start(env=env, port=args.port, wait_s=args.wait)
        if args.json:
            _print_json(status)
        else:
            print(_started(status))
        return 0
    if action == "stop":
        was_running = managed.stop()
        print("stopped" if was_running else "not running")
        return 0
    status = managed.status()
    if args.json:
        _print_json(status)
    elif status.running:
        print(f"running  {status.url}  pid {status.pid}  node-red {status.version or '?'}")
    else:
        installed = (
            f"node-red {status.installed} installed" if status.installed else "not installed"
        )
        print(f"stopped  ({installed} in {status.home})")
    return 0


def _started(status: ManagedStatus) -> str:
    """What ``start`` prints: the editor's URL only when there is an editor to open."""
    login = f"user admin, password in {status.password_file}" if status.admin_auth else "no login"
    if status.editor:
        return f"editor: {status.url} ({login})"
    return (
        f"node-red is running (pid {status.pid}, port {status.port}; Admin API only, {login}; "
        "`fluxo nodered install --editor` serves the editor)"
    )


def _default_home() -> Path:
    """``$FLUXO_HOME/nodered`` (FLUXO_HOME defaults to ~/.fluxo, as in FluxoConfig)."""
    return Path(os.environ.get("FLUXO_HOME") or Path.home() / ".fluxo").expanduser() / "nodered"


def _print_json(status: ManagedStatus) -> None:
    print(json.dumps(status.to_dict(), indent=2, sort_keys=True))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fluxo.cli._nodered ACTION``: the same as ``fluxo nodered ACTION``."""
    parser = argparse.ArgumentParser(
        prog="fluxo nodered", description="A managed local Node-RED under the Fluxo home."
    )
    _add_actions(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except FluxoError as exc:
        print(f"fluxo nodered: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
