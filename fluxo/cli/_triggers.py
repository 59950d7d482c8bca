"""``fluxo triggers list|describe|pause|resume|fire``: the account's triggers and their health,
from the API (``FLUXO_URL``) or on the local database.

Triggers are made with ``fluxo apply`` (``kind: Trigger``); these commands show what they do
and hold or fire them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any
from urllib.parse import quote

from fluxo.cli._client import HttpClient, LocalClient, open_client
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ValidationError

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "triggers",
        help="list, describe, pause, resume or fire the account's triggers",
        description="Triggers (cron, webhook) are applied as resources (kind: Trigger). A "
        "paused trigger holds: cron fires no slot (resuming makes up missed slots as its "
        "catchUp says), a webhook answers 423 and creates nothing.",
    )
    actions = p.add_subparsers(required=True, metavar="ACTION")
    q = actions.add_parser("list", help="the triggers with their health")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd, action="list")
    for name, help_text in (
        ("describe", "a trigger's spec, health, last event, jobs created, next fire time"),
        ("pause", "hold a trigger (account admin)"),
        ("resume", "let a paused trigger fire again (account admin)"),
    ):
        q = actions.add_parser(name, help=help_text)
        q.add_argument("name")
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=_cmd, action=name)
    q = actions.add_parser("fire", help="fire a trigger now: one job with its input")
    q.add_argument("name")
    q.add_argument("--input", help="the job's input as a JSON object (default: the spec's)")
    q.add_argument("--event-id", help="fire once per id: the same id again gives the first job")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd, action="fire")


async def _cmd(args: argparse.Namespace, config: FluxoConfig) -> int:
    url, token = os.environ.get("FLUXO_URL"), os.environ.get("FLUXO_TOKEN")
    async with open_client(config, url, token) as client:
        if isinstance(client, HttpClient):
            result = await _remote(client, args)
        else:
            assert isinstance(client, LocalClient)
            result = await _local(client, args)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.action == "list":
        for row in result:
            print(_line(row))
    elif args.action == "fire":
        seen = " (this event fired before: its job)" if result["duplicate"] else ""
        print(f"job {result['job_id']}  {result['status']}{seen}")
    else:
        _describe(result)
    return 0


async def _remote(client: HttpClient, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return (await client.call("GET", "/v1/triggers"))["items"]
    path = f"/v1/triggers/{quote(args.name, safe='')}"
    if args.action == "describe":
        return await client.call("GET", path)
    if args.action == "fire":
        return await client.call("POST", f"{path}/fire", _fire_body(args))
    return await client.call("POST", f"{path}/{args.action}")


async def _local(client: LocalClient, args: argparse.Namespace) -> Any:
    triggers = client.platform.triggers
    who = client.principal
    if args.action == "list":
        return [{**r.to_json(), "spec": r.spec} for r in await triggers.list(who)]
    if args.action == "fire":
        body = _fire_body(args)
        fired = await triggers.fire_now(
            who, args.name, body.get("input"), event_id=body.get("event_id")
        )
        return {"job_id": fired.job_id, "status": fired.status, "duplicate": not fired.created}
    method = {"describe": triggers.get, "pause": triggers.pause, "resume": triggers.resume}
    row = await method[args.action](who, args.name)
    return {**row.to_json(), "spec": row.spec}


def _fire_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.input is not None:
        try:
            body["input"] = json.loads(args.input)
        except ValueError as exc:
            raise ValidationError(
                f"--input is not JSON: {exc}", problems=[("--input", "not JSON")]
            ) from None
    if args.event_id is not None:
        body["event_id"] = args.event_id
    return body


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _line(row: dict[str, Any]) -> str:
    state = "paused" if row["paused"] else row["health"]
    if row.get("held") and not row["paused"]:
        state = "held"
    extra = f"next {_when(row['nextFireAt'])}" if row["type"] == "cron" else ""
    return (
        f"{row['name']:20} {row['type']:8} {row['workflow']:20} {state:10} "
        f"jobs {row['jobsCreated']:<6} {extra}"
    ).rstrip()


def _describe(row: dict[str, Any]) -> None:
    fields = [
        ("Name", row["name"]),
        ("Type", row["type"]),
        ("Workflow", row["workflow"]),
        ("Health", row["health"]),
        ("Paused", f"by {row['pausedBy']}" if row["paused"] else "no"),
        ("Held", row.get("held") or "no"),
        ("Jobs created", row["jobsCreated"]),
        ("Last event", f"{row['lastEventId'] or '-'} at {_when(row['lastEventAt'])}"),
        ("Last job", row["lastJobId"] or "-"),
        ("Last error", row["lastError"] or "-"),
        ("Lag", "-" if row["lagS"] is None else f"{row['lagS']:.3f} s"),
    ]
    if row["type"] == "cron":
        fields.append(("Schedule", row["spec"].get("schedule")))
        fields.append(("Next fire", _when(row["nextFireAt"])))
    for label, value in fields:
        print(f"{label + ':':14} {value}")
