"""``fluxo``: the command line.

Commands work on the local database named by ``FLUXO_DATABASE_URL`` (default: SQLite under
``FLUXO_HOME``). Errors print one clear message to stderr and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

from fluxo.cli import (
    _auth,
    _billing,
    _blocks,
    _demo,
    _nodered,
    _quota,
    _resources,
    _triggers,
    _usage,
)
from fluxo.cli._client import HttpClient, open_client, server_or_database
from fluxo.control.platform import (
    build_dead_letters,
    build_worker_runtime,
    build_worker_workflow_services,
    default_services,
    open_database,
    tune_gc_for_serving,
)
from fluxo_core.config import FluxoConfig, normalize_database_url
from fluxo_core.errors import (
    CallTimeoutError,
    ConfigError,
    FluxoError,
    PayloadTooLargeError,
    ValidationError,
)
from fluxo_core.ir import (
    DEFAULT_ENGINE,
    ENGINES,
    DocumentLimits,
    Workflow,
    json_schema,
    load_workflows_yaml,
    parse_json,
    validate_workflow,
)
from fluxo_core.logs import configure_logging
from fluxo_core.redaction import install_log_redaction
from fluxo_core.storage import SecretStore
from service_runtime import Service

__all__ = ["main"]

log = logging.getLogger("fluxo")

# The engines that run workflows outside Fluxo (all but the built-in default): their documents
# can be exported, and their tokens let them call back.
_EXTERNAL_ENGINES = tuple(name for name in ENGINES if name != DEFAULT_ENGINE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Servers log their life; one-shot commands print only their answer (and warnings).
    serving = args.func in (_cmd_up, _cmd_worker, _demo.serve)
    install_log_redaction()  # before anything logs: no record of this process carries a secret
    try:
        config = FluxoConfig.from_env()
        configure_logging(
            level=logging.DEBUG if args.verbose else logging.INFO if serving else logging.WARNING,
            log_format=config.log_format,
        )
        if not args.verbose:
            logging.getLogger("alembic").setLevel(logging.WARNING)
        if getattr(args, "database_url", None):
            config = config.model_copy(
                update={"database_url": normalize_database_url(args.database_url)}
            )
        config.ensure_home()  # 0700: the database, the admin token and the secrets' key live here
        result: int = asyncio.run(args.func(args, config))
        return result
    except FluxoError as exc:
        print(f"fluxo: {exc}", file=sys.stderr)  # with every located problem, if any
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxo", description="Run and sell automations.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run Fluxo all-in-one: API, workers, built-in services")
    p.add_argument("--host", help="listen address (default FLUXO_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default FLUXO_PORT or 8240)")
    p.add_argument("--workers", type=int, default=2, help="worker loops (default 2)")
    p.add_argument(
        "--module",
        action="append",
        default=[],
        help="also run the services of MODULE (its SERVICES list); repeatable",
    )
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    p.add_argument("--demo", action="store_true", help="keep a living demo running (fluxo demo)")
    _demo.add_options(p)
    p.set_defaults(func=_cmd_up)

    _resources.add_parsers(sub, _client, document_limits)  # apply, get, describe, delete

    p = sub.add_parser("validate", help="check a workflow file; exit 1 listing every problem")
    p.add_argument("file")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("run", help="start a job of WORKFLOW and (with --wait) print its result")
    p.add_argument("workflow", help="name or name@version")
    p.add_argument("--input", default="{}", help="JSON, or @file with JSON")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (with --wait)")
    p.add_argument("--idempotency-key", help="the same key returns the same job")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("jobs", help="list jobs, or show one")
    jobs_sub = p.add_subparsers(required=True, metavar="ACTION")
    q = jobs_sub.add_parser("list", help="newest first")
    q.add_argument("--workflow")
    q.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "cancelled", "blocked"]
    )
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_jobs_list)
    q = jobs_sub.add_parser("show", help="a job with its steps")
    q.add_argument("job_id")
    q.set_defaults(func=_cmd_jobs_show)
    _blocks.add_job_actions(jobs_sub)

    p = sub.add_parser("worker", help="run workers for services (built-ins, or --module)")
    p.add_argument(
        "--module",
        action="append",
        default=[],
        help="import services from MODULE (its SERVICES list); repeatable",
    )
    p.add_argument("--workers", type=int, default=1, help="worker loops in this process")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--lease",
        type=float,
        help="seconds a crashed worker's messages stay hidden before another runs them "
        "(FLUXO_LEASE_S)",
    )
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("export", help="print a stored workflow for another system")
    p.add_argument("workflow", help="name or name@version")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--engine",
        choices=_EXTERNAL_ENGINES,
        help="the engine's documents (Argo: YAML; Node-RED: flow JSON)",
    )
    how.add_argument(
        "--cronjob", metavar="SCHEDULE", help="a Kubernetes CronJob starting jobs via the API"
    )
    p.add_argument(
        "--gateway-url",
        default="http://fluxo:8240",
        help="Fluxo's URL as seen from the cluster (default http://fluxo:8240)",
    )
    p.add_argument(
        "--account", help="the account whose workflow it is (default: the admin account)"
    )
    p.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("import", help="import flows of another system as workflows")
    import_sub = p.add_subparsers(required=True, metavar="FORMAT")
    q = import_sub.add_parser("nodered", help="a Node-RED flow file (export or flows.json)")
    q.add_argument("file")
    q.add_argument("-o", "--output", help="write one IR YAML file per workflow into this folder")
    q.add_argument("--json", action="store_true", help="print the fidelity report as JSON")
    q.set_defaults(func=_cmd_import_nodered)

    p = sub.add_parser("dlq", help="dead letters: list them, or replay them once fixed")
    dlq_sub = p.add_subparsers(required=True, metavar="ACTION")
    q = dlq_sub.add_parser("list", help="messages that failed for good")
    q.add_argument("--queue", help="only this queue (e.g. svc.parse-order@1.in)")
    q.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    q.set_defaults(func=_cmd_dlq_list)
    q = dlq_sub.add_parser("replay", help="send dead letters of QUEUE through again")
    q.add_argument("queue")
    q.add_argument("--id", action="append", dest="ids", help="only this message id; repeatable")
    q.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    q.set_defaults(func=_cmd_dlq_replay)

    p = sub.add_parser("services", help="list published services")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_services)

    p = sub.add_parser("schema", help="print a JSON Schema (packet, workflow)")
    p.add_argument("name", choices=["packet", "workflow"])
    p.set_defaults(func=_cmd_schema)

    _auth.add_token_parser(sub, _EXTERNAL_ENGINES)
    _auth.add_users_parser(sub)

    p = sub.add_parser("secret", help="an account's stored secrets (values go in, never out)")
    secret_sub = p.add_subparsers(required=True, metavar="ACTION")
    account_help = "the account (local database only; default: the default account)"
    q = secret_sub.add_parser(
        "set", help="set a secret; the value is read from stdin, or prompted for on a terminal"
    )
    q.add_argument("name", help='how http requests refer to it: {"secret": NAME}')
    q.add_argument("--account", help=account_help)
    q.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    q.set_defaults(func=_cmd_secret_set)
    q = secret_sub.add_parser("list", help="the secrets' names (never their values)")
    q.add_argument("--account", help=account_help)
    q.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    q.set_defaults(func=_cmd_secret_list)
    q = secret_sub.add_parser("delete", help="delete a secret")
    q.add_argument("name")
    q.add_argument("--account", help=account_help)
    q.add_argument("--database-url", help="override FLUXO_DATABASE_URL")
    q.set_defaults(func=_cmd_secret_delete)

    _nodered.add_parser(sub)
    _demo.add_parser(sub)
    _usage.add_parser(sub)
    _billing.add_parser(sub)
    _quota.add_parser(sub)
    _blocks.add_parser(sub)
    _triggers.add_parser(sub)

    p = sub.add_parser(
        "call",
        help="call a service through a Fluxo gateway and print the call record "
        "(what an Argo container step runs)",
    )
    p.add_argument("service")
    p.add_argument("--gateway", default=os.environ.get("FLUXO_URL", "http://127.0.0.1:8240"))
    p.add_argument("--packet", required=True, help="the packet JSON, with its id")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the result")
    p.set_defaults(func=_cmd_call)
    return parser


def price_text(price: dict[str, Any]) -> str:
    """A price as people read it: ``0.001 EUR/call + 0.0001 EUR/item``, or ``free``; then
    the outcomes besides success its policy bills: ``(bills failed, retried)``."""
    parts = [
        f"{price[key]} {price['currency']}/{unit}"
        for key, unit in (("per_call", "call"), ("per_item", "item"))
        if Decimal(price[key]) != 0
    ]
    text = " + ".join(parts) or "free"
    billed = [name for name, how in (price.get("policy") or {}).items() if how == "billed"]
    return f"{text} (bills {', '.join(billed)})" if billed and parts else text


def load_services(modules: Sequence[str]) -> list[Service]:
    """Services from ``MODULE.SERVICES`` of each module.

    A module is looked up in the installed packages, then in the current folder, as ``python -m``
    would: the ``fluxo`` script's own folder is the virtualenv's ``bin``, not where the user is.
    The current folder goes last so it never shadows an installed package.
    """
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
    found: list[Service] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import service module {name!r}: {exc}; it is looked for in the installed "
                f"packages and in the current folder ({here}): run fluxo from the folder that "
                "holds it, or install it (pip install -e .)"
            ) from exc
        services = getattr(module, "SERVICES", None)
        if not isinstance(services, list) or not all(isinstance(s, Service) for s in services):
            raise ConfigError(
                f"module {name!r} must define SERVICES, a list of services made with @service"
            )
        found.extend(services)
    return found


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _cmd_worker(args: argparse.Namespace, config: FluxoConfig) -> int:
    modules = load_services(args.module) if args.module else None
    db = await open_database(config)
    services = modules if modules is not None else default_services(config, db)
    runtime = build_worker_runtime(
        config,
        db,
        services,
        workers=args.workers,
        batch_size=args.batch_size,
        lease_s=config.lease_s if args.lease is None else args.lease,
    )
    # The published workflows too: a call of one, made anywhere, may be served here.
    workflow_services = build_worker_workflow_services(config, runtime)
    try:
        async with runtime:
            await workflow_services.start()
            try:
                tune_gc_for_serving()
                names = ", ".join(s.ref for s in services)
                log.info("worker running %d loop(s) for %s", len(runtime.workers), names)
                print("ready", flush=True)
                await _until_signalled()
            finally:
                await workflow_services.stop()
    finally:
        await db.close()
    return 0


async def _cmd_services(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _client(config) as client:
        infos = await client.services()
    if args.json:
        print(json.dumps(infos, indent=2))
    else:
        for info in infos:
            ref = f"{info['name']}@{info['version']}"
            # Terms a Service resource applied (over the code's) are marked as such.
            applied = [
                term for term, source in info.get("terms", {}).items() if source == "applied"
            ]
            terms = price_text(info["price"]) + (
                f" [applied: {', '.join(applied)}]" if applied else ""
            )
            print(f"{ref:30} {terms:34} {info['description']}")
    return 0


def _client(config: FluxoConfig) -> Any:
    return open_client(config, os.environ.get("FLUXO_URL"), os.environ.get("FLUXO_TOKEN"))


def document_limits(config: FluxoConfig) -> DocumentLimits:
    """The limits of a workflow file: those of a request body to the API."""
    from fluxo.api.common import ENVELOPE_BYTES

    return DocumentLimits(max_bytes=config.max_packet_bytes + ENVELOPE_BYTES)


async def _cmd_validate(args: argparse.Namespace, config: FluxoConfig) -> int:
    limits = document_limits(config)
    text = await asyncio.to_thread(_read_file, args.file, limits.max_bytes)
    try:
        async with _client(config) as client:
            known = [s["name"] for s in await client.services()]
    except FluxoError:
        known = None  # no database or server to ask: check everything but service names
    documents = await asyncio.to_thread(
        load_workflows_yaml, text, known_services=known, limits=limits
    )
    for workflow in documents:
        print(f"{args.file}: workflow/{workflow.metadata.name} is valid")
    if any(w.spec.source is not None for w in documents):
        from pathlib import Path

        from fluxo.cli import _nodered_flows, _resources

        # The flow files spec.source names: read, and each holding its workflow.
        sidecars = _nodered_flows.Sidecars()
        path = Path(args.file)
        loaded = await asyncio.to_thread(_resources.load_documents, path, limits, sidecars)
        for where, doc in loaded:
            workflow = validate_workflow(doc)
            source = workflow.spec.source
            flow = sidecars.flow_of(workflow, path.parent)
            if source is not None and flow is not None:
                note = await asyncio.to_thread(_nodered_flows.source_problem, workflow, flow)
                if note is not None:
                    print(f"{where}: warning: {note}")
                else:
                    print(f"{where}: source {source.file}: {len(flow)} node(s), matches")
    return 0


async def _cmd_run(args: argparse.Namespace, config: FluxoConfig) -> int:
    payload = await asyncio.to_thread(_parse_input, args.input, config.max_packet_bytes)
    async with _client(config) as client:
        job = await client.create_job(args.workflow, payload, idempotency_key=args.idempotency_key)
        print(f"job {job['id']} {job['status']}", file=sys.stderr)
        if not args.wait:
            print(json.dumps({"id": job["id"], "status": job["status"]}))
            return 0
        job = await _follow(client, job["id"], args.timeout)
    if job["status"] == "succeeded":
        print(json.dumps(job["result"], indent=2))
        return 0
    print(f"fluxo: job {job['id']} {job['status']}: {_job_error(job)}", file=sys.stderr)
    return 1


async def _follow(client: Any, job_id: str, timeout: float) -> dict[str, Any]:
    """Wait for the job, printing each step as it finishes (progress goes to stderr)."""
    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    while True:
        job: dict[str, Any] = await client.job(
            job_id, wait=min(1.0, max(deadline - time.monotonic(), 0.01))
        )
        for step in job.get("steps") or []:
            if step["key"] not in shown and step["phase"] in ("succeeded", "failed"):
                shown.add(step["key"])
                mark = "ok" if step["phase"] == "succeeded" else "FAILED"
                print(f"  {mark:6} {step['key']}", file=sys.stderr)
        if job["status"] in ("succeeded", "failed", "cancelled", "blocked"):
            return job
        if time.monotonic() >= deadline:
            raise CallTimeoutError(
                f"job {job_id} is still {job['status']} after {timeout:g}s; "
                f"see it with: fluxo jobs show {job_id}"
            )


def _job_error(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    where = f"step {error['step']}: " if error.get("step") else ""
    return where + str(error.get("message", "no error recorded"))


async def _cmd_jobs_list(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _client(config) as client:
        page = await client.jobs(workflow=args.workflow, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    for job in page["items"]:
        print(
            f"{job['id']}  {job['status']:10} {job['workflow']}@{job['version']}  {job['created_at']}"
        )
    return 0


async def _cmd_jobs_show(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _client(config) as client:
        job = await client.job(args.job_id)
    print(json.dumps(job, indent=2))
    return 0


def _read_file(path: str, limit: int) -> bytes:
    """The file's bytes; a file over ``limit`` is refused without being read whole."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"{path} is over the limit of {limit} bytes (FLUXO_MAX_PACKET_BYTES); use a smaller "
            "file, or raise the limit",
            limit=limit,
        )
    return data


