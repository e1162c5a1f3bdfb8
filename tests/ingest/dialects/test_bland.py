"""The Bland live-listen codec: the documented listen responses (tests/fixtures/bland) and
the binary PCM16 16 kHz stream."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ingest.dialects.fuzz import feed, provider_frames
from workers.ingest.dialects.bland import (
    BlandCodec,
    ListenGranted,
    listen_url,
    parse_listen_response,
)
from workers.ingest.dialects.events import Audio, CallStart, Ignored
from workers.ingest.errors import BlandListenRefused

FIXTURES = Path(__file__).parents[2] / "fixtures" / "bland"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_success_gives_the_websocket_url() -> None:
    assert parse_listen_response(200, fixture("listen_success.json")) == ListenGranted(
        "wss://api.bland.ai/ws/listen/call_123456")


@pytest.mark.parametrize(("name", "status", "code", "retriable"), [
    ("listen_invalid_org_preferences.json", 403, "INVALID_ORG_PREFERENCES", False),
    ("listen_call_not_found.json", 404, "CALL_NOT_FOUND", True),
    ("listen_not_started.json", 404, "CALL_NOT_FOUND", True),
    ("listen_invalid_call_status.json", 400, "INVALID_CALL_STATUS", False),
])
def test_documented_errors(name: str, status: int, code: str, retriable: bool) -> None:
    with pytest.raises(BlandListenRefused) as caught:
        parse_listen_response(status, fixture(name))
    assert caught.value.code == code
    assert caught.value.retriable is retriable
    # The code is in the body, so it is read the same whatever the HTTP status.
    with pytest.raises(BlandListenRefused) as again:
        parse_listen_response(200, fixture(name))
    assert again.value.code == code


@pytest.mark.parametrize(("status", "body", "code"), [
    (500, b"<html>bad gateway</html>", "INTERNAL_SERVER_ERROR"),
    (404, b"", "CALL_NOT_FOUND"),
    (401, b'{"message": "bad key"}', "UNAUTHORIZED"),
    (200, b'{"status": "success", "data": {"url": "https://not-a-socket"}}',
     "UNEXPECTED_RESPONSE"),
    (200, b'{"status": "success", "data": null}', "UNEXPECTED_RESPONSE"),
    (400, b'{"errors": ["MISSING_CALL_ID"]}', "MISSING_CALL_ID"),
])
def test_undocumented_shapes_are_read_leniently(status: int, body: bytes, code: str) -> None:
    with pytest.raises(BlandListenRefused) as caught:
        parse_listen_response(status, body)
    assert caught.value.code == code
    assert caught.value.retriable is (code == "INTERNAL_SERVER_ERROR" or code == "CALL_NOT_FOUND")


def test_listen_url_escapes_the_call_id() -> None:
    assert listen_url("https://api.bland.ai/", "c 1/2") == \
        "https://api.bland.ai/v1/calls/c%201%2F2/listen"


def test_stream_is_one_mixed_16k_channel_with_odd_bytes_carried() -> None:
    codec = BlandCodec("call-1", metadata={"subscriptionId": "s1"})
    [start] = codec.begin()
    assert isinstance(start, CallStart)
    assert (start.call_id, start.rate, start.mix, start.roles) == ("call-1", 16000, "mixed",
                                                                  ("other",))
    assert start.metadata == {"provider": "bland", "callId": "call-1", "subscriptionId": "s1"}
    assert codec.begin() == []  # a reconnect does not start the call again
    data = struct.pack("<3h", 1, -2, 3)
    assert codec.receive_binary(data[:3]) == [Audio((data[:2],))]
    assert codec.receive_binary(data[3:4]) == [Audio((data[2:4],))]
    assert codec.receive_binary(b"") == []
    assert codec.flush() == b""
    assert codec.receive_binary(data[4:5]) == []
    assert codec.flush() == data[4:5]
    assert codec.receive_text("hello") == [
        Ignored("text frame; Bland's listen socket sends only binary audio")]


@settings(max_examples=100, deadline=None)
@given(st.lists(provider_frames(), max_size=8))
def test_fuzz(frames: list[str | bytes]) -> None:
    feed(BlandCodec("c"), frames)


@settings(max_examples=200, deadline=None)
@given(st.integers(100, 599), st.one_of(st.binary(max_size=80), st.text(max_size=80).map(
    str.encode), st.dictionaries(st.sampled_from(["status", "data", "errors", "url"]),
                                 st.none() | st.text(max_size=5)).map(json.dumps)))
def test_fuzz_listen_responses(status: int, body: bytes | str) -> None:
    try:
        parse_listen_response(status, body)
    except BlandListenRefused:
        pass
