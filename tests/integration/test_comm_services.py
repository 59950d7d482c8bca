"""email-send, sms-send and webhook-send against real servers on loopback.

An aiosmtpd server that requires STARTTLS (a certificate made here) and AUTH, a Twilio-shaped
fake of the Messaging API, and an aiohttp webhook receiver that checks the signature itself.
Credentials live in a real SecretStore and must show up in no result, error or log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fluxo_core.errors import ServiceError, ValidationError
from fluxo_core.storage import AccountStore, Database, SecretStore
from fluxo_core.storage.secrets import SecretKey
from service_runtime.sdk import Call
from services import (
    BuiltinConfig,
    EmailService,
    SmsService,
    StoredAttachment,
    WebhookService,
    builtin_services,
    sign_webhook,
    verify_webhook,
)
from tests.support.smtp import SmtpServer, run_smtp
from tests.support.tls import SelfSigned, make_self_signed
from tests.support.twilio import ACCOUNT_SID, INVALID_TO, FakeTwilio, serve_twilio

pytestmark = pytest.mark.timeout(60)

SMTP_PASSWORD = "smtp-Pa55-w0rd-7f3c9e"
TWILIO_TOKEN = "twilio-auth-token-0b7e44a1"
HOOK_KEY = "whsec-4f1d9a77c2e8b6"
KEY = SecretKey.parse(base64.b64encode(b"c" * 32).decode(), "test key")
LOOPBACK = BuiltinConfig(http_allow=("127.0.0.1",), webhook_backoff_s=0.01)


def a_call(account: str = "acme") -> Call:
    return Call(str(uuid.uuid4()), 1, account, "ada", None, None)


@pytest.fixture
async def secrets(tmp_path: Path) -> AsyncIterator[SecretStore]:
    db = Database(f"sqlite:///{tmp_path}/fluxo.db")
    await db.migrate()
    await AccountStore(db).ensure_account("acme")
    store = SecretStore(db, KEY)
    await store.put("acme", "smtp-orders", SMTP_PASSWORD)
    await store.put("acme", "twilio", TWILIO_TOKEN)
    await store.put("acme", "hooks", HOOK_KEY)
    yield store
    await db.close()


@pytest.fixture
def cert(tmp_path: Path) -> SelfSigned:
    return make_self_signed(tmp_path / "tls")


@pytest.fixture
def smtp(cert: SelfSigned) -> Iterator[SmtpServer]:
    yield from run_smtp(cert, {"orders@example.com": SMTP_PASSWORD})


def ours(caplog: pytest.LogCaptureFixture) -> str:
    """What Fluxo and its client libraries logged (the test servers' own logs left out)."""
    return "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("mail.log", "aiohttp"))
    )


def no_secret_in(text: str) -> None:
    for value in (SMTP_PASSWORD, TWILIO_TOKEN, HOOK_KEY):
        assert value not in text


def test_the_three_services_are_built_in() -> None:
    names = {s.name for s in builtin_services()}
    assert {"email-send", "sms-send", "webhook-send"} <= names


@pytest.mark.parametrize("service", ["email-send", "sms-send", "webhook-send"])
async def test_an_array_is_refused_before_anything_is_sent(
    service: str,
    smtp: SmtpServer,
    twilio: FakeTwilio,
    receiver: Receiver,
    secrets: SecretStore,
) -> None:
    # One effect per call: a retry repeats exactly one message under the call's key.
    made = {
        "email-send": lambda: EmailService(LOOPBACK, secrets=secrets),
        "sms-send": lambda: SmsService(LOOPBACK, secrets=secrets),
        "webhook-send": lambda: WebhookService(LOOPBACK, secrets=secrets),
    }[service]()
    payload = {"email-send": email(smtp), "sms-send": sms(twilio), "webhook-send": hook(receiver)}
    with pytest.raises(ServiceError, match="give an object, not an array") as refused:
        await made.send([payload[service]], call=a_call())
    assert not refused.value.retryable
    assert (smtp.recorder.received, twilio.requests, receiver.deliveries) == ([], [], [])


# --- email-send ------------------------------------------------------------------------------