def _parse_input(raw: str, limit: int) -> Any:
    """A job input from ``--input``: JSON, or ``@file``; within the packet size limit."""
    source = "--input"
    data: str | bytes = raw
    if raw.startswith("@"):
        source = raw[1:]
        data = _read_file(source, limit)
    return parse_json(data, limits=DocumentLimits(max_bytes=limit), where=source)


async def _cmd_export(args: argparse.Namespace, config: FluxoConfig) -> int:
    from fluxo.api.server import ADMIN_ACCOUNT
    from fluxo.control.jobs import split_workflow_ref
    from fluxo_core.storage.workflows import WorkflowStore

    account = args.account or ADMIN_ACCOUNT
    if _is_workflow_file(args.workflow):
        if args.engine != "nodered":
            raise ConfigError(
                f"{args.workflow}: exporting a workflow file takes --engine nodered; apply it "
                "first (fluxo apply -f FILE) for the other exports, which need its version"
            )
        return await _export_file_nodered(args, config)
    name, version = split_workflow_ref(args.workflow)
    db = await open_database(config)
    try:
        store = WorkflowStore(db)
        applied = await store.get(account, name, version)
        source = applied.workflow.spec.source
        flow = (
            await store.source(account, source.sha256)
            if source is not None and source.sha256 is not None and args.engine == "nodered"
            else None
        )
    finally:
        await db.close()
    if args.engine == "argo":
        from translators import to_argo, to_yaml
        from translators.argo import gateway_secret_name

        bundle = to_argo(applied.workflow, gateway_url=args.gateway_url, version=applied.version)
        print(_token_secret_note(applied.ref, account, gateway_secret_name(account)), end="")
        print(to_yaml(bundle), end="")
        return 0
    if args.engine == "nodered":
        from fluxo.cli import _nodered_flows
        from translators import NodeRedOptions

        exported = await asyncio.to_thread(
            _nodered_flows.export_flow,
            applied.workflow,
            flow,
            options=NodeRedOptions(fluxo_url=args.gateway_url),
        )
        if exported.note:
            print(f"fluxo: {exported.note}", file=sys.stderr)
        print(json.dumps(exported.nodes, indent=2, sort_keys=True))
        return 0
    # By name, not version: each firing runs the newest version, as an API client would.
    print(_cronjob_yaml(name, account, args.cronjob, args.gateway_url), end="")
    return 0


