"""The pure rules of triggers: cron slots and catch-up, webhook signatures and payloads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fluxo.control.triggers.cron import GRACE_S, check_schedule, next_slot, plan
from fluxo.control.triggers.webhook import (
    check_timestamp,
    delivery_id,
    payload_of,
    sign,
    verify,
)
from fluxo_core.errors import (
    AuthError,
    DocumentTooComplexError,
    MalformedRequestError,
    ValidationError,
)
from fluxo_core.ir.documents import DocumentLimits


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_slots_follow_the_time_zone_across_daylight_saving() -> None:
    # Paris moves to summer time on 2027-03-28: nine in Paris is 08:00 UTC before, 07:00 after.
    before = next_slot("0 9 * * *", "Europe/Paris", at("2027-03-27T00:00:00"))
    after = next_slot("0 9 * * *", "Europe/Paris", at("2027-03-28T00:00:00"))
    assert before == at("2027-03-27T08:00:00")
    assert after == at("2027-03-28T07:00:00")


def test_a_bad_schedule_is_located() -> None:
    with pytest.raises(ValidationError) as caught:
        check_schedule("61 * * * *")
    assert caught.value.problems == [("spec.schedule", "not a cron expression")]


@pytest.mark.parametrize(
    ("rule", "fired"),
    [
        ("skip", ["08:05"]),
        ("once", ["08:04", "08:05"]),
        ("all", ["08:02", "08:03", "08:04", "08:05"]),
    ],
)
def test_catch_up_rules(rule: str, fired: list[str]) -> None:
    spec = {"schedule": "* * * * *", "cron": {"catchUp": rule, "maxCatchUp": 3}}
    now = at("2027-01-15T08:05:30")
    result = plan(spec, at("2027-01-15T08:01:00"), now)
    assert [datetime.fromtimestamp(s, UTC).strftime("%H:%M") for s in result.fire] == fired
    assert result.next_at == at("2027-01-15T08:06:00")


def test_a_long_downtime_is_bounded() -> None:
    spec = {"schedule": "* * * * * *", "cron": {"catchUp": "all", "maxCatchUp": 100}}
    start = at("2027-01-15T08:00:00")
    result = plan(spec, start, start + 86_400)  # a day of per-second slots
    # The latest 100 missed slots, and the 61 of the last minute (on time).
    assert len(result.fire) == 100 + int(GRACE_S) + 1
    assert result.fire[-1] == start + 86_400
    assert result.next_at > start + 86_400


def test_signatures_and_timestamps() -> None:
    body = b'{"a": 1}'
    headers = {"X-Fluxo-Timestamp": "1800000000", "X-Fluxo-Signature": sign("s", 1800000000, body)}
    stamp = check_timestamp(headers, 1800000100)
    assert verify("hmac", "s", headers, body, stamp) == headers["X-Fluxo-Signature"][7:]
    for secret, data in (("other", body), ("s", b'{"a": 2}'), (None, body)):
        with pytest.raises(AuthError):
            verify("hmac", secret, headers, data, stamp)
    with pytest.raises(AuthError, match="replays"):
        check_timestamp(headers, 1800000000 + 301)
    with pytest.raises(AuthError, match="replays"):
        check_timestamp(headers, 1800000000 - 301)  # from the future, too
    with pytest.raises(AuthError, match="whole Unix seconds"):
        check_timestamp({**headers, "X-Fluxo-Timestamp": "soon"}, 0)
    bearer = {"Authorization": "Bearer s"}
    assert check_timestamp(bearer, 0) is None
    assert verify("bearer", "s", bearer, body, None) == ""
    with pytest.raises(AuthError):
        verify("bearer", "t", bearer, body, None)
    with pytest.raises(AuthError):  # a signature for a bearer trigger: no match either
        verify("bearer", "s", headers, body, stamp)


def test_delivery_ids() -> None:
    assert delivery_id({"X-Fluxo-Delivery": "abc-1"}, "ff") == "d:abc-1"
    assert delivery_id({}, "f" * 64) == "s:" + "f" * 32
    assert delivery_id({}, "") is None
    with pytest.raises(ValidationError):
        delivery_id({"X-Fluxo-Delivery": "has space"}, "")


def test_payloads_of_each_body() -> None:
    limits = DocumentLimits(max_bytes=10_000, max_depth=5)
    headers = {"Authorization": "Bearer s", "X-Fluxo-Signature": "x", "X-Request": "1"}
    json_payload = payload_of(
        b'{"a": [1]}', "application/json; charset=utf-8", headers, {"q": "1"}, limits=limits
    )
    assert json_payload == {
        "body": {"a": [1]},
        "headers": {"x-request": "1"},
        "query": {"q": "1"},
        "contentType": "application/json",
    }
    form = payload_of(b"a=1&b=&a=2", "application/x-www-form-urlencoded", {}, {}, limits=limits)
    assert form["body"] == {"a": ["1", "2"], "b": ""}
    assert payload_of(b"", "text/plain", {}, {}, limits=limits)["body"] is None
    assert payload_of(b"hi", "application/octet-stream", {}, {}, limits=limits)["body"] == "hi"
    with pytest.raises(DocumentTooComplexError):
        payload_of(b"[[[[[[1]]]]]]", "application/json", {}, {}, limits=limits)
    with pytest.raises(MalformedRequestError):
        payload_of(b'{"a":', "application/json", {}, {}, limits=limits)
    with pytest.raises(MalformedRequestError):
        payload_of(b"\xff", "text/plain", {}, {}, limits=limits)
    with pytest.raises(MalformedRequestError):
        payload_of(
            b"&".join(b"f%d=1" % n for n in range(1001)),
            "application/x-www-form-urlencoded",
            {},
            {},
            limits=limits,
        )
