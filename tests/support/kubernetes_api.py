"""A respx fake of the Kubernetes API's CronJob endpoints, held to the API's own schemas.

The paths and verbs are those of ``BatchV1Api`` (``POST /apis/batch/v1/namespaces/{ns}/cronjobs``,
``GET``/``PUT``/``DELETE .../cronjobs/{name}``); every object sent or answered is validated
against the strict JSON Schemas of Kubernetes v1.37 shipped in ``tests/data/kubernetes`` (see its
README), as are the ``Status`` error answers and the ``DeleteOptions`` of a delete. What the
contract says and the fake does: a stale ``metadata.resourceVersion`` on PUT or in a delete's
preconditions is 409, a missing object 404, a create of an existing name 409; the server
stamps ``uid``, ``resourceVersion``, ``creationTimestamp`` and ``namespace``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import respx
from referencing import Registry, Resource

__all__ = ["KUBERNETES_DATA", "FakeKubernetes", "conform"]

KUBERNETES_DATA = Path(__file__).resolve().parents[1] / "data" / "kubernetes"
FILES = {
    "CronJob": "cronjob-batch-v1.json",
    "Status": "status-meta-v1.json",
    "DeleteOptions": "deleteoptions-meta-v1.json",
}


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    definitions = json.loads((KUBERNETES_DATA / "_definitions.json").read_text())
    schema = json.loads((KUBERNETES_DATA / FILES[kind]).read_text())
    registry: Registry[Any] = Registry().with_resources(
        [
            (definitions["$id"], Resource.from_contents(definitions)),
            (schema["$id"], Resource.from_contents(schema)),
        ]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def conform(kind: str, document: Any) -> None:
    """Fail the test when ``document`` is not a valid ``kind`` of Kubernetes v1.37."""
    problems = sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}"
        for e in _validator(kind).iter_errors(document)
    )
    assert problems == [], f"not a {kind}:\n" + "\n".join(problems[:10])


def status(code: int, reason: str, message: str) -> httpx.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    conform("Status", body)
    return httpx.Response(code, json=body)


@dataclass
class FakeKubernetes:
    """The CronJobs of one API server, by ``(namespace, name)``.

    ``requests``: ``(method, path)`` of every request, in order. ``refuse``: a status to
    answer the next requests with (403: RBAC), until cleared.
    """

    server: str
    token: str
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    refuse: httpx.Response | None = None
    before_write: Callable[[], None] | None = None
    _version: int = 100

    def install(self, router: respx.MockRouter) -> None:
        pattern = re.escape(self.server) + r"/apis/batch/v1/namespaces/(?P<ns>[^/]+)/cronjobs"
        router.route(url__regex=pattern + r"$").mock(side_effect=self._collection)
        router.route(url__regex=pattern + r"/(?P<name>[^/?]+)$").mock(side_effect=self._item)

    def put(self, namespace: str, document: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if someone else had made it (server fields stamped)."""
        stored = copy.deepcopy(document)
        self._stamp(stored, namespace)
        self.objects[(namespace, stored["metadata"]["name"])] = stored
        return stored

    def _stamp(self, document: dict[str, Any], namespace: str) -> None:
        self._version += 1
        meta = document["metadata"]
        meta.setdefault("uid", f"00000000-0000-4000-8000-{self._version:012d}")
        meta.setdefault("creationTimestamp", "2027-01-15T08:00:00Z")
        meta["namespace"] = namespace
        meta["resourceVersion"] = str(self._version)
        meta["generation"] = int(meta.get("generation", 0)) + 1
        document.setdefault("status", {})

    def _answer(self, document: dict[str, Any], code: int = 200) -> httpx.Response:
        conform("CronJob", document)
        return httpx.Response(code, json=document)

    def _check(self, request: httpx.Request) -> httpx.Response | None:
        self.requests.append((request.method, request.url.path))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        if self.refuse is not None:
            return self.refuse
        return None

    def _collection(self, request: httpx.Request, ns: str) -> httpx.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        assert request.method == "POST", request.method
        body = json.loads(request.content)
        conform("CronJob", body)
        name = body["metadata"]["name"]
        if (ns, name) in self.objects:
            return status(409, "AlreadyExists", f'cronjobs.batch "{name}" already exists')
        self._stamp(body, ns)
        self.objects[(ns, name)] = body
        return self._answer(body, 201)

    def _item(self, request: httpx.Request, ns: str, name: str) -> httpx.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        stored = self.objects.get((ns, name))
        missing = status(404, "NotFound", f'cronjobs.batch "{name}" not found')
        if request.method == "GET":
            return missing if stored is None else self._answer(stored)
        if self.before_write is not None:
            self.before_write()
            stored = self.objects.get((ns, name))
        if request.method == "PUT":
            body = json.loads(request.content)
            conform("CronJob", body)
            if stored is None:
                return missing
            sent = body["metadata"].get("resourceVersion")
            if sent != stored["metadata"]["resourceVersion"]:
                return status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on cronjobs.batch "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try "
                    "again",
                )
            body["status"] = stored.get("status", {})
            body["metadata"]["uid"] = stored["metadata"]["uid"]
            body["metadata"]["generation"] = stored["metadata"]["generation"]
            self._stamp(body, ns)
            self.objects[(ns, name)] = body
            return self._answer(body)
        assert request.method == "DELETE", request.method
        options = json.loads(request.content) if request.content else {}
        conform("DeleteOptions", options)
        if stored is None:
            return missing
        wanted = (options.get("preconditions") or {}).get("resourceVersion")
        if wanted is not None and wanted != stored["metadata"]["resourceVersion"]:
            return status(409, "Conflict", "Precondition failed: ResourceVersion")
        del self.objects[(ns, name)]
        return status_ok(name)


def status_ok(name: str) -> httpx.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": "batch", "kind": "cronjobs"},
    }
    conform("Status", body)
    return httpx.Response(200, json=body)