def _is_workflow_file(ref: str) -> bool:
    """A workflow reference that is a file (``validate`` takes one too), not a stored name."""
    return ref.endswith((".yaml", ".yml", ".json")) or os.path.sep in ref or os.path.isfile(ref)


async def _export_file_nodered(args: argparse.Namespace, config: FluxoConfig) -> int:
    """``fluxo export FILE --engine nodered``: every workflow of the file, with the source its
    ``spec.source`` names when they still match it."""
    from pathlib import Path

    from fluxo.cli import _nodered_flows, _resources
    from translators import NodeRedOptions

    limits = document_limits(config)
    path = Path(args.workflow)
    sidecars = _nodered_flows.Sidecars()
    documents = await asyncio.to_thread(_resources.load_documents, path, limits, sidecars)
    workflows = [
        validate_workflow(doc)
        for _, doc in documents
        if isinstance(doc, dict) and doc.get("kind") == "Workflow"
    ]
    if not workflows:
        raise ValidationError(f"{args.workflow}: no workflow document to export")
    options = NodeRedOptions(fluxo_url=args.gateway_url)
    folder = path if await asyncio.to_thread(path.is_dir) else path.parent
    # The workflows of one imported file share its flow: imported once for all of them.
    by_source: dict[str | None, list[Workflow]] = {}
    for workflow in workflows:
        source = workflow.spec.source
        by_source.setdefault(source.file if source is not None else None, []).append(workflow)
    flows = []
    for key, group in by_source.items():
        flow = sidecars.flow_of(group[0], folder) if key is not None else None
        nodes, notes = await asyncio.to_thread(
            _nodered_flows.export_flows, group, flow, options=options
        )
        for note in notes:
            print(f"fluxo: {note}", file=sys.stderr)
        flows.append(nodes)
    print(json.dumps(_nodered_flows.merged(flows), indent=2, sort_keys=True))
    return 0


