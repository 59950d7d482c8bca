"""The http service and credentials: secret references, scrubbed answers, and redirects to
another origin, against real local HTTP servers (two ports, two origins)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from fluxo_core.errors import NotFoundError, ServiceError, ValidationError
from fluxo_core.ir import Packet
from services import BuiltinConfig, HttpService

pytestmark = pytest.mark.timeout(30)

ACCOUNT = "acme"
STRIPE = "sk_live_51HxQ9dLkT0pSecretValue"
CRM = "crm/key+with/slashes=="


class Secrets:
    """A secret source holding fixed values for one account (the real store is tested apart)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: list[tuple[str, list[str]]] = []

    async def reveal(self, account_id: str, names: Iterable[str]) -> dict[str, str]:
        wanted = sorted(names)
        self.asked.append((account_id, wanted))
        missing = [n for n in wanted if account_id != ACCOUNT or n not in self.values]
        if missing:
            raise NotFoundError(f"secret {missing[0]!r} is not set in account {account_id!r}")
        return {n: self.values[n] for n in wanted}


@dataclass
class Origin:
    """One local server: it records the headers of every request it gets."""

    base: str
    port: int
    seen: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


async def _origin() -> tuple[web.AppRunner, Origin]:
    app = web.Application()
    runner = web.AppRunner(app)
    state: dict[str, Origin] = {}

    async def capture(request: web.Request) -> web.Response:
        headers = dict(request.headers)
        state["o"].seen.append(headers)
        # Echoes what it got, in its body and in a header, as debugging endpoints do.
        auth = headers.get("Authorization", "")
        return web.json_response(
            {"headers": headers, "note": f"you sent {auth}", "escaped": auth.replace("/", "\\/")},
            headers={"X-Echo": auth},
        )

    async def echo_text(request: web.Request) -> web.Response:
        state["o"].seen.append(dict(request.headers))
        return web.Response(text=f"token was {request.headers.get('Authorization', '')}")

    async def fail(request: web.Request) -> web.Response:
        state["o"].seen.append(dict(request.headers))
        return web.Response(status=403, text=f"bad {request.headers.get('X-Api-Key', '')}")

    async def hop(request: web.Request) -> web.Response:
        state["o"].seen.append(dict(request.headers))
        raise web.HTTPFound(request.query["to"])

    app.router.add_get("/capture", capture)
    app.router.add_get("/text", echo_text)
    app.router.add_get("/fail", fail)
    app.router.add_get("/hop", hop)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state["o"] = Origin(base=f"http://127.0.0.1:{port}", port=port)
    return runner, state["o"]


@pytest.fixture
async def origins() -> AsyncIterator[tuple[Origin, Origin]]:
    first, a = await _origin()
    second, b = await _origin()
    try:
        yield a, b
    finally:
        await first.cleanup()
        await second.cleanup()


async def _loopback_and_other(host: str, port: int) -> Sequence[str]:
    if host == "other.test":
        return ["127.0.0.1"]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def http(secrets: Secrets | None = None) -> HttpService:
    return HttpService(
        BuiltinConfig(http_allow=("127.0.0.1", "other.test")),
        resolver=_loopback_and_other,
        secrets=secrets,
    )


async def send(svc: HttpService, payload: Any, account: str = ACCOUNT) -> Any:
    """Through the service's handler, with the packet the worker would give it."""
    packet = Packet.model_validate(
        {"actor": {"user": {"id": "ada"}, "account": {"id": account}}, "payload": payload}
    )
    return await svc.service.handler(packet)


CREDENTIALS = {
    "Authorization": "Bearer literal-token-123",
    "Proxy-Authorization": "Basic cHJveHk6cGFzcw==",
    "Cookie": "session=abc123def",
    "X-Api-Key": "literal-api-key-456",
    "PRIVATE-TOKEN": "glpat-789xyz",
    "Ocp-Apim-Subscription-Key": "sub-key-0000",
}
CREDENTIAL_NAMES = {name.lower() for name in CREDENTIALS} | {"x-signed"}


def _names(headers: dict[str, str]) -> set[str]:
    return {name.lower() for name in headers}


@pytest.mark.parametrize("target", ["port", "host"])
async def test_a_redirect_to_another_origin_drops_every_credential_header(
    origins: tuple[Origin, Origin], target: str
) -> None:
    a, b = origins
    other = b.url("/capture") if target == "port" else a.url("/capture", host="other.test")
    svc = http(Secrets({"signing": "sig-value-abc"}))
    result = await send(
        svc,
        {
            "url": a.url("/hop?to=" + other),
            "headers": {**CREDENTIALS, "X-Signed": {"secret": "signing"}, "X-Trace": "t-1"},
        },
    )
    assert result["status"] == 200
    first, last = a.seen[0], (b.seen if target == "port" else a.seen)[-1]
    assert _names(first) >= CREDENTIAL_NAMES  # the origin they were meant for got them all
    assert _names(last) & CREDENTIAL_NAMES == set()
    assert last["X-Trace"] == "t-1"  # other headers still go


