"""Declarative resources, Kubernetes-style: the document envelope, the kinds and their specs.

A resource document is ``apiVersion: fluxo.dev/v1``, a ``kind``, ``metadata`` (``name``,
``labels``, and on a read the platform's ``uid``, ``resourceVersion``, ``generation`` and
``creationTimestamp``) and a ``spec``. ``status`` belongs to the platform: its controllers write
conditions there; a ``status`` in an applied document is ignored, so that what ``fluxo get -o
yaml`` printed can be applied again unchanged.

Each kind has a pydantic spec model (``extra="forbid"``); :func:`validate_resource` checks a
decoded document and raises one :class:`~fluxo_core.errors.ValidationError` that lists every
problem located from the document's root (``spec.price.perCall: ...``). A Workflow's spec is the
workflow IR itself (:class:`~fluxo_core.ir.workflow.Workflow`), checked by
:func:`~fluxo_core.ir.validation.validate_workflow`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import pydantic
from pydantic import ConfigDict, Field, StringConstraints

from fluxo_core.errors import IRValidationError, Problem, ValidationError
from fluxo_core.ir._problems import problems_from_pydantic
from fluxo_core.ir.validation import validate_workflow
from fluxo_core.ir.workflow import LabelKey, LabelValue, Name

__all__ = [
    "KINDS",
    "ROLES",
    "AccountSpec",
    "BlockSpec",
    "CronConfig",
    "KindInfo",
    "QuotaSpec",
    "ResourceDocument",
    "ServiceSpec",
    "TriggerSpec",
    "UserSpec",
    "ValidResource",
    "WebhookConfig",
    "kind_info",
    "validate_resource",
]

ROLES: Final = ("platform-admin", "account-admin", "member", "viewer")
_MONEY: Final = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,6})?$")


class _Spec(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _money(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _MONEY.match(value):
        raise ValueError(
            "expected an exact decimal amount as text, at most 6 decimal places "
            "(e.g. '0.002'; quote it in YAML)"
        )
    return value


Money = Annotated[str, pydantic.BeforeValidator(_money)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class AccountSpec(_Spec):
    """An account (platform admin only). ``displayName``: how it is shown."""

    display_name: str | None = Field(default=None, alias="displayName", max_length=200)


class UserSpec(_Spec):
    """A user of the account and the role it has there."""

    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}$")]
    role: Literal["platform-admin", "account-admin", "member", "viewer"] = "member"
    display_name: str | None = Field(default=None, alias="displayName", max_length=200)


class ServicePrice(_Spec):
    per_call: Money = Field(default="0", alias="perCall")
    per_item: Money = Field(default="0", alias="perItem")
    currency: Currency = "EUR"


class ServiceLimits(_Spec):
    max_attempts: int | None = Field(default=None, alias="maxAttempts", ge=1, le=100)
    timeout_s: float | None = Field(default=None, alias="timeoutS", gt=0, le=86_400)


class PublishedWorkflow(_Spec):
    """The workflow a Service publishes: ``name``, a ``version`` number or ``latest`` (the
    newest version at each call), and the ``account`` that publishes it (it runs the child
    jobs and pays for their calls; the applier's account when absent)."""

    name: Name
    version: int | Literal["latest"] = "latest"
    account: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] | None = None

    @pydantic.field_validator("version")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 2**31 - 1:
            raise ValueError("a workflow version is a whole number from 1, or 'latest'")
        return value


class ServiceVisibility(_Spec):
    """Who may call a published workflow: its ``account`` only, the ``accounts`` listed as
    well, or everyone (``public``)."""

    scope: Literal["account", "accounts", "public"] = "account"
    accounts: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]] = Field(
        default_factory=list, max_length=1000
    )


class ServiceSpec(_Spec):
    """A published service's terms: its price and limits (platform admin only: prices are
    platform-wide). ``version``: one version, or every published version when absent.

    With ``workflow`` the Service publishes that workflow as a service (a workflow service):
    ``description``, ``inputSchema`` and ``outputSchema`` (the workflow's own when absent)
    and ``visibility`` describe it as a Python service's code would."""

    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,50}$")] | None = None
    price: ServicePrice | None = None
    limits: ServiceLimits | None = None
    workflow: PublishedWorkflow | None = None
    description: str | None = Field(default=None, max_length=2000)
    input_schema: dict[str, Any] | None = Field(default=None, alias="inputSchema")
    output_schema: dict[str, Any] | None = Field(default=None, alias="outputSchema")
    visibility: ServiceVisibility | None = None