def email(server: SmtpServer, **fields: Any) -> dict[str, Any]:
    return {
        "smtp": {
            "host": server.host,
            "port": server.port,
            "security": "starttls",
            "username": "orders@example.com",
            "password": {"secret": "smtp-orders"},
        },
        "from": "Orders <orders@example.com>",
        "to": ["ada@example.net"],
        "subject": "Your order SO-1042",
        "text": "It has shipped.",
        **fields,
    }


class Attachments:
    """Attachments stored by reference (what an email trigger keeps), per account."""

    def __init__(self, stored: dict[tuple[str, str], StoredAttachment]) -> None:
        self.stored = stored

    async def read_attachment(
        self, account_id: str, ref: str, *, max_bytes: int
    ) -> StoredAttachment:
        from fluxo_core.errors import NotFoundError

        try:
            return self.stored[(account_id, ref)]
        except KeyError:
            raise NotFoundError(
                f"attachment {ref!r} is not stored in account {account_id!r}"
            ) from None


async def test_an_email_goes_over_starttls_with_a_login_and_every_part(
    smtp: SmtpServer, cert: SelfSigned, secrets: SecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = Attachments(
        {("acme", "att-1"): StoredAttachment("invoice.pdf", "application/pdf", b"%PDF-1.4 fake")}
    )
    service = EmailService(
        LOOPBACK, secrets=secrets, attachments=store, tls_context=cert.client_context()
    )
    call = a_call()
    result = await service.send(
        email(
            smtp,
            cc=[{"name": "Lovelace, Ada", "address": "ada.l@example.net"}],
            bcc=["audit@example.org"],
            reply_to="help@example.com",
            html="<p>It has <b>shipped</b>.</p>",
            attachments=[
                {"ref": "att-1"},
                {
                    "filename": "items.csv",
                    "content_base64": base64.b64encode(b"sku,qty\nKB-1,2\n").decode(),
                },
            ],
        ),
        call=call,
    )
    [got] = smtp.recorder.received
    assert got.tls
    assert got.login == "orders@example.com"
    assert got.mail_from == "orders@example.com"
    assert sorted(got.rcpt_tos) == ["ada.l@example.net", "ada@example.net", "audit@example.org"]
    message = got.message
    assert message["Message-ID"] == f"<{call.id}@example.com>"
    assert message["To"] == "ada@example.net"
    assert message["Cc"] == '"Lovelace, Ada" <ada.l@example.net>'
    assert message["Bcc"] is None
    assert b"audit@example.org" not in got.data
    assert message["Subject"] == "Your order SO-1042"
    body = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert body is not None
    assert body.get_content().strip() == "It has shipped."
    assert html is not None
    assert "<b>shipped</b>" in html.get_content()
    files = {a.get_filename(): a.get_payload(decode=True) for a in message.iter_attachments()}
    assert files == {"invoice.pdf": b"%PDF-1.4 fake", "items.csv": b"sku,qty\nKB-1,2\n"}
    assert result["message_id"] == f"<{call.id}@example.com>"
    assert sorted(result["accepted"]) == sorted(got.rcpt_tos)
    assert result["refused"] == {}
    assert result["response"].startswith("2.0.0 Ok") or "Ok" in result["response"]
    no_secret_in(str(result) + ours(caplog))


async def test_a_retried_call_sends_the_same_message_id_and_a_new_call_another(
    smtp: SmtpServer, cert: SelfSigned, secrets: SecretStore
) -> None:
    service = EmailService(LOOPBACK, secrets=secrets, tls_context=cert.client_context())
    call = a_call()
    await service.send(email(smtp), call=call)
    await service.send(email(smtp), call=Call(call.id, 2, "acme", "ada", None, None))
    await service.send(email(smtp), call=a_call())
    ids = [r.message["Message-ID"] for r in smtp.recorder.received]
    assert ids[0] == ids[1] == f"<{call.id}@example.com>"
    assert ids[2] != ids[0]


async def test_a_refused_login_is_a_clear_final_error_without_the_password(
    smtp: SmtpServer, cert: SelfSigned, secrets: SecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await secrets.put("acme", "smtp-orders", "not-the-" + SMTP_PASSWORD)
    service = EmailService(LOOPBACK, secrets=secrets, tls_context=cert.client_context())
    with pytest.raises(ServiceError) as info:
        await service.send(email(smtp), call=a_call())
    assert not info.value.retryable
    assert "refused the login of 'orders@example.com'" in info.value.message
    assert "check the stored secret 'smtp-orders'" in info.value.message
    assert smtp.recorder.received == []
    assert SMTP_PASSWORD not in info.value.message + ours(caplog)


async def test_refused_recipients_and_temporary_failures_are_told_apart(
    smtp: SmtpServer, cert: SelfSigned, secrets: SecretStore
) -> None:
    service = EmailService(LOOPBACK, secrets=secrets, tls_context=cert.client_context())
    smtp.recorder.refuse = {"gone@example.net"}
    result = await service.send(
        email(smtp, to=["ada@example.net", "gone@example.net"]), call=a_call()
    )
    assert result["accepted"] == ["ada@example.net"]
    assert result["refused"]["gone@example.net"].startswith("550")
    with pytest.raises(ServiceError) as every:
        await service.send(email(smtp, to=["gone@example.net"]), call=a_call())
    assert not every.value.retryable
    assert "refused every recipient" in every.value.message
    smtp.recorder.fail_data = "451 4.3.0 try again later"
    with pytest.raises(ServiceError) as later:
        await service.send(email(smtp), call=a_call())
    assert later.value.retryable
    assert "451" in later.value.message


async def test_without_starttls_or_with_an_untrusted_certificate_nothing_is_sent(
    smtp: SmtpServer, secrets: SecretStore, cert: SelfSigned
) -> None:
    untrusted = EmailService(LOOPBACK, secrets=secrets)  # the system's CAs: ours is not one
    with pytest.raises(ServiceError) as info:
        await untrusted.send(email(smtp), call=a_call())
    assert not info.value.retryable
    assert "certificate" in info.value.message
    trusted = EmailService(LOOPBACK, secrets=secrets, tls_context=cert.client_context())
    with pytest.raises(ValidationError) as plain:
        await trusted.send(
            email(smtp, smtp={**email(smtp)["smtp"], "security": "none"}), call=a_call()
        )
    assert (
        "payload.smtp.security",
        "a login is sent only over TLS: use starttls (port 587) or tls (port 465)",
    ) in plain.value.problems
    assert smtp.recorder.received == []


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.org"}, "payload.subject"),
        ({"to": ["ada@example.net\r\nBcc: victim@example.org"]}, "payload.to[0]"),
        ({"to": ["ada@example.net, eve@example.org"]}, "payload.to[0]"),
        ({"from": {"name": "Orders\nBcc: x@y.z", "address": "orders@example.com"}}, "payload.from"),
        ({"to": ["not an address"]}, "payload.to[0]"),
        (
            {"attachments": [{"filename": "a\r\nX: y", "content_base64": "YQ=="}]},
            "payload.attachments[0].filename",
        ),
    ],
)
async def test_header_injection_is_refused_with_its_location(
    smtp: SmtpServer, cert: SelfSigned, secrets: SecretStore, fields: dict[str, Any], where: str
) -> None:
    service = EmailService(LOOPBACK, secrets=secrets, tls_context=cert.client_context())
    with pytest.raises(ValidationError) as info:
        await service.send(email(smtp, **fields), call=a_call())
    assert where in [w for w, _ in info.value.problems]
    assert smtp.recorder.received == []


