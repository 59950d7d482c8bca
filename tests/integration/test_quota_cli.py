"""``fluxo quota`` as a user runs it: on the local database, and against a running server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support.fluxo_process import fluxo_up, free_port, run_fluxo

fluxo = run_fluxo


def test_quotas_are_set_listed_and_deleted_on_the_local_database(tmp_path: Path) -> None:
    made = fluxo(
        "quota", "set", "daily-calls", "--kind", "calls", "--limit", "1000", "--period", "day",
        home=tmp_path,
    )  # fmt: skip
    assert (made.returncode, made.stdout) == (0, "quota/daily-calls created\n"), made.stderr
    budget = fluxo(
        "quota", "set", "budget", "--kind", "spend", "--limit", "50.00", "--period", "month",
        "--service", "http", home=tmp_path,
    )  # fmt: skip
    assert budget.returncode == 0, budget.stderr
    listed = fluxo("quota", "list", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SCOPE", "LIMIT", "PERIOD", "USED", "NOW"]
    assert lines[1].split()[:6] == ["budget", "spend", "service:http", "50", "EUR", "month"]
    assert lines[2].split()[:6] == ["daily-calls", "calls", "account", "1000", "day", "0"]
    as_json = json.loads(fluxo("quota", "list", "-o", "json", home=tmp_path).stdout)
    assert [q["name"] for q in as_json] == ["budget", "daily-calls"]
    gone = fluxo("quota", "delete", "budget", home=tmp_path)
    assert gone.stdout == "quota/budget deleted\n"
    again = fluxo("quota", "delete", "budget", home=tmp_path)
    assert again.returncode == 1
    assert "no quota 'budget'" in again.stderr


def test_a_bad_quota_option_is_named(tmp_path: Path) -> None:
    bad = fluxo("quota", "set", "q", "--kind", "calls", "--limit", "10", home=tmp_path)
    assert bad.returncode == 1
    assert "--period: day or month (UTC)" in bad.stderr


def test_quotas_and_their_events_from_a_running_server(tmp_path: Path) -> None:
    port = free_port()
    with fluxo_up(home=tmp_path, FLUXO_PORT=str(port)):
        url = f"http://127.0.0.1:{port}"
        token = (tmp_path / "admin.token").read_text().strip()
        other = tmp_path / "other"  # the CLI's own home: empty, so the answer is the server's
        env = {"FLUXO_URL": url, "FLUXO_TOKEN": token}
        made = fluxo(
            "quota", "set", "two", "--kind", "calls", "--limit", "2", "--period", "month",
            home=other, **env,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        codes = []
        for n in range(3):
            called = httpx.post(
                f"{url}/v1/services/noop/calls",
                json={"payload": {"n": n}},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            codes.append(called.status_code)
        assert codes == [200, 200, 403], codes
        events = fluxo("quota", "events", "-o", "json", home=other, **env)
        assert events.returncode == 0, events.stderr
        assert [(e["quota"], e["threshold"]) for e in json.loads(events.stdout)] == [
            ("two", 100),
            ("two", 80),
        ]
        table = fluxo("quota", "events", home=other, **env)
        assert "100%" in table.stdout
