"""JSON log lines: one object per line with the ids bound where work is handled, and never a
secret (the redaction of every record holds for JSON lines too)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError
from fluxo_core.logs import JsonFormatter, bind_ids, bound_ids, reset_ids
from fluxo_core.redaction import hidden_from_logs, install_log_redaction


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records are written as JSON lines into a buffer."""
    install_log_redaction()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log, out
    finally:
        log.removeHandler(handler)
        log.propagate = True


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_is_one_object_with_time_level_logger_message_and_the_bound_ids(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = lines
    log.info("outside")
    token = bind_ids(
        job_id="j-1", call_id="c-1", trace_id="ab" * 16, span_id="cd" * 8, account="acme"
    )
    try:
        log.warning("inside %s", "a call")
        inner = bind_ids(job_id="j-2", trace_id="ef" * 16)
        log.info("a job step")
        reset_ids(inner)
        log.info("the call again")
    finally:
        reset_ids(token)
    log.info("outside again")
    first, inside, step, again, last = parsed(out)
    assert set(first) == {"time", "level", "logger", "message"}
    assert (first["level"], first["logger"], first["message"]) == ("INFO", "tests.logs", "outside")
    assert first["time"].endswith("+00:00")
    assert inside == {
        "time": inside["time"],
        "level": "WARNING",
        "logger": "tests.logs",
        "message": "inside a call",
        "job_id": "j-1",
        "call_id": "c-1",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "account": "acme",
    }
    # A binding replaces the one around it, and resetting it brings that one back.
    assert {k: step.get(k) for k in ("job_id", "call_id", "trace_id")} == {
        "job_id": "j-2",
        "call_id": None,
        "trace_id": "ef" * 16,
    }
    assert again["call_id"] == "c-1"
    assert "job_id" not in last
    assert bound_ids() == {}


async def test_concurrent_tasks_keep_their_own_ids(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = lines
    both = asyncio.Barrier(2)

    async def handle(call_id: str) -> None:
        token = bind_ids(call_id=call_id)
        try:
            await both.wait()  # both are bound before either logs
            log.info("handling %s", call_id)
        finally:
            reset_ids(token)

    await asyncio.gather(handle("c-1"), handle("c-2"))
    assert sorted((line["message"], line["call_id"]) for line in parsed(out)) == [
        ("handling c-1", "c-1"),
        ("handling c-2", "c-2"),
    ]


def test_a_secret_never_appears_in_a_json_line(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = lines
    token = "fxo_" + "s3cr3tT0kenValue"
    api_key = "sk-live-" + "9f8e7d6c5b4a3f2e1d0c"
    in_use = "hunter2-" + "correct-horse-battery"
    bound = bind_ids(call_id="c-1")
    try:
        log.info("request headers: %s", {"Authorization": f"Bearer {token}"})
        log.info("calling https://api.example.com/v1?api_key=%s&q=1", api_key)
        with hidden_from_logs([in_use]):
            log.warning("the provider echoed %s back", in_use)
        try:
            raise ValueError(f"bad header line b'X-Api-Key: {api_key}\\x01' and {token}")
        except ValueError:
            log.exception("Error handling request")
        log.info("stack here", stack_info=True)
    finally:
        reset_ids(bound)
    text = out.getvalue()
    for secret in (token, "s3cr3tT0kenValue", api_key, in_use):
        assert secret not in text
    records = parsed(out)  # every line is still one JSON object
    assert len(records) == 5
    assert records[2]["message"] == "the provider echoed *** back"
    assert "ValueError" in records[3]["exception"]  # the traceback is kept, redacted
    assert "stack" in records[4]
    assert {r["call_id"] for r in records} == {"c-1"}


def test_without_the_redacting_factory_the_traceback_is_still_written() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: kaput" in line["exception"]


@pytest.mark.parametrize(("raw", "expected"), [("", "text"), ("text", "text"), ("JSON", "json")])
def test_the_log_format_is_read_from_the_environment(
    tmp_path: Path, raw: str, expected: str
) -> None:
    env = {"FLUXO_HOME": str(tmp_path), "FLUXO_LOG_FORMAT": raw}
    assert FluxoConfig.from_env(env).log_format == expected


def test_an_unknown_log_format_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLUXO_LOG_FORMAT") as info:
        FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path), "FLUXO_LOG_FORMAT": "xml"})
    assert info.value.context["setting"] == "FLUXO_LOG_FORMAT"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
            "http://collector:4318/v1/traces",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c.example.com/otlp/traces"},
            "https://c.example.com/otlp/traces",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/v1/traces",
            },
            "http://b:4318/v1/traces",
        ),
        (
            {
                "FLUXO_OTLP_ENDPOINT": "http://f:4318",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
            },
            "http://f:4318/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
    ],
)
def test_the_otlp_endpoint_follows_the_standard_variables(
    tmp_path: Path, env: dict[str, str], expected: str | None
) -> None:
    config = FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path), **env})
    assert config.otlp_traces_endpoint == expected


def test_an_otlp_endpoint_that_is_not_a_url_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": "c:4318"})
