"""Workflows: the list, a workflow's page (graph, YAML, versions and their diff, engines,
exports), the Run form, and the import of a Node-RED flow file.

Every read is scoped to the signed-in account through the stores and the JobService, which
answer ``NotFoundError`` for another account's workflow (the console's 404 page). Writes (a
run, an import) take a member: a viewer's POST is refused before anything is read.
"""

from __future__ import annotations

import asyncio
import difflib
import gettext
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml
from aiohttp import web

from fluxo.console import i18n
from fluxo.console.engine_fit import engine_fits
from fluxo.console.forms import FormField, InputForm, field_errors
from fluxo.console.graph import render_graph
from fluxo.console.web import Route, locale_of, platform, render, url, viewer
from fluxo.control.jobs import parse_version
from fluxo_core.errors import FluxoError, PayloadSchemaError, PermissionDeniedError
from fluxo_core.ir import ENGINES, Workflow, workflow_document
from fluxo_core.storage import Principal, Role
from fluxo_core.storage.workflow_stats import WorkflowStatsStore
from fluxo_core.storage.workflows import AppliedWorkflow
from translators import FLOW_LIMITS, NodeRedOptions, from_nodered, to_argo, to_nodered, to_yaml

__all__ = ["routes"]

MAX_DIFF_LINES: Final = 2000
MAX_UPLOAD_BYTES: Final = min(512 * 1024, FLOW_LIMITS.max_bytes)
"""A flow file the import page reads. The page sends the file back with the apply form, and a
request body stays within the API's (about 1 MiB); larger flows go through ``fluxo import``."""
IMPORT_NAME: Final = "flow"
KEY_FIELD: Final = "_key"
"""The Run form's idempotency key: a form submitted twice (a double click, a reload) makes one
job."""


def routes() -> list[Route]:
    return [
        Route("GET", "/workflows", _list, "workflows"),
        Route("GET", "/workflows/{workflow}", _workflow, "workflow"),
        Route("GET", "/workflows/{workflow}/export/{target}", _export, "workflow_export"),
        Route("GET", "/workflows/{workflow}/run", _run_page, "workflow_run"),
        Route("POST", "/workflows/{workflow}/run", _run, "workflow_run_submit"),
        Route("GET", "/import", _import_page, "workflow_import"),
        Route("POST", "/import", _import_preview, "workflow_import_preview"),
        Route("POST", "/import/apply", _import_apply, "workflow_import_apply"),
    ]


def _gettext(request: web.Request) -> gettext.NullTranslations:
    return i18n.translations(locale_of(request))


def _member(request: web.Request) -> Principal:
    who = viewer(request)
    if not who.role.at_least(Role.MEMBER):
        _ = _gettext(request).gettext
        raise PermissionDeniedError(_("A viewer may look but not run or import workflows."))
    return who


async def _applied(request: web.Request, version: str | None = None) -> AppliedWorkflow:
    """The account's workflow in the path, at ``version`` (the newest when None)."""
    number = parse_version(version, where="version") if version else None
    return await platform(request).workflows.get(
        viewer(request).account_id, request.match_info["workflow"], number
    )


# --- the list -------------------------------------------------------------------------------


async def _list(request: web.Request) -> web.StreamResponse:
    account = viewer(request).account_id
    store = platform(request)
    applied, stats = await asyncio.gather(
        store.workflows.list(account), WorkflowStatsStore(store.db).by_workflow(account)
    )
    rows = [
        {
            "name": a.workflow.metadata.name,
            "version": a.version,
            "engine": a.workflow.spec.engine or store.workflows.default_engine,
            "description": a.workflow.spec.description,
            "stats": stats.get(a.workflow.metadata.name),
        }
        for a in applied
    ]
    return render(request, "workflows/list.html", section="workflows", rows=rows)


# --- one workflow ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DiffLine:
    kind: str  # add, del, hunk, same, head
    text: str


