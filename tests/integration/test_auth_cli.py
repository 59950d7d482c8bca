"""``fluxo users`` and ``fluxo token``: the operator's commands on the local database, then the
same users and tokens used against ``fluxo up`` over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.fluxo_process import fluxo_up, free_port, run_fluxo

# Each `fluxo` process pays its imports (seconds on a busy machine): a generous bound.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PASSWORD = "a-long-enough-password"


def ok(*args: str, home: Path, stdin: str | None = None) -> str:
    result = run_fluxo(*args, home=home, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_users_and_tokens_from_the_cli_work_over_http(tmp_path: Path) -> None:
    home = tmp_path
    add = ("users", "add", "--account", "acme")
    ok(*add, "ada", "--role", "account-admin", "--password", home=home, stdin=PASSWORD + "\n")
    ok(*add, "vic", "--role", "viewer", home=home)
    listed = json.loads(ok("users", "list", "--account", "acme", "--json", home=home))
    assert [(u["user_id"], u["role"], u["has_password"]) for u in listed] == [
        ("ada", "account-admin", True),
        ("vic", "viewer", False),
    ]
    again = run_fluxo(*add, "vic", "--role", "member", home=home)
    assert again.returncode != 0
    assert "already exists" in again.stderr
    short = run_fluxo("users", "passwd", "--account", "acme", "ada", home=home, stdin="short\n")
    assert short.returncode != 0
    assert "10 to" in short.stderr

    # The old form still creates a token; the new one takes the user's role and an expiry.
    old = ok("token", "--account", "acme", "--user", "ada", home=home).strip()
    viewer = ok(
        "token",
        "create",
        "--account",
        "acme",
        "--user",
        "vic",
        "--name",
        "dash",
        "--expires-in",
        "30d",
        home=home,
    ).strip()
    tokens = json.loads(ok("token", "list", "--account", "acme", "--json", home=home))
    by_user = {t["user_id"]: t for t in tokens}
    assert (by_user["vic"]["role"], by_user["vic"]["name"]) == ("viewer", "dash")
    assert by_user["vic"]["expires_at"] is not None
    table = ok("token", "list", "--account", "acme", home=home)
    assert "LAST USED" in table
    assert old not in table
    assert viewer not in table

    port = free_port()
    with fluxo_up(home=home, FLUXO_PORT=str(port)) as up:
        assert "admin token" in up.output, up.output
        url = f"http://127.0.0.1:{port}"
        admin = (home / "admin.token").read_text().strip()

        def me(token: str) -> httpx.Response:
            return httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {token}"})

        assert me(admin).json()["role"] == "platform-admin"
        assert me(old).json() | {"token_id": None} == {
            "account_id": "acme",
            "user_id": "ada",
            "role": "account-admin",
            "kind": "api",
            "token_id": None,
        }
        write = httpx.post(
            f"{url}/v1/tokens",
            json={"name": "x"},
            headers={"Authorization": f"Bearer {viewer}"},
        )
        assert write.status_code == 403
        assert "viewer" in write.json()["error"]["message"]
        signed = httpx.post(
            f"{url}/v1/sessions", json={"account": "acme", "user": "ada", "password": PASSWORD}
        )
        assert signed.status_code == 201, signed.text
        assert me(signed.json()["token"]).json()["kind"] == "session"

        # With FLUXO_URL the sub-commands ask the server, as FLUXO_TOKEN (ada, account admin).
        remote = {"FLUXO_URL": url, "FLUXO_TOKEN": old}

        def over_http(*args: str) -> str:
            result = run_fluxo(*args, home=home, **remote)
            assert result.returncode == 0, result.stderr
            return result.stdout

        over_http("users", "add", "bob", "--role", "member")
        bob = over_http("token", "create", "--user", "bob", "--name", "bob-ci").strip()
        assert me(bob).json()["role"] == "member"
        remote_list = json.loads(over_http("token", "list", "--json"))
        assert {"bob-ci", "dash"} <= {t["name"] for t in remote_list}
        assert "bob" in over_http("users", "list")
        elsewhere = run_fluxo("users", "list", "--account", "globex", home=home, **remote)
        assert elsewhere.returncode != 0
        assert "FLUXO_TOKEN" in elsewhere.stderr
        as_viewer = run_fluxo(
            "users", "remove", "bob", home=home, FLUXO_URL=url, FLUXO_TOKEN=viewer
        )
        assert as_viewer.returncode != 0
        assert "viewer" in as_viewer.stderr

        # Revoked from the CLI while the server runs: 401 at once.
        ok("token", "revoke", "--account", "acme", by_user["vic"]["id"], home=home)
        refused = me(viewer)
        assert refused.status_code == 401
        assert "revoked" in refused.json()["error"]["message"]
        ok("users", "remove", "--account", "acme", "ada", home=home)
        assert me(old).status_code == 401
        assert me(signed.json()["token"]).status_code == 401
