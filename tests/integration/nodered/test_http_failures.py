"""An http request node's network failures are worded as Node-RED words them.

Node-RED's http request node sends ``err.toString() + " : " + url`` and ``statusCode: err.code``
when its request fails in the network (``got``'s error; see
:mod:`nodered_semantics.http_request`). Here the same failures (a port nothing listens on, a
server that closes the connection without answering, one that resets it, one that answers too
late, a name that does not exist) are made twice: by ``got`` from the managed Node-RED's own
install (Node-RED's options: no retry, a ``request`` timeout), and by Fluxo's ``http`` service,
whose error :func:`~nodered_semantics.http_request.http_failure` words. The texts must be equal.
The differential test covers the whole node (catch and debug) for a refused connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fluxo_core.errors import ServiceError
from nodered_semantics.http_request import http_failure, http_service_request
from services import BuiltinConfig, HttpService
from tests.support.nodered import RunningNodeRed

pytestmark = pytest.mark.timeout(120)

TIMEOUT_MS = 700
# got as Node-RED 4's http request node calls it (21-httprequest.js: retry limit 0, a request
# timeout); prints [toString(), code] for each URL (argv: app dir, URLs, timeout).
GOT_SCRIPT = """
const { got } = await import(process.argv[1] + '/node_modules/got/dist/source/index.js');
const out = [];
for (const url of JSON.parse(process.argv[2])) {
  try {
    await got(url, { retry: { limit: 0 }, timeout: { request: Number(process.argv[3]) } });
    out.push(null);
  } catch (err) { out.push([err.toString(), err.code]); }
}
console.log(JSON.stringify(out));
"""


@pytest.fixture
async def misbehaving() -> AsyncIterator[dict[str, int]]:
    """Loopback servers that read the request, then close, reset, or never answer."""

    # Every connection is closed by the end of the test, the "late" ones included (the client
    # gives up first): a socket left to the garbage collector warns in whichever test runs then.
    open_writers: set[asyncio.StreamWriter] = set()

    async def serve(mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_writers.add(writer)
        try:
            await reader.read(4096)
            if mode == "reset":  # linger 0: close sends RST
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode == "late":
                await asyncio.sleep(3)
        finally:
            writer.close()
            open_writers.discard(writer)

    servers = {}
    for mode in ("closed", "reset", "late"):

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, m: str = mode) -> None:
            await serve(m, r, w)

        servers[mode] = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield {mode: server.sockets[0].getsockname()[1] for mode, server in servers.items()}
    for server in servers.values():
        server.close()
    for writer in list(open_writers):
        writer.close()
    for server in servers.values():
        await server.wait_closed()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def fluxo_side(url: str) -> dict[str, Any]:
    """What the step engine makes of the http service's failure for ``url``."""
    node = {"id": "rq", "type": "http request", "method": "GET", "url": url, "ret": "txt"}
    msg = {"payload": "", "requestTimeout": TIMEOUT_MS}
    service = HttpService(BuiltinConfig(http_allow=("127.0.0.1",)))
    with pytest.raises(ServiceError) as caught:
        await service.call(http_service_request(node, msg))
    failure = http_failure(node, msg, url, caught.value.context.get("network"))
    assert failure is not None, f"{url}: no Node-RED wording for {caught.value.to_dict()}"
    assert failure.sent is not None
    return failure.sent


async def test_network_failures_are_worded_as_node_red_words_them(
    nodered: RunningNodeRed, misbehaving: dict[str, int]
) -> None:
    urls = [
        f"http://127.0.0.1:{unused_port()}/hello",
        f"http://127.0.0.1:{misbehaving['closed']}/x",
        f"http://127.0.0.1:{misbehaving['reset']}/x",
        f"http://127.0.0.1:{misbehaving['late']}/x",
        "http://no-such-host.invalid/x",
    ]
    node = await asyncio.to_thread(
        subprocess.run,
        [
            "node",
            "--input-type=module",
            "-e",
            GOT_SCRIPT,
            str(nodered.managed.app_dir),
            json.dumps(urls),
            str(TIMEOUT_MS),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    expected = json.loads(node.stdout)
    for url, (text, code) in zip(urls, expected, strict=True):
        sent = await fluxo_side(url)
        assert (sent["payload"], sent["statusCode"]) == (f"{text} : {url}", code)
    # The cases above are the ones the wording knows: refused, closed, reset, timeout, not found.
    assert [code for _, code in expected] == [
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNRESET",
        "ETIMEDOUT",
        "ENOTFOUND",
    ]