def _token_secret_note(ref: str, account: str, secret: str) -> str:
    """YAML comments heading ``fluxo export --engine argo``: the Secret the operator creates."""
    import shlex

    token = f"$(fluxo token --account {shlex.quote(account)} --user argo --engine argo)"
    return (
        f"# Argo documents of workflow {ref} of account {account}. Its templates send the\n"
        f"# account's engine token, read from the Secret {secret} (key authorization);\n"
        "# create it once per account in the workflows' namespace before the first job:\n"
        f"#   kubectl -n NAMESPACE create secret generic {secret} \\\n"
        f'#     --from-literal=authorization="Bearer {token}"\n'
    )


def _cronjob_yaml(workflow: str, account: str, schedule: str, gateway_url: str) -> str:
    """A Kubernetes CronJob that starts a job of ``workflow`` through the API at each firing.

    The one a cron trigger with ``scheduler: kubernetes`` gets (:mod:`fluxo.control.kubernetes`):
    the firing's scheduled slot is the Idempotency-Key, so a CronJob that runs twice for one
    slot (Kubernetes allows it) still makes one job; the token comes from the account's Secret
    (the same as its Argo workflows'); the name carries the account, as Argo names do.
    """
    import yaml

    from fluxo.control.kubernetes import StarterCronJob, cronjob_document

    document = cronjob_document(
        StarterCronJob(
            account=account, workflow=workflow, schedule=schedule, gateway_url=gateway_url
        )
    )
    return str(yaml.safe_dump(document, sort_keys=True))


