"""``fluxo apply|get|describe|delete``: declarative resources, as kubectl does them.

``apply -f`` reads a YAML file (several documents, ``---`` between them) or every ``.yaml``,
``.yml`` and ``.json`` file of a folder, each within the document limits, and applies them all
in one request: a problem is reported with its file and document (``orders.yaml doc[1]
spec.price.perCall``). ``get`` prints a table (NAME, kind columns, STATUS, AGE), or the documents
with ``-o yaml|json``; ``describe`` the spec, the status conditions and what happened when.

The renderings are pure functions of the documents and the time (:func:`render_table`,
:func:`render_describe`), so their output is golden-tested with a fixed clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from fluxo.cli._nodered_flows import SIDECAR_SUFFIX, Sidecars
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError, ValidationError
from fluxo_core.ir import DocumentLimits, parse_yaml_documents
from fluxo_core.ir.resources import kind_info

__all__ = ["add_parsers", "age", "load_documents", "render_describe", "render_table"]

_SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILES = 500

ClientOpener = Callable[[FluxoConfig], Any]


def add_parsers(
    subparsers: Any, client: ClientOpener, limits: Callable[[FluxoConfig], DocumentLimits]
) -> None:
    """Add ``apply``, ``get``, ``describe`` and ``delete`` to ``fluxo``'s sub-commands.

    Args:
        client: opens the client the commands use (a server with FLUXO_URL, else local).
        limits: the document limits of a file (those of a request body).
    """

    async def apply(args: argparse.Namespace, config: FluxoConfig) -> int:
        sources = await asyncio.to_thread(load_documents, Path(args.file), limits(config))
        if not sources:
            raise ValidationError(f"{args.file}: no document to apply")
        async with client(config) as api:
            try:
                results = await api.apply_resources([doc for _, doc in sources])
            except ValidationError as exc:
                raise ValidationError(
                    exc.message.split("\n")[0], problems=_in_files(exc.problems, sources)
                ) from None
        for result in results:
            print(_applied_line(result))
            for warning in result.get("warnings", []):
                print(f"warning: {result['kind'].lower()}/{result['name']}: {warning}")
        return 0

    async def get(args: argparse.Namespace, config: FluxoConfig) -> int:
        info = kind_info(args.kind)
        async with client(config) as api:
            if args.name:
                documents = [await api.resource(info.kind, args.name)]
            else:
                documents = await api.resources(info.kind)
        if args.output == "json":
            out: Any = documents[0] if args.name else {"items": documents}
            print(json.dumps(out, indent=2))
        elif args.output == "yaml":
            print(_yaml_stream(documents), end="")
        elif not documents:
            print(f"No {info.plural} found.")
        else:
            print(render_table(documents, time.time()), end="")
        return 0

    async def describe(args: argparse.Namespace, config: FluxoConfig) -> int:
        info = kind_info(args.kind)
        async with client(config) as api:
            document = await api.resource(info.kind, args.name)
        print(render_describe(document, time.time()), end="")
        return 0

    async def delete(args: argparse.Namespace, config: FluxoConfig) -> int:
        info = kind_info(args.kind)
        async with client(config) as api:
            await api.delete_resource(info.kind, args.name)
        print(f"{info.kind.lower()}/{args.name} deleted")
        return 0

    kinds = (
        "Account, User, Service, Workflow, Quota, Block, Trigger (any case, plural or short: wf)"
    )
    p = subparsers.add_parser(
        "apply",
        help="apply resources from a YAML file or a folder of them (idempotent)",
        description="Creates or updates each document. A document with metadata.resourceVersion "
        "is applied only if that is still the stored version (else: get it again). A status in "
        "a document is ignored: the platform writes it.",
    )
    p.add_argument(
        "-f", "--file", required=True, help="a YAML file (several documents allowed) or a folder"
    )
    p.set_defaults(func=apply)

    p = subparsers.add_parser("get", help="list resources of a kind, or show one")
    p.add_argument("kind", help=kinds)
    p.add_argument("name", nargs="?")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(func=get)

    p = subparsers.add_parser("describe", help="a resource: spec, status conditions, events")
    p.add_argument("kind", help=kinds)
    p.add_argument("name")
    p.set_defaults(func=describe)

    p = subparsers.add_parser("delete", help="delete a resource")
    p.add_argument("kind", help=kinds)
    p.add_argument("name")
    p.set_defaults(func=delete)


# --- reading files ------------------------------------------------------------------------------


def load_documents(
    path: Path, limits: DocumentLimits, sidecars: Sidecars | None = None
) -> list[tuple[str, Any]]:
    """Every document of ``path`` (a file, or a folder's YAML and JSON files by name, but for the
    ``*.flow.json`` flow files of imported workflows), each
    with where it came from (``orders.yaml doc[1]``). Each file is read within ``limits``.

    A workflow whose ``spec.source`` names a flow file gets the file's nodes (inline for the
    first such workflow, by digest after: :class:`~fluxo.cli._nodered_flows.Sidecars`, which
    ``sidecars`` may pass in to read the flows again without parsing them twice).

    Raises:
        ConfigError: the path does not exist or cannot be read.
        MalformedRequestError, PayloadTooLargeError, DocumentTooComplexError: a file is not
            YAML or is over the limits (the problem names the file).
    """
    if path.is_dir():
        # Node-RED flow files beside imported workflows are their sources, not documents.
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix in _SUFFIXES and not p.name.endswith(SIDECAR_SUFFIX)
        )
        if len(files) > MAX_FILES:
            raise ConfigError(
                f"{path} holds {len(files)} files; apply at most {MAX_FILES} at a time"
            )
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{path}: no such file or folder")
    sidecars = sidecars if sidecars is not None else Sidecars()
    documents: list[tuple[str, Any]] = []
    for file in files:
        raw = _read(file, limits.max_bytes)
        for index, _, data in parse_yaml_documents(raw, limits=limits, where=str(file)):
            where = f"{file} doc[{index}]"
            # A workflow imported from Node-RED names its flow file; it travels with it.
            documents.append((where, sidecars.attach(data, file.parent, where=where)))
    return documents


def _read(file: Path, max_bytes: int) -> bytes:
    try:
        with file.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
    return raw  # one byte over the limit is enough for the parser to refuse it by size


def _in_files(
    problems: Sequence[tuple[str, str]], sources: list[tuple[str, Any]]
) -> list[tuple[str, str]]:
    """``documents[3].spec.x`` -> ``orders.yaml doc[1] spec.x``: where the user wrote it."""
    out = []
    for where, what in problems:
        if where.startswith("documents["):
            index, _, rest = where.removeprefix("documents[").partition("]")
            if index.isdigit() and int(index) < len(sources):
                where = f"{sources[int(index)][0]} {rest.lstrip('.')}".rstrip()
        elif len(sources) == 1:
            where = f"{sources[0][0]} {where}"
        out.append((where, what))
    return out


def _applied_line(result: dict[str, Any]) -> str:
    line = f"{result['kind'].lower()}/{result['name']} {result['outcome']}"
    failing = _failing(result["resource"])
    if failing is not None:
        line += (
            f" ({failing['type']}={failing['status']} {failing['reason']}: {failing['message']})"
        )
    return line


# --- rendering ----------------------------------------------------------------------------------


def _conditions(document: dict[str, Any]) -> list[dict[str, Any]]:
    status = document.get("status") or {}
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    return conditions


def _failing(document: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in _conditions(document) if c.get("status") != "True"), None)


def status_word(document: dict[str, Any]) -> str:
    """``Ready``, or the reason of the first condition that is not true (``NoController``)."""
    conditions = _conditions(document)
    if not conditions:
        return "Pending"
    failing = _failing(document)
    if failing is not None:
        return str(failing.get("reason") or failing.get("status"))
    observed = (document.get("status") or {}).get("observedGeneration")
    if observed != document["metadata"].get("generation"):
        return "Reconciling"
    return str(conditions[0]["type"])


def age(since: str, now: float) -> str:
    """How long ago ``since`` (RFC 3339) was, as kubectl writes it: ``45s``, ``12m``, ``5h``,
    ``3d``, ``2y``."""
    then = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    seconds = max(0, int(now - then))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    if seconds < 365 * 86400:
        return f"{seconds // 86400}d"
    return f"{seconds // (365 * 86400)}y"


def _price(spec: dict[str, Any]) -> str:
    price = spec.get("price")
    if not price:
        return "-"
    parts = [
        f"{price[key]} {price['currency']}/{unit}"
        for key, unit in (("perCall", "call"), ("perItem", "item"))
        if Decimal(price.get(key, "0")) != 0
    ]
    return " + ".join(parts) or "free"


def _quota_limit(spec: dict[str, Any]) -> str:
    """``10000 calls``, ``25.50 EUR``, ``5 jobs``, ``100 requests``: the limit with its unit."""
    kind, limit = spec.get("kind"), spec.get("limit")
    if kind == "spend":
        return f"{limit} {spec.get('currency') or 'EUR'}"
    unit = {"calls": "calls", "concurrent_jobs": "jobs", "rate": "requests"}.get(str(kind), "")
    return f"{limit} {unit}".strip()


def _quota_scope(spec: dict[str, Any]) -> str:
    scope = spec.get("scope") or "account"
    return scope if scope == "account" else f"{scope}/{spec.get('target')}"


# Each kind's columns between NAME and STATUS: (header, value from the document).
_Column = tuple[str, Callable[[dict[str, Any]], Any]]
_COLUMNS: dict[str, list[_Column]] = {
    "Workflow": [
        ("VERSION", lambda d: (d.get("status") or {}).get("version", "-")),
        (
            "ENGINE",
            lambda d: (d.get("status") or {}).get("engine") or d["spec"].get("engine") or "-",
        ),
        ("STEPS", lambda d: len(d["spec"].get("steps", []))),
    ],
    "Service": [
        ("VERSION", lambda d: d["spec"].get("version", "*")),
        ("PRICE", lambda d: _price(d["spec"])),
    ],
    "Account": [("DISPLAY NAME", lambda d: d["spec"].get("displayName", "-"))],
    "User": [("EMAIL", lambda d: d["spec"]["email"]), ("ROLE", lambda d: d["spec"]["role"])],
    "Quota": [
        ("KIND", lambda d: d["spec"].get("kind", "-")),
        ("SCOPE", lambda d: _quota_scope(d["spec"])),
        ("LIMIT", lambda d: _quota_limit(d["spec"])),
        ("PERIOD", lambda d: d["spec"].get("period") or "-"),
    ],
    "Block": [
        ("TARGET", lambda d: f"{d['spec']['target']['kind']}/{d['spec']['target']['name']}"),
        ("UNTIL", lambda d: d["spec"].get("until") or "-"),
    ],
    "Trigger": [
        ("WORKFLOW", lambda d: d["spec"]["workflow"]),
        ("TYPE", lambda d: d["spec"]["type"]),
        ("SCHEDULE", lambda d: d["spec"].get("schedule") or "-"),
    ],
}


def render_table(documents: Sequence[dict[str, Any]], now: float) -> str:
    """Resources of one kind as kubectl prints them: NAME, the kind's columns, STATUS, AGE."""
    kind = documents[0]["kind"]
    columns: list[_Column] = [("NAME", lambda d: d["metadata"]["name"])]
    columns += _COLUMNS.get(kind, [])
    columns += [
        ("STATUS", status_word),
        ("AGE", lambda d: age(d["metadata"]["creationTimestamp"], now)),
    ]
    rows = [[str(value(d)) for _, value in columns] for d in documents]
    return _grid([h for h, _ in columns], rows)


