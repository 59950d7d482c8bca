"""``fluxo block add|list|lift|audit``, ``fluxo jobs resume|retry`` and ``fluxo workflow
pause|resume|status``: blocks and job control, from the API (``FLUXO_URL``) or locally.

Without ``FLUXO_URL`` the commands work on the local database as the admin account (so
``--account`` may name the account whose thing is blocked).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any
from urllib.parse import quote

from fluxo.cli._client import HttpClient, LocalClient, open_client
from fluxo_core.config import FluxoConfig
from fluxo_core.storage.blocks import BLOCK_KINDS

__all__ = ["add_job_actions", "add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add ``block`` and ``workflow`` to ``fluxo``'s sub-commands."""
    p = subparsers.add_parser(
        "block",
        help="block an account, user, workflow, service or trigger; list and lift blocks",
        description="A block stops its target's jobs at their next step (they end blocked) and "
        "refuses new ones, within a second, on every engine. Lifting it does not restart the "
        "stopped jobs: resume them with `fluxo jobs resume ID`.",
    )
    actions = p.add_subparsers(required=True, metavar="ACTION")
    q = actions.add_parser("add", help="place a block")
    q.add_argument("kind", choices=BLOCK_KINDS)
    q.add_argument(
        "target",
        nargs="?",
        help="the user id, workflow, service or trigger name (an account block: the account)",
    )
    q.add_argument("--reason", required=True, help="why (shown to whoever is refused)")
    q.add_argument("--until", help="end by itself at this RFC 3339 time (e.g. 2026-12-31T18:00Z)")
    q.add_argument(
        "--account", help="the account whose thing is blocked (admin account tokens only)"
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_add)
    q = actions.add_parser("list", help="blocks, newest first")
    q.add_argument("--active", action="store_true", help="only those that hold now")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_list)
    q = actions.add_parser("lift", help="lift a block (its stopped jobs then wait for resume)")
    q.add_argument("block_id")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_lift)
    q = actions.add_parser("audit", help="every place and lift, newest first")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_audit)

    p = subparsers.add_parser("workflow", help="pause or resume a workflow's new jobs")
    actions = p.add_subparsers(required=True, metavar="ACTION")
    for name, help_text in (
        ("pause", "new jobs are created queued and wait (triggers' jobs too)"),
        ("resume", "start the queued jobs, oldest first, and new ones from now on"),
        ("status", "whether the workflow is paused"),
    ):
        q = actions.add_parser(name, help=help_text)
        q.add_argument("name", help="the workflow's name")
        q.set_defaults(func=_cmd_workflow, action=name)


def add_job_actions(jobs_sub: Any) -> None:
    """Add ``resume`` and ``retry`` to ``fluxo jobs``."""
    q = jobs_sub.add_parser(
        "resume", help="continue a blocked job from its blocked step (once the block is lifted)"
    )
    q.add_argument("job_id")
    q.set_defaults(func=_cmd_job, action="resume")
    q = jobs_sub.add_parser(
        "retry", help="continue a failed job from its failed step, with its stored input"
    )
    q.add_argument("job_id")
    q.set_defaults(func=_cmd_job, action="retry")


def _open(config: FluxoConfig) -> Any:
    return open_client(config, os.environ.get("FLUXO_URL"), os.environ.get("FLUXO_TOKEN"))


async def _cmd_add(args: argparse.Namespace, config: FluxoConfig) -> int:
    body: dict[str, Any] = {"kind": args.kind, "reason": args.reason}
    if args.target is not None:
        body["target"] = args.target
    if args.until is not None:
        body["ends_at"] = args.until
    if args.account is not None:
        body["account"] = args.account
    async with _open(config) as client:
        if isinstance(client, HttpClient):
            block = await client.call("POST", "/v1/blocks", body)
        else:
            block = _dump(await _local(client).blocks.place(client.principal, **body))
    _print_block(block, args.json)
    return 0


async def _cmd_list(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _open(config) as client:
        if isinstance(client, HttpClient):
            query = "?active=true" if args.active else ""
            items = (await client.call("GET", f"/v1/blocks{query}"))["items"]
        else:
            found = await _local(client).blocks.find(client.principal, active_only=args.active)
            items = [_dump(b) for b in found]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    for b in items:
        state = "active" if b["active"] else ("lifted" if b["lifted_at"] else "ended")
        until = f" until {b['ends_at']}" if b["ends_at"] else ""
        print(
            f"{b['id']}  {state:7} {b['account_id']}  {b['kind']} {b['target']}  "
            f"{b['reason']!r}  by {b['placed_by']} at {b['placed_at']}{until}"
        )
    return 0


async def _cmd_lift(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _open(config) as client:
        if isinstance(client, HttpClient):
            block = await client.call("DELETE", f"/v1/blocks/{quote(args.block_id, safe='')}")
        else:
            block = _dump(await _local(client).blocks.lift(client.principal, args.block_id))
    _print_block(block, args.json)
    return 0


async def _cmd_audit(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _open(config) as client:
        if isinstance(client, HttpClient):
            items = (await client.call("GET", "/v1/blocks/audit"))["items"]
        else:
            items = [_dump(e) for e in await _local(client).blocks.audit(client.principal)]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    for e in items:
        print(f"{e['at']}  {e['action']:5} {e['block_id']}  {e['account_id']}  by {e['actor']}")
    return 0


async def _cmd_job(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _open(config) as client:
        if isinstance(client, HttpClient):
            path = f"/v1/jobs/{quote(args.job_id, safe='')}/{args.action}"
            job = await client.call("POST", path)
        else:
            control = _local(client).job_control
            method = control.resume if args.action == "resume" else control.retry
            job = _dump(await method(client.principal, args.job_id))
            # A local platform stops with this command: let the job run to its end here.
            job = await client.job(args.job_id, wait=300)
    print(f"{job['id']}  {job['status']}")
    return 0


async def _cmd_workflow(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _open(config) as client:
        if isinstance(client, HttpClient):
            path = f"/v1/workflows/{quote(args.name, safe='')}/pause"
            if args.action == "resume":
                path = path.removesuffix("pause") + "resume"
            state = await client.call("GET" if args.action == "status" else "POST", path)
        else:
            control = _local(client).job_control
            method = {
                "pause": control.pause_workflow,
                "resume": control.resume_workflow,
                "status": control.workflow_pause,
            }[args.action]
            state = (await method(client.principal, args.name)).to_dict()
    if state["paused"]:
        print(f"{state['workflow']}  paused by {state['paused_by']}")
    else:
        started = state.get("jobs_started")
        print(
            f"{state['workflow']}  running"
            + (f" ({started} queued jobs started)" if started else "")
        )
    return 0


def _local(client: LocalClient) -> Any:
    return client.platform


def _dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(mode="json"))


def _print_block(block: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(block, indent=2))
        return
    state = "active" if block["active"] else "lifted" if block["lifted_at"] else "ended"
    print(f"{block['id']}  {state}  {block['kind']} {block['target']}  {block['reason']!r}")
