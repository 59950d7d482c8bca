"""Masking credentials in shown packets and redacting them from log text."""

from __future__ import annotations

import logging

import pytest

from fluxo_core.redaction import (
    MASK,
    install_log_redaction,
    is_credential_key,
    mask_credentials,
    redact_text,
)


@pytest.mark.parametrize(
    "key",
    [
        "Authorization",
        "proxy-authorization",
        "Cookie",
        "X-Api-Key",
        "api_key",
        "apiKey",
        "password",
        "token",
        "access_token",
        "client_secret",
        "X-Auth-Token",
        "secret",
    ],
)
def test_credential_keys_are_recognised_in_any_spelling(key: str) -> None:
    assert is_credential_key(key)


@pytest.mark.parametrize("key", ["tokens", "max_tokens", "keyword", "monkey", "author", "name"])
def test_ordinary_keys_are_not_credentials(key: str) -> None:
    assert not is_credential_key(key)


def test_mask_replaces_credential_values_at_any_depth_and_keeps_references() -> None:
    packet = {
        "url": "https://api.example.com",
        "headers": {
            "Authorization": "Bearer sk_live_abc",
            "X-Api-Key": {"secret": "crm", "prefix": ""},
            "Accept": "application/json",
        },
        "items": [{"password": 1234, "user": "ada"}, {"token": None}],
        "tokens": 17,
    }
    masked = mask_credentials(packet)
    assert masked == {
        "url": "https://api.example.com",
        "headers": {
            "Authorization": MASK,
            "X-Api-Key": {"secret": "crm", "prefix": ""},  # a name, not a value: shown
            "Accept": "application/json",
        },
        "items": [{"password": MASK, "user": "ada"}, {"token": None}],
        "tokens": 17,
    }
    assert packet["headers"]["Authorization"] == "Bearer sk_live_abc"  # the input is untouched


def test_mask_returns_packets_without_credentials_as_they_are() -> None:
    packet = {"order": {"id": 1, "lines": [{"sku": "A"}]}}
    assert mask_credentials(packet) is packet


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("  b'Authorization: Bearer fxo_abcdefghij\\x01zz'", "fxo_abcdefghij"),
        ("{'Authorization': 'Basic dXNlcjpwYXNzd29yZA==', 'Host': 'x'}", "dXNlcjpwYXNzd29yZA"),
        ('{"X-Api-Key": "sk_live_12345", "a": 1}', "sk_live_12345"),
        ("<CIMultiDictProxy('Cookie': 'sid=abc123; theme=dark')>", "abc123"),
        ("GET https://maps.example/geo?q=x&api_key=AIzaSyXYZ&page=2", "AIzaSyXYZ"),
        ("client said Bearer eyJhbGciOiJIUzI1NiJ9.e30.x and left", "eyJhbGciOiJIUzI1NiJ9"),
        ("token fxo_Q2hhbmdlTWU at the end", "fxo_Q2hhbmdlTWU"),
    ],
)
def test_redact_text_removes_credentials(text: str, leak: str) -> None:
    redacted = redact_text(text)
    assert leak not in redacted
    assert MASK in redacted


def test_redact_text_leaves_ordinary_text() -> None:
    text = "Invalid header token:\n\n  b'Bad Header'\nmax_tokens=7 page=2"
    assert redact_text(text) == text


def test_installed_redaction_covers_messages_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent: one wrapper, not two
    log = logging.getLogger("tests.redaction")
    token = "fxo_" + "s3cr3tT0kenValue"
    with caplog.at_level(logging.INFO, logger="tests.redaction"):
        log.info("request headers: %s", {"Authorization": f"Bearer {token}"})
        try:
            raise ValueError(f"bad header line b'Authorization: Bearer {token}\\x01'")
        except ValueError:
            log.exception("Error handling request")
    assert "Error handling request" in caplog.text
    assert "ValueError" in caplog.text  # the traceback is still there
    assert token not in caplog.text
    assert "s3cr3tT0kenValue" not in caplog.text
