"""SMS triggers on SQLite and PostgreSQL: a Twilio-signed or HMAC-signed message makes one job
that completes on the step engine; the same message three times makes one job; unsigned, badly
signed, stale, malformed and oversized requests get clear refusals and create nothing.

The Twilio requests are signed here from Twilio's published rule (Base64 of HMAC-SHA1 with the
auth token over the URL and the sorted parameters), not with the product's function, and that
function is checked against Twilio's published example.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo.control.triggers.sms import twilio_signature
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.secrets import SecretKey, SecretStore
from tests.support import services as svc

pytestmark = pytest.mark.timeout(90)

ACME = Principal(account_id="acme", user_id="ada")
GLOBEX = Principal(account_id="globex", user_id="gus")
KEY = SecretKey.parse("a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=", "test key")
AUTH_TOKEN = "twilio-auth-4b1d9e"
JSON_SECRET = "sms-hmac-77c2"
SID = "SM" + "0123456789abcdef" * 2
PUBLIC = "https://fluxo.example.com/hooks/acme/proxied/sms"

ECHO = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "read-sms"},
    "spec": {"engine": "step", "steps": [{"id": "read", "kind": "service", "service": "echo"}]},
}


def sms_trigger(name: str, **sms: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"workflow": "read-sms", "type": "sms", "sms": sms},
    }


def twilio_signed(token: str, url: str, form: list[tuple[str, str]]) -> str:
    """Twilio's rule, written out: the URL, then each parameter's name and value by name."""
    data = url + "".join(k + v for k, v in sorted(form))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def twilio_form(sid: str = SID, body: str = "STOP order 42") -> list[tuple[str, str]]:
    return [
        ("MessageSid", sid),
        ("AccountSid", "AC" + "f" * 32),
        ("From", "+14155550100"),
        ("To", "+14155550199"),
        ("Body", body),
        ("NumMedia", "1"),
        ("MediaUrl0", "https://api.twilio.com/media/ME1"),
        ("MediaContentType0", "image/jpeg"),
    ]


def json_signed(body: bytes, stamp: int, secret: str = JSON_SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Fluxo-Timestamp": str(stamp),
        "X-Fluxo-Signature": f"sha256={mac}",
    }


@pytest.fixture
async def platform(db: Database) -> AsyncIterator[Platform]:
    secrets = SecretStore(db, KEY)
    running = Platform(
        db,
        svc.SERVICES,
        workers=2,
        poll_interval_s=0.1,
        admission_cache_s=0,
        secrets=secrets,
        run_triggers=False,
    )
    for account in ("acme", "globex"):
        await running.accounts.ensure_account(account)
    async with running:
        await running.jobs.apply(ECHO, ACME)
        await running.jobs.apply(ECHO, GLOBEX)
        await secrets.put("acme", "twilio-token", AUTH_TOKEN)
        await secrets.put("acme", "sms-hmac", JSON_SECRET)
        await secrets.put("globex", "twilio-token", "globex-token-0a")
        for who, name, sms in (
            (ACME, "texts", {"provider": "twilio", "secret": "twilio-token"}),
            (ACME, "proxied", {"secret": "twilio-token", "publicUrl": PUBLIC}),
            (ACME, "gateway", {"provider": "json", "secret": "sms-hmac"}),
            (GLOBEX, "texts", {"provider": "twilio", "secret": "twilio-token"}),
        ):
            applied = await running.resources.apply(who, sms_trigger(name, **sms))
            condition = applied.document["status"]["conditions"][0]
            assert (condition["status"], condition["reason"]) == ("True", "Listening")
        yield running


@pytest.fixture
async def http(platform: Platform) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as client:
        yield client


async def trigger_jobs(platform: Platform, who: Principal = ACME) -> list[Any]:
    page = await platform.jobs.list(who)
    return [j for j in page.items if j.user_id.startswith("trigger:")]


async def post_twilio(
    http: TestClient[Any, Any],
    path: str,
    form: list[tuple[str, str]],
    *,
    token: str = AUTH_TOKEN,
    signed_url: str | None = None,
) -> Any:
    url = signed_url or str(http.make_url(path))
    return await http.post(
        path,
        data=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signed(token, url, form),
        },
    )


def test_the_signature_is_twilios_published_example() -> None:
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


async def test_a_twilio_sms_makes_a_job_that_completes_and_gets_empty_twiml(
    platform: Platform, http: TestClient[Any, Any]
) -> None:
    response = await post_twilio(http, "/hooks/acme/texts/sms", twilio_form())
    assert response.status == 200
    assert response.content_type == "text/xml"
    assert (await response.text()).endswith("<Response/>")
    [job] = await trigger_jobs(platform)
    done = await platform.jobs.wait(ACME, job.id, 20)
    assert done.status == "succeeded"
    assert done.idempotency_key == f"trigger:texts:sms:{SID}"
    result = done.result
    assert (result["from"], result["to"], result["text"]) == (
        "+14155550100",
        "+14155550199",
        "STOP order 42",
    )
    assert result["media"] == [
        {"url": "https://api.twilio.com/media/ME1", "contentType": "image/jpeg"}
    ]


async def test_the_same_sms_three_times_makes_one_job(
    platform: Platform, http: TestClient[Any, Any]
) -> None:
    for _ in range(3):
        response = await post_twilio(http, "/hooks/acme/texts/sms", twilio_form())
        assert response.status == 200
    stamp = int(time.time())
    body = json.dumps({"id": "msg-1", "from": "+33600000001", "text": "hi"}).encode()
    answers = []
    for _ in range(3):
        response = await http.post(
            "/hooks/acme/gateway/sms", data=body, headers=json_signed(body, stamp)
        )
        assert response.status == 202
        answers.append(await response.json())
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert len({a["job_id"] for a in answers}) == 1
    jobs = await trigger_jobs(platform)
    assert len(jobs) == 2
    for job in jobs:
        assert (await platform.jobs.wait(ACME, job.id, 20)).status == "succeeded"


async def test_the_public_url_is_what_twilio_signed(
    platform: Platform, http: TestClient[Any, Any]
) -> None:
    local = await post_twilio(http, "/hooks/acme/proxied/sms", twilio_form())
    assert local.status == 403  # signed over the URL Fluxo sees, not the one Twilio called
    proxied = await post_twilio(http, "/hooks/acme/proxied/sms", twilio_form(), signed_url=PUBLIC)
    assert proxied.status == 200
    assert len(await trigger_jobs(platform)) == 1


async def test_unsigned_or_badly_signed_sms_is_403_and_creates_nothing(
    platform: Platform, http: TestClient[Any, Any]
) -> None:
    form = twilio_form()
    unsigned = await http.post(
        "/hooks/acme/texts/sms",
        data=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    wrong_token = await post_twilio(http, "/hooks/acme/texts/sms", form, token="not-the-token")
    tampered_url = str(http.make_url("/hooks/acme/texts/sms"))
    tampered = await http.post(
        "/hooks/acme/texts/sms",
        data=urlencode([*form[:-1], ("Body", "changed")]),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signed(AUTH_TOKEN, tampered_url, form),
        },
    )
    # Another account's trigger of the same name, signed with this account's token; and one
    # that does not exist: the same refusal.
    other = await post_twilio(http, "/hooks/globex/texts/sms", form)
    missing = await post_twilio(http, "/hooks/acme/nothing/sms", form)
    for response in (unsigned, wrong_token, tampered, other, missing):
        assert response.status == 403, await response.text()
        body = await response.json()
        assert "not signed for this trigger" in body["error"]["message"]
        assert AUTH_TOKEN not in json.dumps(body)
    stamp = int(time.time())
    body_bytes = json.dumps({"id": "m-2", "text": "x"}).encode()
    stale = await http.post(
        "/hooks/acme/gateway/sms", data=body_bytes, headers=json_signed(body_bytes, stamp - 900)
    )
    bad = await http.post(
        "/hooks/acme/gateway/sms",
        data=body_bytes,
        headers=json_signed(body_bytes, stamp, secret="wrong"),
    )
    webhook_type = await http.post(  # an SMS trigger is not reachable as a plain webhook
        "/hooks/acme/gateway", data=body_bytes, headers=json_signed(body_bytes, stamp)
    )
    assert (stale.status, bad.status, webhook_type.status) == (403, 403, 401)
    assert await trigger_jobs(platform) == []
    assert await trigger_jobs(platform, GLOBEX) == []


async def test_malformed_and_oversized_sms_is_refused_clearly(
    platform: Platform, http: TestClient[Any, Any]
) -> None:
    stamp = int(time.time())
    no_id = json.dumps({"text": "x"}).encode()
    response = await http.post(
        "/hooks/acme/gateway/sms", data=no_id, headers=json_signed(no_id, stamp)
    )
    assert response.status == 422
    assert "body.id" in (await response.text())
    broken = b'{"id": "m-3", '
    response = await http.post(
        "/hooks/acme/gateway/sms", data=broken, headers=json_signed(broken, stamp)
    )
    assert response.status in (400, 422)
    no_sid = [f for f in twilio_form() if f[0] != "MessageSid"]
    response = await post_twilio(http, "/hooks/acme/texts/sms", no_sid)
    assert response.status == 422
    assert "MessageSid" in (await response.text())
    huge = json.dumps({"id": "m-4", "text": "x" * 70_000}).encode()
    response = await http.post(
        "/hooks/acme/gateway/sms", data=huge, headers=json_signed(huge, stamp)
    )
    assert response.status == 400
    assert "over 65536" in (await response.text())
    assert await trigger_jobs(platform) == []


async def test_a_held_sms_trigger_answers_423_and_creates_nothing(
    platform: Platform, http: TestClient[Any, Any]
) -> None:
    await platform.triggers.pause(ACME, "texts")
    response = await post_twilio(http, "/hooks/acme/texts/sms", twilio_form())
    assert response.status == 423
    assert await trigger_jobs(platform) == []
    await platform.triggers.resume(ACME, "texts")
    response = await post_twilio(http, "/hooks/acme/texts/sms", twilio_form())
    assert response.status == 200
    assert len(await trigger_jobs(platform)) == 1