async def _workflow(request: web.Request) -> web.StreamResponse:
    newest = await _applied(request)
    shown = (
        await _applied(request, request.query.get("version"))
        if "version" in request.query
        else newest
    )
    _ = _gettext(request).gettext
    diff: list[_DiffLine] | None = None
    compare = (request.query.get("from"), request.query.get("to"))
    if compare[0] and compare[1]:
        older, newer = await asyncio.gather(
            _applied(request, compare[0]), _applied(request, compare[1])
        )
        diff = _diff(older, newer)
    workflow = shown.workflow
    fits = engine_fits(workflow, platform(request).registry)
    return render(
        request,
        "workflows/workflow.html",
        section="workflows",
        applied=shown,
        newest=newest.version,
        versions=list(range(newest.version, 0, -1)),
        engine=workflow.spec.engine or platform(request).workflows.default_engine,
        graph=render_graph(workflow, gettext=_, element_id="workflow-graph"),
        document=_yaml(workflow),
        fits=fits,
        diff=diff,
        compare=compare,
    )


def _yaml(workflow: Workflow) -> str:
    return str(yaml.safe_dump(workflow_document(workflow), sort_keys=False, allow_unicode=True))


def _diff(older: AppliedWorkflow, newer: AppliedWorkflow) -> list[_DiffLine]:
    """A unified diff of two versions' documents, line by line, classed for colouring."""
    lines = difflib.unified_diff(
        _yaml(older.workflow).splitlines(),
        _yaml(newer.workflow).splitlines(),
        fromfile=older.ref,
        tofile=newer.ref,
        lineterm="",
    )
    found: list[_DiffLine] = []
    for line in lines:
        if len(found) >= MAX_DIFF_LINES:
            found.append(_DiffLine("hunk", "…"))
            break
        if line.startswith(("---", "+++")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        found.append(_DiffLine(kind, line))
    return found


async def _export(request: web.Request) -> web.StreamResponse:
    """The workflow version as the named engine's document, to download."""
    applied = await _applied(request, request.query.get("version"))
    target = request.match_info["target"]
    gateway = f"{request.scheme}://{request.host}"
    name = f"{applied.workflow.metadata.name}-{applied.version}"
    if target == "nodered":
        flow = to_nodered(applied.workflow, options=NodeRedOptions(fluxo_url=gateway))
        body, kind, filename = (
            json.dumps(flow, indent=2, sort_keys=True) + "\n",
            "application/json",
            f"{name}.nodered.json",
        )
    elif target == "argo":
        bundle = to_argo(applied.workflow, gateway_url=gateway, version=applied.version)
        body, kind, filename = to_yaml(bundle), "application/yaml", f"{name}.argo.yaml"
    else:
        raise web.HTTPNotFound()
    return web.Response(
        text=body,
        content_type=kind,
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- run ------------------------------------------------------------------------------------


async def _run_page(request: web.Request) -> web.StreamResponse:
    applied = await _applied(request)
    form = InputForm(applied.workflow.spec.input_schema, gettext=_gettext(request).gettext)
    return _run_form(request, applied, form.fields(), {}, secrets.token_urlsafe(16))


def _run_form(
    request: web.Request,
    applied: AppliedWorkflow,
    fields: tuple[FormField, ...],
    errors: Mapping[str, Any],
    key: str,
    *,
    status: int = 200,
    failure: str | None = None,
) -> web.Response:
    return render(
        request,
        "workflows/run.html",
        status=status,
        section="workflows",
        applied=applied,
        fields=fields,
        errors=errors,
        key=key,
        failure=failure,
        key_field=KEY_FIELD,
    )


async def _run(request: web.Request) -> web.StreamResponse:
    who = _member(request)
    applied = await _applied(request)
    posted = await request.post()
    submitted = {k: str(v) for k, v in posted.items() if isinstance(v, str)}
    key = submitted.get(KEY_FIELD) or secrets.token_urlsafe(16)
    _ = _gettext(request).gettext
    form = InputForm(applied.workflow.spec.input_schema, gettext=_)
    result = form.submit(submitted)
    if result.action is not None:  # an item added or removed: the same form, one item changed
        return _run_form(request, applied, result.fields, {}, key)
    if not result.ok:
        return _run_form(request, applied, result.fields, result.errors, key, status=422)
    try:
        job = await platform(request).jobs.create(
            who, applied.ref, result.payload, idempotency_key=f"console-{key}"
        )
    except PayloadSchemaError as exc:  # the service's own check, should the two ever differ
        errors = field_errors(exc.problems, result.fields, _)
        return _run_form(request, applied, result.fields, errors, key, status=422)
    except FluxoError as exc:
        if exc.http_status >= 500:
            raise
        return _run_form(
            request, applied, result.fields, {}, key, status=exc.http_status, failure=exc.message
        )
    raise web.HTTPSeeOther(_job_url(request, job.id))


def _job_url(request: web.Request, job_id: str) -> str:
    """The job's page (the jobs pages' route when they are installed, else its stable path)."""
    try:
        return url(request, "job", job_id=job_id)
    except (KeyError, ValueError):
        return f"/console/jobs/{job_id}"


# --- import ---------------------------------------------------------------------------------


async def _import_page(request: web.Request) -> web.StreamResponse:
    return _import_render(request)


def _import_render(request: web.Request, *, status: int = 200, **values: Any) -> web.Response:
    return render(
        request,
        "workflows/import.html",
        status=status,
        section="workflows",
        limit=MAX_UPLOAD_BYTES,
        engines=[e.name for e in platform(request).registry.engines()],
        **values,
    )


async def _import_preview(request: web.Request) -> web.StreamResponse:
    """Read the uploaded flow file and show what became of each node (nothing is stored)."""
    _member(request)
    _ = _gettext(request).gettext
    posted = await request.post()
    upload = posted.get("file")
    if not isinstance(upload, web.FileField):
        return _import_render(request, status=422, failure=_("Choose a flow file to upload."))
    data = upload.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        return _import_render(
            request,
            status=413,
            failure=_("The file is larger than %(limit)d bytes.") % {"limit": MAX_UPLOAD_BYTES},
        )
    return await _preview(request, data.decode("utf-8", errors="replace"), _stem(upload.filename))


async def _preview(
    request: web.Request,
    text: str,
    name: str,
    *,
    applied: list[AppliedWorkflow] | None = None,
    status: int = 200,
    **values: Any,
) -> web.Response:
    _ = _gettext(request).gettext
    try:
        imported = await asyncio.to_thread(from_nodered, text, name=name)
    except FluxoError as exc:
        problems = getattr(exc, "problems", ())[:10]
        return _import_render(request, status=422, failure=exc.message, problems=problems)
    registry = platform(request).registry
    workflows = [
        {
            "workflow": w,
            "graph": render_graph(w, gettext=_, element_id=f"import-graph-{n}"),
            "fits": [f for f in engine_fits(w, registry) if f.installed],
        }
        for n, w in enumerate(imported.workflows)
    ]
    return _import_render(
        request,
        status=status,
        report=imported.report,
        workflows=workflows,
        flow_text=text,
        flow_name=name,
        applied=applied,
        **values,
    )


async def _import_apply(request: web.Request) -> web.StreamResponse:
    """Apply the imported workflows on the chosen engine, as ``fluxo import`` then ``apply``."""
    who = _member(request)
    _ = _gettext(request).gettext
    posted = await request.post()
    text = str(posted.get("flow", ""))
    name = _stem(str(posted.get("name", IMPORT_NAME)))
    engine = str(posted.get("engine", ""))
    if len(text.encode()) > MAX_UPLOAD_BYTES:
        return _import_render(request, status=413, failure=_("The flow is too large."))
    if engine not in ENGINES:
        return _import_render(request, status=422, failure=_("Choose an engine."))
    imported = await asyncio.to_thread(from_nodered, text, name=name)
    jobs = platform(request).jobs
    applied: list[AppliedWorkflow] = []
    try:
        for workflow in imported.workflows:
            applied.append(await jobs.apply(_on_engine(workflow, engine), who))
    except FluxoError as exc:
        if exc.http_status >= 500:
            raise
        return await _preview(
            request, text, name, applied=applied, apply_failure=exc.message, status=422
        )
    return await _preview(request, text, name, applied=applied, engine=engine)


def _on_engine(workflow: Workflow, engine: str) -> Workflow:
    """The workflow set to run on ``engine``, validated again (a model copy would skip the
    graph checks)."""
    document = workflow_document(workflow)
    document["spec"]["engine"] = engine
    return Workflow.model_validate(document)


def _stem(filename: str | None) -> str:
    """The name for a tab-less flow's workflow, from the file's name, as ``fluxo import`` does."""
    base = os.path.splitext(os.path.basename(filename or IMPORT_NAME))[0].lower()
    stem = re.sub(r"[^a-z0-9]+", "-", base).strip("-")
    return (stem or IMPORT_NAME)[:63].rstrip("-") or IMPORT_NAME