async def _cmd_import_nodered(args: argparse.Namespace, config: FluxoConfig) -> int:
    from pathlib import Path

    from fluxo.cli import _nodered_flows
    from translators import FLOW_LIMITS

    text = await asyncio.to_thread(_read_file, args.file, FLOW_LIMITS.max_bytes)
    # The translator reads the text within FLOW_LIMITS; in a thread, as it is CPU-bound.
    imported = await asyncio.to_thread(_nodered_flows.import_file, text, name=_flow_name(args.file))
    if args.output:
        folder = Path(args.output)

        def write() -> list[Path]:
            folder.mkdir(parents=True, exist_ok=True)
            sidecar = folder / imported.sidecar
            sidecar.write_bytes(imported.sidecar_bytes())
            written = [sidecar]
            for name, body in imported.yaml_texts().items():
                path = folder / f"{name}.yaml"
                path.write_text(body, encoding="utf-8")
                written.append(path)
            return written

        for path in await asyncio.to_thread(write):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(_nodered_flows.report_json(imported), indent=2))
    else:
        print("\n".join(_nodered_flows.report_lines(imported)))
    return 0


def _flow_name(path: str) -> str:
    import re

    stem = re.sub(r"[^a-z0-9]+", "-", os.path.splitext(os.path.basename(path))[0].lower()).strip(
        "-"
    )
    return (stem or "flow")[:63].rstrip("-") or "flow"