def _grid(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def render_describe(document: dict[str, Any], now: float) -> str:
    """One resource for a person: metadata, spec, status, conditions and events (what
    happened when: created, and each condition's last transition)."""
    meta = document["metadata"]
    status = document.get("status") or {}
    labels = ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items()))
    created = meta["creationTimestamp"]
    fields = [
        ("Name", meta["name"]),
        ("Kind", document["kind"]),
        ("API Version", document["apiVersion"]),
    ]
    if meta.get("account"):
        fields.append(("Account", meta["account"]))
    fields += [
        ("Labels", labels or "<none>"),
        ("Created", f"{created} ({age(created, now)} ago)"),
        ("Resource Version", meta["resourceVersion"]),
        ("Generation", str(meta["generation"])),
        ("Observed Generation", str(status.get("observedGeneration", "<none>"))),
        ("Status", status_word(document)),
    ]
    width = max(len(k) for k, _ in fields) + 2
    out = [f"{(k + ':').ljust(width)}{v}" for k, v in fields]
    out.append("Spec:")
    out.append(_indent(yaml.safe_dump(document["spec"], sort_keys=False, width=100)))
    details = {k: v for k, v in status.items() if k not in ("conditions", "observedGeneration")}
    if details:
        out.append("Status Details:")
        out.append(_indent(yaml.safe_dump(details, sort_keys=False, width=100)))
    conditions = _conditions(document)
    out.append("Conditions:")
    if conditions:
        rows = [
            [
                c["type"],
                c["status"],
                c["reason"],
                age(c["lastTransitionTime"], now),
                c.get("message", ""),
            ]
            for c in conditions
        ]
        out.append(_indent(_grid(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows)))
    else:
        out.append("  <none>")
    events = [(created, "Created", f"generation 1 of {document['kind'].lower()}/{meta['name']}")]
    events += [
        (
            c["lastTransitionTime"],
            f"{c['type']}={c['status']}",
            f"{c['reason']}: {c.get('message', '')}".rstrip(": "),
        )
        for c in conditions
    ]
    events.sort(key=lambda e: e[0])
    out.append("Events:")
    rows = [[age(when, now), what, detail] for when, what, detail in events]
    out.append(_indent(_grid(["AGE", "EVENT", "DETAIL"], rows)))
    return "\n".join(line.rstrip("\n") for line in out) + "\n"


def _indent(text: str) -> str:
    return "\n".join(f"  {line}".rstrip() for line in text.rstrip("\n").splitlines())


def _yaml_stream(documents: Sequence[dict[str, Any]]) -> str:
    return "---\n".join(
        yaml.safe_dump(d, sort_keys=False, width=100, allow_unicode=True) for d in documents
    )