async def test_a_literal_password_is_refused_and_never_quoted(
    smtp: SmtpServer, secrets: SecretStore
) -> None:
    service = EmailService(LOOPBACK, secrets=secrets)
    payload = email(smtp)
    payload["smtp"]["password"] = SMTP_PASSWORD
    with pytest.raises(ValidationError) as info:
        await service.send(payload, call=a_call())
    [(where, message)] = info.value.problems
    assert where == "payload.smtp.password"
    assert "fluxo secret set" in message
    assert SMTP_PASSWORD not in str(info.value.problems) + info.value.message


async def test_the_smtp_host_passes_the_host_policy(smtp: SmtpServer, secrets: SecretStore) -> None:
    service = EmailService(BuiltinConfig(), secrets=secrets)  # internal addresses refused
    with pytest.raises(ServiceError) as info:
        await service.send(email(smtp), call=a_call())
    assert not info.value.retryable
    assert "FLUXO_HTTP_ALLOW" in info.value.message


# --- sms-send --------------------------------------------------------------------------------


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async for fake in serve_twilio(TWILIO_TOKEN):
        yield fake


def sms(twilio: FakeTwilio, **fields: Any) -> dict[str, Any]:
    return {
        "provider": {
            "account_sid": ACCOUNT_SID,
            "auth_token": {"secret": "twilio"},
            "base_url": twilio.url,
        },
        "to": "+15558675310",
        "from": "+15017122661",
        "body": "Your order SO-1042 has shipped",
        **fields,
    }