async def _cmd_dlq_list(args: argparse.Namespace, config: FluxoConfig) -> int:
    db = await open_database(config)
    try:
        letters = await build_dead_letters(config, db).list(args.queue)
    finally:
        await db.close()
    for letter in letters:
        job = f"job {letter.job_id}" if letter.job_id else "direct call"
        print(f"{letter.queue}  {letter.message_id}  {job}  {letter.error or ''}")
    return 0


async def _cmd_dlq_replay(args: argparse.Namespace, config: FluxoConfig) -> int:
    db = await open_database(config)
    try:
        replay = await build_dead_letters(config, db).replay(args.queue, args.ids)
    finally:
        await db.close()
    print(f"{replay.replayed} message(s) back on {args.queue}")
    if not replay.kept:
        return 0
    kept = sum(len(j.message_ids) for j in replay.kept)
    print(
        f"fluxo: kept {kept} dead letter(s) of job steps in {args.queue}.dlq: each job has "
        "already handled its step's failure (a retry, on_error, or the job failed), so a "
        "replay would run and bill calls no step waits for; run the job again instead "
        "(fluxo jobs retry JOB_ID for a failed one):",
        file=sys.stderr,
    )
    for job in replay.kept:
        print(
            f"  job {job.job_id} ({job.job_status}): {len(job.message_ids)} message(s)",
            file=sys.stderr,
        )
    return 1


