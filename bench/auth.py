"""What authenticating a bearer token costs on the API's hot path: requests/s of ``GET /v1/me``
(auth middleware, role check, one small JSON answer) with one token used over and over, and the
bare :meth:`AccountStore.authenticate` calls/s under it. The token's last use is written at most
once a minute, so after the first request both are reads only.

    .venv/bin/python -m bench.auth [--requests 3000] [--pg-url URL]

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.storage import Database


async def _measure(url: str, requests: int) -> tuple[float, float]:
    db = Database(url)
    await db.migrate()
    platform = Platform(db, [], workers=1, poll_interval_s=1.0)
    await platform.accounts.ensure_account("acme")
    token = await platform.accounts.issue_token("acme", "ada", "bench")
    try:
        started = time.perf_counter()
        for _ in range(requests):
            await platform.accounts.authenticate(token)
        store_per_s = requests / (time.perf_counter() - started)
        async with (
            platform,
            TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
        ):
            headers = {"Authorization": f"Bearer {token}"}
            started = time.perf_counter()
            for _ in range(requests):
                response = await http.get("/v1/me", headers=headers)
                assert response.status == 200
                await response.read()
            http_per_s = requests / (time.perf_counter() - started)
    finally:
        await db.close()
    return store_per_s, http_per_s


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--pg-url")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        store, http = await _measure(url, args.requests)
    figures["sqlite_authenticate_per_s"] = round(store)
    figures["sqlite_me_requests_per_s"] = round(http)
    if args.pg_url:
        store, http = await _measure(args.pg_url, args.requests)
        figures["pg_authenticate_per_s"] = round(store)
        figures["pg_me_requests_per_s"] = round(http)
    print(json.dumps(figures), file=sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