class QuotaSpec(_Spec):
    """One limit of the account, or of one workflow or service in it: the same fields as
    ``PUT /v1/quotas/{name}`` (``kind``: calls, spend, concurrent_jobs or rate; ``limit``;
    ``scope``: account, workflow or service, with ``target`` its name; ``period``; ``currency``
    for spend). The shape is checked here; the quota controller checks the rules between the
    fields (a period each kind allows, a decimal spend) with the quota store's own checks."""

    kind: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    limit: int | Annotated[str, StringConstraints(max_length=40)]
    scope: Annotated[str, StringConstraints(max_length=40)] = "account"
    target: Annotated[str, StringConstraints(max_length=200)] | None = None
    period: Annotated[str, StringConstraints(max_length=40)] | None = None
    currency: Currency | None = None


class BlockTarget(_Spec):
    kind: Literal["account", "user", "workflow", "service", "trigger"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class BlockSpec(_Spec):
    """A block of one target, with its reason and an optional end (RFC 3339)."""

    target: BlockTarget
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    until: datetime | None = None


SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value[:60]!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None
    return value


TimeZone = Annotated[str, StringConstraints(max_length=60), pydantic.AfterValidator(_time_zone)]


class CronConfig(_Spec):
    """When a cron trigger fires and what it does with missed and overlapping runs.

    ``catchUp``: after downtime (or a pause), ``skip`` the slots missed, fire ``once`` for them,
    or fire ``all`` of them up to ``maxCatchUp``. ``concurrency``: a slot whose previous job
    still runs fires anyway (``allow``), is skipped (``forbid``), or cancels that job
    (``replace``).

    ``scheduler``: who keeps the time. ``fluxo``: the built-in scheduler. ``kubernetes``: the
    trigger becomes a CronJob in the configured cluster (``FLUXO_KUBERNETES``), or a
    CronWorkflow for a workflow on Argo; Fluxo then fires nothing itself. Kubernetes makes up
    only the latest missed slot, so ``catchUp: all`` is refused there."""

    time_zone: TimeZone = Field(default="UTC", alias="timeZone")
    catch_up: Literal["skip", "once", "all"] = Field(default="skip", alias="catchUp")
    max_catch_up: int = Field(default=10, alias="maxCatchUp", ge=1, le=100)
    concurrency: Literal["allow", "forbid", "replace"] = "allow"
    scheduler: Literal["fluxo", "kubernetes"] = "fluxo"

    @pydantic.model_validator(mode="after")
    def _kubernetes_catch_up(self) -> CronConfig:
        if self.scheduler == "kubernetes" and self.catch_up == "all":
            raise ValueError(
                "catchUp: all is not possible with scheduler: kubernetes (a CronJob makes up "
                "only the latest missed slot); use catchUp: once or skip"
            )
        return self


class WebhookConfig(_Spec):
    """How a webhook request proves it comes from the sender: an HMAC-SHA256 signature with the
    stored secret ``secret`` (``hmac``), or that secret as a bearer token (``bearer``)."""

    auth: Literal["hmac", "bearer"] = "hmac"
    secret: SecretName
    max_body_bytes: int = Field(default=262_144, alias="maxBodyBytes", ge=1, le=16_777_216)


_PRINTABLE = r"^[\x20-\x7e]{1,200}$"


class EmailConfig(_Spec):
    """An email trigger's mailbox (IMAP): where, how to log in (the password is the stored
    secret ``passwordSecret``), the folder and filters, and what is done to a message once its
    job is committed: ``seen`` marks it, ``move:<folder>`` moves it there.

    ``caCertificate``: PEM of the CA (or self-signed certificate) the server's certificate is
    checked against, for a server whose certificate no system CA signed."""

    host: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    ]
    port: int = Field(ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "tls"
    username: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    password_secret: SecretName = Field(alias="passwordSecret")
    folder: Annotated[str, StringConstraints(pattern=_PRINTABLE)] = "INBOX"
    from_filter: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, alias="fromFilter"
    )
    subject_filter: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, alias="subjectFilter"
    )
    after: Annotated[str, StringConstraints(pattern=r"^(seen|move:[\x20-\x7e]{1,200})$")] = "seen"
    ca_certificate: Annotated[str, StringConstraints(max_length=20_000)] | None = Field(
        default=None, alias="caCertificate"
    )
    poll_interval_s: float = Field(default=30.0, alias="pollIntervalS", ge=0.5, le=3600)


