"""The Kubernetes CronJob that starts Fluxo jobs through the API: pure, deterministic.

One builder serves the cron triggers scheduled by Kubernetes (``spec.cron.scheduler:
kubernetes``) and ``fluxo export --cronjob``. Each firing is a Job whose one container POSTs
``/v1/workflows/<workflow>/jobs`` with the account's engine token, read from a Kubernetes
Secret (``fluxo-gateway-<account>``, key ``authorization``: the Secret the account's Argo
workflows read too), never written into the object.

The ``Idempotency-Key`` is the firing's **scheduled** slot, not the time the pod runs: the
CronJob controller names each Job ``<cronjob>-<scheduled minute since the epoch>``, the pod
reads its Job's name from its ``batch.kubernetes.io/job-name`` label (downward API), and the
script turns the suffix into ``2027-01-15T08:00:00Z``. So a Job retried later, or started twice
for one slot (Kubernetes allows it), makes one Fluxo job; and a trigger's key
(``trigger:<name>:<slot>``) is the one the built-in scheduler gives the same slot, so moving a
trigger between schedulers does not fire a slot twice. A Job made by hand (``kubectl create
job --from=cronjob/...``) has no slot in its name and gets a key of its own start.

Every value reaches the script through environment variables, so no input or name is ever
parsed as shell.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from translators.argo import gateway_secret_name, scoped_name

__all__ = [
    "DEFAULT_IMAGE",
    "MANAGED_BY",
    "OWNER_ACCOUNT",
    "OWNER_TRIGGER",
    "SPEC_HASH",
    "StarterCronJob",
    "cronjob_document",
    "cronjob_name",
    "label_value",
]

DEFAULT_IMAGE: Final = "curlimages/curl:8.10.1"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "fluxo"}
OWNER_ACCOUNT: Final = "fluxo.dev/account"
OWNER_TRIGGER: Final = "fluxo.dev/trigger"
SPEC_HASH: Final = "fluxo.dev/spec-sha256"
_NAME_LIMIT: Final = 52  # the CronJob controller appends "-<11 digits>" to name each Job

# Kept as one constant text: every value comes from the environment.
_SCRIPT: Final = r"""set -eu
slot="${FLUXO_JOB_NAME##*-}"
case "$slot" in
  ''|*[!0-9]*) at="manual-$(date -u +%Y-%m-%dT%H:%M:%SZ)" ;;
  *) at="$(date -u -d "@$((slot * 60))" +%Y-%m-%dT%H:%M:%SZ)" ;;
esac
body="$(printf '{"input":%s,"headers":{"fluxo-trigger":"%s","fluxo-scheduled-at":"%s"}}' \
  "$FLUXO_INPUT" "$FLUXO_TRIGGER" "$at")"
exec curl -fsS --retry 3 --retry-all-errors -X POST \
  -H "Authorization: $FLUXO_AUTHORIZATION" -H "Content-Type: application/json" \
  -H "Idempotency-Key: $FLUXO_KEY_PREFIX:$at" -d "$body" "$FLUXO_JOBS_URL"
"""

Concurrency = Literal["allow", "forbid", "replace"]


@dataclass(frozen=True, kw_only=True)
class StarterCronJob:
    """What one CronJob says.

    Attributes:
        account: the account whose job it starts (its name, labels and Secret carry it).
        workflow: the workflow; each firing runs its newest version.
        trigger: the cron trigger it schedules (None: ``fluxo export --cronjob``).
        schedule, time_zone: when (5 fields; an IANA zone, None: the controller's, UTC).
        concurrency: the trigger's ``allow`` / ``forbid`` / ``replace``.
        catch_up: ``skip``: a slot more than ``grace_s`` late is dropped; ``once``: the latest
            missed slot fires (what Kubernetes does without a starting deadline).
        suspend: keep the object, fire nothing (a paused or held trigger).
        input: each job's input.
        gateway_url: the Fluxo API as the cluster reaches it.
        token_secret: the Secret holding ``authorization: Bearer <engine token>``.
    """

    account: str
    workflow: str
    trigger: str | None = None
    schedule: str
    time_zone: str | None = None
    concurrency: Concurrency = "forbid"
    catch_up: Literal["skip", "once"] = "once"
    grace_s: int = 60
    suspend: bool = False
    input: Mapping[str, Any] = field(default_factory=dict)
    gateway_url: str
    token_secret: str | None = None
    image: str = DEFAULT_IMAGE


def cronjob_name(account: str, trigger_or_workflow: str) -> str:
    """``fluxo-<account>-<name>-<hash>``: a DNS-1123 label short enough for the Jobs' names;
    the hash of the exact account and name keeps accounts apart in one namespace."""
    return "fluxo-" + scoped_name(account, trigger_or_workflow, limit=_NAME_LIMIT - len("fluxo-"))


def label_value(value: str) -> str:
    """``value`` as a label value, or a digest of it when it cannot be one."""
    if re.match(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$", value):
        return value
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def cronjob_document(starter: StarterCronJob) -> dict[str, Any]:
    """The ``batch/v1`` CronJob (no namespace: the caller's), with the hash of its spec in
    the annotation :data:`SPEC_HASH`, so a reconcile tells a changed spec from one Kubernetes
    defaulted."""
    owner = starter.trigger or starter.workflow
    name = cronjob_name(starter.account, owner)
    labels = {
        **MANAGED_BY,
        OWNER_ACCOUNT: label_value(starter.account),
        "fluxo.dev/workflow": label_value(starter.workflow),
    }
    if starter.trigger is not None:
        labels[OWNER_TRIGGER] = label_value(starter.trigger)
    key_prefix = (
        f"trigger:{starter.trigger}" if starter.trigger is not None else f"cron:{starter.workflow}"
    )
    env: list[dict[str, Any]] = [
        {
            "name": "FLUXO_AUTHORIZATION",
            "valueFrom": {
                "secretKeyRef": {
                    "name": starter.token_secret or gateway_secret_name(starter.account),
                    "key": "authorization",
                }
            },
        },
        {
            "name": "FLUXO_JOB_NAME",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
            },
        },
        {
            "name": "FLUXO_JOBS_URL",
            "value": f"{starter.gateway_url.rstrip('/')}/v1/workflows/{starter.workflow}/jobs",
        },
        {"name": "FLUXO_KEY_PREFIX", "value": key_prefix},
        # The packet's fluxo-trigger header: the trigger, or (an export) the CronJob.
        {"name": "FLUXO_TRIGGER", "value": starter.trigger or name},
        {
            "name": "FLUXO_INPUT",
            "value": json.dumps(dict(starter.input), sort_keys=True, separators=(",", ":")),
        },
    ]
    spec: dict[str, Any] = {
        "schedule": starter.schedule,
        "concurrencyPolicy": starter.concurrency.capitalize(),
        "suspend": starter.suspend,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {
            "metadata": {"labels": dict(labels)},
            "spec": {
                "backoffLimit": 3,
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": "start-job",
                                "image": starter.image,
                                "command": ["sh", "-c", _SCRIPT],
                                "env": env,
                            }
                        ],
                    },
                },
            },
        },
    }
    if starter.time_zone is not None:
        spec["timeZone"] = starter.time_zone
    if starter.catch_up == "skip":
        spec["startingDeadlineSeconds"] = starter.grace_s
    annotations = {OWNER_ACCOUNT: starter.account, SPEC_HASH: spec_hash(spec)}
    if starter.trigger is not None:
        annotations[OWNER_TRIGGER] = starter.trigger
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def spec_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