async def test_an_sms_is_one_form_post_with_basic_auth_and_the_call_id_as_key(
    twilio: FakeTwilio, secrets: SecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call = a_call()
    result = await SmsService(LOOPBACK, secrets=secrets).send(sms(twilio), call=call)
    [sent] = twilio.sent
    [request] = twilio.requests
    assert request["form"] == {
        "To": "+15558675310",
        "From": "+15017122661",
        "Body": "Your order SO-1042 has shipped",
    }
    assert request["headers"]["I-Twilio-Idempotency-Token"] == call.id
    assert result == {
        "sid": sent["sid"],
        "status": "queued",
        "to": "+15558675310",
        "from": "+15017122661",
    }
    no_secret_in(str(result) + ours(caplog))


async def test_a_retried_sms_call_sends_one_message(
    twilio: FakeTwilio, secrets: SecretStore
) -> None:
    service = SmsService(LOOPBACK, secrets=secrets)
    call = a_call()
    twilio.fail_next = [503]
    with pytest.raises(ServiceError) as info:
        await service.send(sms(twilio), call=call)
    assert info.value.retryable
    assert "HTTP 503" in info.value.message
    first = await service.send(sms(twilio), call=Call(call.id, 2, "acme", "ada", None, None))
    again = await service.send(sms(twilio), call=Call(call.id, 3, "acme", "ada", None, None))
    assert first["sid"] == again["sid"]
    assert len(twilio.sent) == 1
    keys = {r["headers"]["I-Twilio-Idempotency-Token"] for r in twilio.requests}
    assert keys == {call.id}


async def test_provider_refusals_name_the_code_and_are_final(
    twilio: FakeTwilio, secrets: SecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service = SmsService(LOOPBACK, secrets=secrets)
    with pytest.raises(ServiceError) as invalid:
        await service.send(sms(twilio, to=INVALID_TO), call=a_call())
    assert not invalid.value.retryable
    assert (
        "HTTP 400: code 21211: The 'To' number +15005550001 is not a valid phone number."
        in invalid.value.message
    )
    await secrets.put("acme", "twilio", "wrong-" + TWILIO_TOKEN)
    with pytest.raises(ServiceError) as denied:
        await service.send(sms(twilio), call=a_call())
    assert not denied.value.retryable
    assert "code 20003" in denied.value.message
    assert "check account_sid and the stored auth_token secret" in denied.value.message
    assert twilio.sent == []
    no_secret_in(invalid.value.message + denied.value.message + ours(caplog))


async def test_a_bad_sms_payload_lists_every_problem(
    twilio: FakeTwilio, secrets: SecretStore
) -> None:
    payload = sms(twilio, to="555-1234", body=None)
    payload["provider"]["auth_token"] = TWILIO_TOKEN
    del payload["from"]
    with pytest.raises(ValidationError) as info:
        await SmsService(LOOPBACK, secrets=secrets).send(payload, call=a_call())
    where = {w for w, _ in info.value.problems}
    assert where == {"payload.to", "payload.from", "payload.body", "payload.provider.auth_token"}
    assert TWILIO_TOKEN not in str(info.value.problems)
    assert twilio.requests == []


# --- webhook-send ----------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.url = ""
        self.deliveries: list[dict[str, Any]] = []
        self.answers: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers["X-Fluxo-Timestamp"]
        expected = (
            "sha256="
            + hmac.new(
                HOOK_KEY.encode(), timestamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
        )
        self.deliveries.append(
            {
                "body": body,
                "delivery": request.headers["X-Fluxo-Delivery"],
                "signed": hmac.compare_digest(expected, request.headers["X-Fluxo-Signature"]),
                "fresh": abs(time.time() - int(timestamp)) < 300,
                "headers": dict(request.headers),
            }
        )
        status = self.answers.pop(0) if self.answers else 200
        return web.json_response({"ok": status < 300}, status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)

    async def bounce(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(request.query["to"])

    app.router.add_post("/bounce", bounce)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hooks.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield hooks
    await runner.cleanup()


def hook(receiver: Receiver, **fields: Any) -> dict[str, Any]:
    return {
        "url": receiver.url + "/hook",
        "json": {"order": "SO-1042", "total": "157.23"},
        "signing_secret": {"secret": "hooks"},
        **fields,
    }


async def test_a_webhook_is_signed_over_timestamp_and_body(
    receiver: Receiver, secrets: SecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call = a_call()
    result = await WebhookService(LOOPBACK, secrets=secrets).send(
        hook(receiver, headers={"X-Tenant": "acme"}), call=call
    )
    [got] = receiver.deliveries
    assert got["signed"]
    assert got["fresh"]
    assert got["delivery"] == call.id
    assert got["body"] == b'{"order":"SO-1042","total":"157.23"}'
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["headers"]["X-Tenant"] == "acme"
    assert result == {"status": 200, "attempts": 1, "delivery_id": call.id, "body": '{"ok": true}'}
    no_secret_in(str(result) + ours(caplog) + str(got["headers"]))


async def test_5xx_is_retried_with_backoff_keeping_the_delivery_id(
    receiver: Receiver, secrets: SecretStore
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    service = WebhookService(LOOPBACK, secrets=secrets, sleep=sleep)
    receiver.answers = [503, 502]
    call = a_call()
    result = await service.send(hook(receiver, max_attempts=3), call=call)
    assert result["attempts"] == 3
    assert result["status"] == 200
    assert {d["delivery"] for d in receiver.deliveries} == {call.id}
    assert all(d["signed"] for d in receiver.deliveries)
    assert len(waits) == 2
    assert 0.005 <= waits[0] <= 0.01
    assert 0.01 <= waits[1] <= 0.02

    receiver.answers = [500, 500]
    with pytest.raises(ServiceError) as exhausted:
        await service.send(hook(receiver, max_attempts=2), call=call)
    assert exhausted.value.retryable
    assert "in 2 attempts (last: HTTP 500)" in exhausted.value.message


async def test_a_4xx_answer_is_final_and_attempts_are_capped(
    receiver: Receiver, secrets: SecretStore
) -> None:
    service = WebhookService(
        BuiltinConfig(http_allow=("127.0.0.1",), webhook_backoff_s=0.001, webhook_max_attempts=2),
        secrets=secrets,
    )
    receiver.answers = [400]
    with pytest.raises(ServiceError) as refused:
        await service.send(hook(receiver), call=a_call())
    assert not refused.value.retryable
    assert "HTTP 400" in refused.value.message
    receiver.answers = [500, 500, 500]
    with pytest.raises(ServiceError):
        await service.send(hook(receiver, max_attempts=10), call=a_call())
    assert len(receiver.deliveries) == 1 + 2  # the cap, not the 10 asked for


async def test_a_redirect_to_an_address_not_allowed_is_never_followed(
    receiver: Receiver, secrets: SecretStore
) -> None:
    service = WebhookService(LOOPBACK, secrets=secrets)
    port = receiver.url.rsplit(":", 1)[1]
    inside = f"http://127.0.0.2:{port}/hook"  # loopback too, but only 127.0.0.1 is allowed
    with pytest.raises(ServiceError) as info:
        await service.send(
            hook(receiver, url=f"{receiver.url}/bounce?to={inside}", follow_redirects=True),
            call=a_call(),
        )
    assert not info.value.retryable
    assert "refused to connect to 127.0.0.2" in info.value.message
    with pytest.raises(ServiceError) as unfollowed:
        await service.send(
            hook(receiver, url=f"{receiver.url}/bounce?to={receiver.url}/hook"), call=a_call()
        )
    assert "HTTP 307" in unfollowed.value.message
    assert "follow_redirects" in unfollowed.value.message
    followed = await service.send(
        hook(receiver, url=f"{receiver.url}/bounce?to={receiver.url}/hook", follow_redirects=True),
        call=a_call(),
    )
    assert followed["status"] == 200
    assert receiver.deliveries[-1]["signed"]
    assert len(receiver.deliveries) == 1


async def test_credential_headers_and_literal_secrets_are_refused(
    receiver: Receiver, secrets: SecretStore
) -> None:
    payload = hook(receiver, headers={"Authorization": "Bearer abc", "X-Fluxo-Signature": "x"})
    payload["signing_secret"] = HOOK_KEY
    with pytest.raises(ValidationError) as info:
        await WebhookService(LOOPBACK, secrets=secrets).send(payload, call=a_call())
    assert {w for w, _ in info.value.problems} == {
        "payload.headers.Authorization",
        "payload.headers.X-Fluxo-Signature",
        "payload.signing_secret",
    }
    assert HOOK_KEY not in str(info.value.problems)
    assert receiver.deliveries == []


def test_the_signature_helpers_refuse_stale_or_altered_deliveries() -> None:
    now = 1_800_000_000
    signature = sign_webhook(HOOK_KEY, now, b'{"a":1}')
    assert signature.startswith("sha256=")
    assert len(signature) == 7 + 64
    assert verify_webhook(HOOK_KEY, str(now), signature, b'{"a":1}', now=now + 299)
    assert not verify_webhook(HOOK_KEY, str(now), signature, b'{"a":2}', now=now)
    assert not verify_webhook(HOOK_KEY, str(now), signature, b'{"a":1}', now=now + 301)
    assert not verify_webhook("other", str(now), signature, b'{"a":1}', now=now)


# --- as steps of jobs ------------------------------------------------------------------------


def one_step(name: str, service: str, with_: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "engine": "step",
            "steps": [{"id": "send", "kind": "service", "service": service, "with": with_}],
        },
    }


async def test_jobs_send_email_sms_and_webhooks_and_store_no_credential(
    db: Database,
    smtp: SmtpServer,
    cert: SelfSigned,
    twilio: FakeTwilio,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fluxo.control.platform import Platform
    from fluxo_core.redaction import install_log_redaction
    from fluxo_core.storage import Principal
    from tests.integration.test_secrets import everything_stored

    install_log_redaction()
    store = SecretStore(db, KEY)
    services = [
        EmailService(LOOPBACK, secrets=store, tls_context=cert.client_context()).service,
        SmsService(LOOPBACK, secrets=store).service,
        WebhookService(LOOPBACK, secrets=store).service,
    ]
    platform = Platform(
        db, services, workers=1, poll_interval_s=0.2, admission_cache_s=0, secrets=store
    )
    acme = Principal(account_id="acme", user_id="ada")
    await platform.accounts.ensure_account("acme")
    for name, value in (
        ("smtp-orders", SMTP_PASSWORD),
        ("twilio", TWILIO_TOKEN),
        ("hooks", HOOK_KEY),
    ):
        await store.put("acme", name, value)
    smtp_with = {k: v for k, v in email(smtp).items() if k not in ("to", "text")}
    sms_with = {"provider": sms(twilio)["provider"], "from": "+15017122661"}
    hook_with = {"url": receiver.url + "/hook", "signing_secret": {"secret": "hooks"}}
    caplog.set_level(logging.DEBUG)
    async with platform:
        for workflow, service, with_, job_input in (
            ("mail", "email-send", smtp_with, {"to": ["ada@example.net"], "text": "shipped"}),
            ("text", "sms-send", sms_with, {"to": "+15558675310", "body": "shipped"}),
            ("hook", "webhook-send", hook_with, {"json": {"order": "SO-1042"}}),
        ):
            await platform.jobs.apply(one_step(workflow, service, with_), acme)
            job = await platform.jobs.create(acme, workflow, job_input)
            done = await platform.jobs.wait(acme, job.id, 30)
            assert done.status == "succeeded", done.error
    [mailed] = smtp.recorder.received
    assert mailed.message["Subject"] == "Your order SO-1042"
    assert len(twilio.sent) == 1
    [delivered] = receiver.deliveries
    assert delivered["signed"]
    assert delivered["body"] == b'{"order":"SO-1042"}'
    stored = await everything_stored(db)
    for value in (SMTP_PASSWORD, TWILIO_TOKEN, HOOK_KEY):
        assert value.encode() not in stored
    no_secret_in(ours(caplog))