class SmsConfig(_Spec):
    """An SMS trigger's provider. ``twilio``: Twilio's form webhook, checked with
    ``X-Twilio-Signature`` and the account's auth token (the stored secret ``secret``) over
    ``publicUrl`` (the URL Twilio calls, as it sees it: behind a proxy it differs from the one
    Fluxo sees) or, without one, the request's own URL. ``json``: a JSON body
    ``{"id", "from", "to", "text"}`` signed like a webhook (HMAC-SHA256 over
    ``<timestamp>.<body>``)."""

    provider: Literal["twilio", "json"] = "twilio"
    secret: SecretName
    public_url: (
        Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[^\s]+$")] | None
    ) = Field(default=None, alias="publicUrl")


class QueueConfig(_Spec):
    """A queue trigger's broker: ``rabbitmq`` (a queue, acknowledged once its job is committed;
    poison messages to ``deadLetterQueue``, default ``<queue>.dead``) or ``mqtt`` (a topic at
    QoS 1 with a persistent session under ``clientId``; poison to ``deadLetterTopic``). The
    password is the stored secret ``passwordSecret``. A message's event id is its message id
    (AMQP ``message_id``; MQTT: the JSON body's ``idField``), else a digest of its body.

    ``fluxo``: the output messages of the Fluxo service ``service`` (any version, or
    ``version``), of calls made in the trigger's own account only, read every
    ``pollIntervalS``; the event id is the output message's id."""

    source: Literal["rabbitmq", "mqtt", "fluxo"]
    host: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$"),
        ]
        | None
    ) = None
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: bool = False
    username: Annotated[str, StringConstraints(max_length=320)] | None = None
    password_secret: SecretName | None = Field(default=None, alias="passwordSecret")
    vhost: Annotated[str, StringConstraints(max_length=200)] = "/"
    queue: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    dead_letter_queue: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = (
        Field(default=None, alias="deadLetterQueue")
    )
    topic: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    client_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = Field(
        default=None, alias="clientId"
    )
    dead_letter_topic: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = (
        Field(default=None, alias="deadLetterTopic")
    )
    id_field: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(
        default="id", alias="idField"
    )
    max_message_bytes: int = Field(default=1_048_576, alias="maxMessageBytes", ge=1, le=16_777_216)
    service: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")] | None
    ) = None
    version: Annotated[str, StringConstraints(min_length=1, max_length=50)] | None = None
    poll_interval_s: float = Field(default=1.0, alias="pollIntervalS", ge=0.05, le=3600)

    @pydantic.model_validator(mode="after")
    def _per_source(self) -> QueueConfig:
        if self.source == "fluxo":
            if not self.service:
                raise ValueError(
                    "a fluxo queue trigger needs service: the Fluxo service whose outputs start "
                    "jobs"
                )
            if self.host is not None:
                raise ValueError("a fluxo queue trigger reads this Fluxo: it takes no host")
            return self
        if self.host is None:
            raise ValueError(f"a {self.source} queue trigger needs host: the broker's host")
        if self.service is not None or self.version is not None:
            raise ValueError("service and version are for fluxo queue triggers")
        if self.source == "rabbitmq" and not self.queue:
            raise ValueError("a rabbitmq queue trigger needs queue: the queue it consumes")
        if self.source == "mqtt" and not self.topic:
            raise ValueError("an mqtt queue trigger needs topic: the topic filter it subscribes")
        return self