async def _cmd_schema(args: argparse.Namespace, config: FluxoConfig) -> int:
    print(json.dumps(json_schema(args.name), indent=2, sort_keys=True))
    return 0


async def _cmd_secret_set(args: argparse.Namespace, config: FluxoConfig) -> int:
    value = await asyncio.to_thread(_read_secret_value, args.name)
    async with _secrets(args, config) as target:
        created = (await target.put_secret(args.name, value))["created"]
    print(f"secret/{args.name} {'created' if created else 'updated'}")
    return 0


async def _cmd_secret_list(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _secrets(args, config) as target:
        for item in await target.secrets():
            print(item["name"])
    return 0


async def _cmd_secret_delete(args: argparse.Namespace, config: FluxoConfig) -> int:
    async with _secrets(args, config) as target:
        await target.delete_secret(args.name)
    print(f"secret/{args.name} deleted")
    return 0


class _LocalSecrets:
    """The secrets of one account of the local database, answering as the server's client."""

    def __init__(self, store: SecretStore, account_id: str) -> None:
        self.store = store
        self.account_id = account_id

    async def put_secret(self, name: str, value: str) -> dict[str, Any]:
        info, created = await self.store.put(self.account_id, name, value)
        return {"name": info.name, "created": created}

    async def secrets(self) -> list[dict[str, Any]]:
        return [{"name": i.name} for i in await self.store.list(self.account_id)]

    async def delete_secret(self, name: str) -> None:
        await self.store.delete(self.account_id, name)


@contextlib.asynccontextmanager
async def _secrets(
    args: argparse.Namespace, config: FluxoConfig
) -> AsyncIterator[HttpClient | _LocalSecrets]:
    """The server's client with FLUXO_URL (the token's account), else the local database."""
    async with server_or_database(args, config) as target:
        if target.client is not None:
            yield target.client
        else:
            assert target.db is not None
            yield _LocalSecrets(SecretStore.for_config(target.db, config), target.account)


def _read_secret_value(name: str) -> str:
    """The value from stdin (a pipe or file, one trailing newline dropped) or a hidden prompt.

    Never from the command line: arguments show in ``ps`` and in shell history.
    """
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of secret {name!r} (not shown): ")
    else:
        try:
            value = sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"the value of secret {name!r} on stdin is not text in {exc.encoding}; pipe in "
                "the text of the credential"
            ) from exc
        value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if not value:
        raise ConfigError(
            f"no value for secret {name!r}: pipe it in (e.g. `fluxo secret set {name} < key.txt`) "
            "or type it at the prompt"
        )
    return value


async def _cmd_call(args: argparse.Namespace, config: FluxoConfig) -> int:
    from fluxo.cli import _call

    return await _call.run(
        args.service, args.gateway, args.packet, args.wait, limits=document_limits(config)
    )


async def _cmd_up(args: argparse.Namespace, config: FluxoConfig) -> int:
    from fluxo import console
    from fluxo.api.server import run_server

    if args.demo:
        return await _demo.serve(args, config, extra=load_services(args.module))
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    config = config.model_copy(update=overrides)
    modules = load_services(args.module)
    db = await open_database(config)
    try:
        await run_server(
            config,
            db,
            default_services(config, db) + modules,
            workers=args.workers,
            faces=[console.mount],
        )
    finally:
        await db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
