"""Argo's published schema, CRDs, swagger and examples, as shipped in ``tests/data/argo``.

The files come from the argo-workflows repository at the commit named in that folder's README,
so a clone of Fluxo checks its Argo documents without anything beside the checkout.
"""

from __future__ import annotations

import copy
import gzip
import json
import tarfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ARGO_DATA", "crd_schema", "crd_text", "examples", "schema_definitions", "swagger"]

ARGO_DATA = Path(__file__).resolve().parents[1] / "data" / "argo"
CRD_FILES = {
    "Workflow": "argoproj.io_workflows.yaml.gz",
    "WorkflowTemplate": "argoproj.io_workflowtemplates.yaml.gz",
    "CronWorkflow": "argoproj.io_cronworkflows.yaml.gz",
    "ClusterWorkflowTemplate": "argoproj.io_clusterworkflowtemplates.yaml.gz",
}
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large: use libyaml


def _patched(definitions: dict[str, Any]) -> dict[str, Any]:
    """Int-or-string as integer or string (upstream types it string only), and
    ``additionalProperties: false`` on object definitions, so misspelt keys fail."""
    definitions = copy.deepcopy(definitions)
    definitions[INT_OR_STRING] = {"type": ["integer", "string"]}
    for definition in definitions.values():
        if "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    return definitions


@cache
def schema_definitions() -> dict[str, Any]:
    """The definitions of Argo's JSON Schema (``schema.json``), patched."""
    return _patched(json.loads((ARGO_DATA / "schema.json").read_text())["definitions"])


@cache
def swagger() -> dict[str, Any]:
    """The definitions of the Argo Server's Swagger 2.0 document, patched."""
    return _patched(json.loads((ARGO_DATA / "swagger.json").read_text())["definitions"])


@cache
def crd_text(kind: str) -> str:
    """The CustomResourceDefinition of ``kind`` as YAML text."""
    return gzip.decompress((ARGO_DATA / "crds" / CRD_FILES[kind]).read_bytes()).decode()


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of ``kind``'s CustomResourceDefinition."""
    crd = yaml.load(crd_text(kind), Loader=_LOADER)
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def examples() -> Iterator[tuple[str, str]]:
    """``(path, YAML text)`` of every upstream example file, in name order."""
    with tarfile.open(ARGO_DATA / "examples.tar.gz") as archive:
        members = sorted(
            (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".yaml")),
            key=lambda m: m.name,
        )
        for member in members:
            handle = archive.extractfile(member)
            assert handle is not None  # a regular file always has content
            yield member.name, handle.read().decode()