class TriggerSpec(_Spec):
    """What starts jobs of a workflow: a schedule (cron), a webhook or incoming mail.

    ``input``: a cron trigger's job input. ``cron`` and ``webhook``: the settings of that type
    (defaults when absent). ``secrets``: names of the account's stored secrets a trigger type
    reads (``fluxo secret``), never their values."""

    workflow: Name
    type: Literal["cron", "webhook", "email", "sms", "queue"]
    schedule: Annotated[str, StringConstraints(max_length=200)] | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    cron: CronConfig | None = None
    webhook: WebhookConfig | None = None
    email: EmailConfig | None = None
    sms: SmsConfig | None = None
    queue: QueueConfig | None = None

    @pydantic.model_validator(mode="after")
    def _per_type(self) -> TriggerSpec:
        if self.type == "cron" and not self.schedule:
            raise ValueError("a cron trigger needs a schedule, e.g. '*/5 * * * *'")
        if self.type != "cron" and (self.schedule is not None or self.cron is not None):
            raise ValueError(f"schedule and cron are for cron triggers, not {self.type}")
        if self.type == "webhook" and self.webhook is None:
            raise ValueError(
                "a webhook trigger needs webhook.secret: the name of a stored secret "
                "(fluxo secret set NAME) it checks signatures with"
            )
        if self.type != "webhook" and self.webhook is not None:
            raise ValueError(f"webhook is for webhook triggers, not {self.type}")
        for kind, hint in (
            ("email", "the mailbox: host, port, username, passwordSecret"),
            ("sms", "the provider and its secret: provider, secret"),
            ("queue", "the broker: source (rabbitmq, mqtt), host, and queue or topic"),
        ):
            if self.type == kind and getattr(self, kind) is None:
                article = "an" if kind[0] in "aeiou" else "a"
                raise ValueError(f"{article} {kind} trigger needs {kind}: {hint}")
            if self.type != kind and getattr(self, kind) is not None:
                raise ValueError(f"{kind} is for {kind} triggers, not {self.type}")
        return self


class ResourceMetadata(_Spec):
    """What ``apply`` reads of ``metadata``; what the platform set (uid, generation,
    creationTimestamp) may come back on a round trip and is ignored."""

    name: Name
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    resource_version: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, alias="resourceVersion"
    )
    uid: str | None = Field(default=None, max_length=128)
    generation: int | None = None
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    # A workflow's own metadata (IR): kept for the Workflow kind, checked by the IR.
    account: str | None = None
    version: str | None = None


class ResourceDocument(_Spec):
    """The envelope every kind shares; ``spec`` is checked by the kind's model."""

    api_version: Literal["fluxo.dev/v1"] = Field(alias="apiVersion")
    kind: str
    metadata: ResourceMetadata
    spec: dict[str, Any] = Field(default_factory=dict)
    status: Any = None  # the platform's; ignored on apply


@dataclass(frozen=True)
class KindInfo:
    """A kind: its name, how the command line may spell it, its spec model, and who may write it.

    Attributes:
        platform: only the platform admin writes it (its effect is platform-wide).
    """

    kind: str
    plural: str
    aliases: tuple[str, ...]
    spec: type[pydantic.BaseModel] | None  # None: the workflow IR
    platform: bool = False


KINDS: Final[dict[str, KindInfo]] = {
    k.kind: k
    for k in (
        KindInfo("Account", "accounts", ("acct",), AccountSpec, platform=True),
        KindInfo("User", "users", ("usr",), UserSpec),
        KindInfo("Service", "services", ("svc",), ServiceSpec, platform=True),
        KindInfo("Workflow", "workflows", ("wf",), None),
        KindInfo("Quota", "quotas", ("quota",), QuotaSpec),
        KindInfo("Block", "blocks", (), BlockSpec),
        KindInfo("Trigger", "triggers", ("trg",), TriggerSpec),
    )
}
_SPELLINGS: Final = {
    spelling: info
    for info in KINDS.values()
    for spelling in (info.kind.lower(), info.plural, *info.aliases)
}