async def test_a_same_origin_redirect_keeps_the_credentials(
    origins: tuple[Origin, Origin],
) -> None:
    a, _ = origins
    await send(http(), {"url": a.url("/hop?to=/capture"), "headers": CREDENTIALS})
    assert {"authorization", "x-api-key"} <= _names(a.seen[-1])


async def test_credentials_dropped_on_the_way_out_do_not_come_back(
    origins: tuple[Origin, Origin],
) -> None:
    a, b = origins
    back = a.url("/capture")
    await send(
        http(), {"url": a.url("/hop?to=" + b.url("/hop?to=" + back)), "headers": CREDENTIALS}
    )
    assert len(a.seen) == 2
    assert _names(a.seen[-1]) & CREDENTIAL_NAMES == set()


async def test_a_secret_reference_is_resolved_for_the_calls_account_and_scrubbed_from_the_answer(
    origins: tuple[Origin, Origin],
) -> None:
    a, _ = origins
    secrets = Secrets({"stripe": STRIPE, "crm": CRM})
    result = await send(
        http(secrets),
        {
            "url": a.url("/capture"),
            "headers": {
                "Authorization": {"secret": "stripe", "prefix": "Bearer "},
                "X-Api-Key": {"secret": "crm"},
            },
        },
    )
    assert a.seen[-1]["Authorization"] == f"Bearer {STRIPE}"
    assert a.seen[-1]["X-Api-Key"] == CRM
    assert secrets.asked == [(ACCOUNT, ["crm", "stripe"])]
    text = repr(result)
    assert STRIPE not in text
    assert CRM not in text
    assert CRM.replace("/", "\\/") not in text
    assert result["json"]["note"] == "you sent [redacted]"
    assert result["headers"]["x-echo"] == "[redacted]"


async def test_a_text_answer_and_an_error_body_are_scrubbed_too(
    origins: tuple[Origin, Origin],
) -> None:
    a, _ = origins
    svc = http(Secrets({"stripe": STRIPE, "crm": CRM}))
    text = await send(
        svc, {"url": a.url("/text"), "headers": {"Authorization": {"secret": "stripe"}}}
    )
    assert text["text"] == "token was [redacted]"
    with pytest.raises(ServiceError) as info:
        await send(
            svc,
            {
                "url": a.url("/fail"),
                "headers": {"X-Api-Key": {"secret": "crm"}},
                "raise_for_status": True,
            },
        )
    assert CRM not in repr(info.value.to_dict())
    assert info.value.context["body"] == "bad [redacted]"


async def test_a_missing_secret_fails_the_call_for_good_naming_it(
    origins: tuple[Origin, Origin],
) -> None:
    a, _ = origins
    svc = http(Secrets({"stripe": STRIPE}))
    with pytest.raises(ServiceError) as info:
        await send(
            svc,
            {"url": a.url("/capture"), "headers": {"Authorization": {"secret": "stripe"}}},
            account="globex",  # another account's secret of the same name does not resolve
        )
    assert info.value.retryable is False
    assert "'stripe'" in info.value.message
    assert a.seen == []  # nothing was sent


async def test_a_reference_without_a_secret_store_is_refused() -> None:
    with pytest.raises(ServiceError) as info:
        await send(
            http(None),
            {"url": "http://127.0.0.1:9/", "headers": {"Authorization": {"secret": "x"}}},
        )
    assert info.value.retryable is False
    assert "secret store" in info.value.message


async def test_a_secret_holding_a_line_break_is_not_sent() -> None:
    with pytest.raises(ServiceError) as info:
        await send(
            http(Secrets({"multi": "line1\nX-Injected: yes"})),
            {"url": "http://127.0.0.1:9/", "headers": {"X-Api-Key": {"secret": "multi"}}},
        )
    assert "line break" in info.value.message
    assert "X-Injected" not in info.value.message


@pytest.mark.parametrize(
    ("value", "location"),
    [
        ({"secret": 5}, "payload.headers.Authorization"),
        ({"secret": "stripe", "value": "sk"}, "payload.headers.Authorization"),
        ({"secret": "no spaces"}, "payload.headers.Authorization.secret"),
        ({"secret": "stripe", "prefix": "Bearer\r\n"}, "payload.headers.Authorization.prefix"),
    ],
)
async def test_malformed_references_are_refused_with_their_location(
    value: dict[str, Any], location: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await send(
            http(Secrets({})), {"url": "http://127.0.0.1:9/", "headers": {"Authorization": value}}
        )
    assert location in [loc for loc, _ in info.value.problems]
