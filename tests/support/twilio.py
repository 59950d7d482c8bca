"""A Twilio-shaped fake of the Programmable Messaging API, for the ``sms-send`` tests.

Built from Twilio's published request rules (test code only): ``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded (``To``, ``From`` or
``MessagingServiceSid``, ``Body`` and/or ``MediaUrl``), HTTP basic auth with the account SID (or
an API key SID) and its secret; a created message is ``201`` with a JSON resource whose ``sid``
is ``SM`` and 32 hex digits and whose ``status`` is ``queued``; an error is the error resource
``{"code", "message", "more_info", "status"}`` (20003 authentication, 21211 invalid To, 21602
no body, 21603 no From, 21604 no To). Twilio's documented magic number +15005550001 is an invalid
To. A request that repeats an ``I-Twilio-Idempotency-Token`` gets the message it created the
first time, and no second one is sent.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import BasicAuth, web

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
INVALID_TO = "+15005550001"
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass
class FakeTwilio:
    auth_token: str
    url: str = ""
    sent: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    by_token: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


def make_app(fake: FakeTwilio) -> web.Application:
    async def create(request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        form = await request.post()
        fake.requests.append({"headers": dict(request.headers), "form": dict(form), "account": sid})
        if fake.fail_next:
            return _error(fake.fail_next.pop(0), 20500, "An internal server error has occurred")
        try:
            auth = BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            auth = None
        if auth is None or auth.login != sid or auth.password != fake.auth_token:
            return _error(401, 20003, "Authenticate")
        if request.content_type != "application/x-www-form-urlencoded":
            return _error(400, 20001, "Content-Type must be application/x-www-form-urlencoded")
        to = str(form.get("To", ""))
        sender = form.get("From")
        service = form.get("MessagingServiceSid")
        body = form.get("Body")
        media = form.getall("MediaUrl", [])
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not _E164.match(to) or to == INVALID_TO:
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if sender is None and service is None:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body and not media:
            return _error(400, 21602, "Message body is required.")
        token = request.headers.get("I-Twilio-Idempotency-Token")
        if token is not None and token in fake.by_token:
            return web.json_response(fake.by_token[token], status=201)
        message_sid = "SM" + secrets.token_hex(16)
        resource = {
            "sid": message_sid,
            "account_sid": sid,
            "to": to,
            "from": sender,
            "messaging_service_sid": service,
            "body": body,
            "status": "queued",
            "num_segments": "1",
            "num_media": str(len(media)),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": formatdate(usegmt=True),
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json",
        }
        fake.sent.append(resource)
        if token is not None:
            fake.by_token[token] = resource
        return web.json_response(resource, status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", create)
    return app


async def serve_twilio(auth_token: str) -> AsyncIterator[FakeTwilio]:
    """Serve the fake on loopback until the generator is closed (a fixture's body)."""
    fake = FakeTwilio(auth_token)
    runner = web.AppRunner(make_app(fake))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()