def kind_info(name: str, *, where: str = "kind") -> KindInfo:
    """The kind spelled ``name`` (any case; singular, plural or short: ``wf``).

    Raises:
        ValidationError: no such kind; the message lists the kinds.
    """
    info = _SPELLINGS.get(name.lower())
    if info is None:
        known = ", ".join(f"{k.kind} ({k.plural})" for k in KINDS.values())
        raise ValidationError(
            f"unknown kind {name[:60]!r}; the kinds are {known}",
            problems=[(where, "unknown kind")],
            kind=name[:60],
        )
    return info


@dataclass(frozen=True)
class ValidResource:
    """A checked document: what is stored. ``spec`` is the normalised JSON of the spec."""

    kind: KindInfo
    name: str
    labels: dict[str, str]
    spec: dict[str, Any]
    resource_version: str | None  # the version the writer read (a stale one gets 409)
    status_ignored: bool
    account: str | None = None  # metadata.account, if the document names one


def validate_resource(
    data: Any, *, known_services: list[str] | None = None, where: str = ""
) -> ValidResource:
    """Check a decoded resource document of any kind.

    Args:
        data: the document (from JSON or YAML).
        known_services: for a Workflow, the services its steps may name (None: not checked).
        where: prefix of every problem's location (``documents[2]``).

    Raises:
        ValidationError: every problem, located from the document root (``spec.price.perCall``).
        IRValidationError: a Workflow's problems, as the IR reports them.
    """
    prefix = where

    def loc(path: str) -> str:
        return f"{prefix}.{path}" if prefix else path

    if not isinstance(data, dict):
        raise ValidationError(
            "a resource document must be an object with apiVersion, kind, metadata and spec",
            problems=[(prefix or "<root>", f"expected an object, got {type(data).__name__}")],
        )
    problems: list[Problem] = []
    info: KindInfo | None = None
    kind = data.get("kind")
    if isinstance(kind, str):
        try:
            info = kind_info(kind, where=loc("kind"))
        except ValidationError as exc:
            problems.extend(exc.problems)
        if info is not None and kind != info.kind:
            problems.append((loc("kind"), f"write the kind as {info.kind!r}"))
    try:
        envelope = ResourceDocument.model_validate(data)
    except pydantic.ValidationError as exc:
        problems.extend(problems_from_pydantic(exc, prefix))
        envelope = None
    if envelope is None or info is None or problems:
        name = (
            data.get("metadata", {}).get("name") if isinstance(data.get("metadata"), dict) else None
        )
        raise ValidationError(
            f"invalid resource{f' {name!r}' if isinstance(name, str) else ''}: fix the problems "
            "listed below",
            problems=problems or [(loc("kind"), "required")],
        )
    meta = envelope.metadata
    if info.spec is None:
        spec = _workflow_spec(data, known_services, prefix)
    else:
        try:
            model = info.spec.model_validate(envelope.spec)
        except pydantic.ValidationError as exc:
            raise ValidationError(
                f"invalid {info.kind} {meta.name!r}: fix the problems listed below",
                problems=problems_from_pydantic(exc, loc("spec")),
                kind=info.kind,
                name=meta.name,
            ) from exc
        spec = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return ValidResource(
        kind=info,
        name=meta.name,
        labels=dict(meta.labels),
        spec=spec,
        resource_version=meta.resource_version,
        status_ignored=envelope.status is not None,
        account=meta.account,
    )


def _workflow_spec(data: dict[str, Any], known: list[str] | None, prefix: str) -> dict[str, Any]:
    """A Workflow's spec, checked as the IR; its metadata fields the platform sets are dropped
    so a document read back from the platform applies again."""
    metadata = {
        k: v
        for k, v in data["metadata"].items()
        if k not in ("resourceVersion", "uid", "generation", "creationTimestamp", "version")
    }
    document = {**data, "metadata": metadata}
    document.pop("status", None)
    try:
        workflow = validate_workflow(document, known_services=known)
    except IRValidationError as exc:
        if not prefix:
            raise
        raise IRValidationError(
            exc.message.split("\n")[0],
            problems=[
                (f"{prefix}.{where}" if where else prefix, what) for where, what in exc.problems
            ],
        ) from exc
    dumped: dict[str, Any] = workflow.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dict(dumped["spec"])
