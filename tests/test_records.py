"""Domain records round-trip through their wire codecs; malformed input is a RecordError."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from workers import records as r
from workers.errors import RecordError

STARTED = r.CallStarted(call_id="call-1", provider="twilio", from_="+14155550123",
                        to="+14155550199", direction="inbound", rate=8000, channels=2,
                        mix="separate", roles=("other", "user"),
                        timestamp="2026-01-15T10:30:00.000Z",
                        metadata={"streamSid": "MZ1", "custom": {"a": 1}})
ENDED = r.CallEnded(call_id="call-1", reason="hangup", duration_ms=71_250, last_seq=(712, -1),
                    timestamp="2026-01-15T10:31:12.000Z")
DTMF = r.Dtmf(call_id="call-1", digit="#", duration_ms=None, t_ms=4_000,
              timestamp="2026-01-15T10:30:04.000Z")
CHUNK = r.AudioChunk(call_id="call-1", channel=1, seq=7, rate=8000, role="user", t_ms=700,
                     pcm=b"\x01\x00" * 800, channels=2)


@pytest.mark.parametrize("event", [STARTED, ENDED, DTMF,
                                   r.Dtmf(call_id="c", digit="5", duration_ms=120, t_ms=0)])
def test_call_events_round_trip(event: r.CallEvent) -> None:
    wire = r.dumps(event.to_json())
    assert r.call_event_from_json(r.loads(wire)) == event


def test_call_started_vocabulary_is_on_the_wire_only_when_set() -> None:
    assert "vocabulary" not in STARTED.to_json()
    event = r.CallStarted(**{**{f: getattr(STARTED, f) for f in STARTED.__slots__},
                             "vocabulary": ("Zentrix Plus", "Quorvo")})
    assert event.to_json()["vocabulary"] == ["Zentrix Plus", "Quorvo"]
    assert r.call_event_from_json(r.loads(r.dumps(event.to_json()))) == event
    # a producer's string (or junk) is read leniently: the call is never lost over it
    decoded = r.call_event_from_json(STARTED.to_json() | {"vocabulary": "Quorvo, Omnira"})
    assert isinstance(decoded, r.CallStarted)
    assert decoded.vocabulary == ("Quorvo", "Omnira")
    decoded = r.call_event_from_json(STARTED.to_json() | {"vocabulary": {"x": 1}})
    assert isinstance(decoded, r.CallStarted)
    assert decoded.vocabulary == ()


def test_call_started_defaults_empty_parties() -> None:
    data = STARTED.to_json() | {"from": None, "to": None, "direction": None, "metadata": None}
    event = r.call_event_from_json(data)
    assert isinstance(event, r.CallStarted)
    assert (event.from_, event.to, event.direction, event.metadata) == ("", "", "", {})


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"type": "call.started"},
        {"type": "call.teleported", "callId": "c"},
        STARTED.to_json() | {"rate": "fast"},
        {k: v for k, v in STARTED.to_json().items() if k != "mix"},
        {k: v for k, v in ENDED.to_json().items() if k != "lastSeq"},
        ENDED.to_json() | {"lastSeq": 3},
        DTMF.to_json() | {"tMs": None},
        DTMF.to_json() | {"durationMs": "long"},
    ],
)
def test_malformed_call_events(data: dict[str, Any]) -> None:
    with pytest.raises(RecordError):
        r.call_event_from_json(data)


@pytest.mark.parametrize("last", [False, True])
def test_audio_chunk_round_trip(last: bool) -> None:
    chunk = r.AudioChunk(**{**_fields(CHUNK), "last": last, "pcm": b"" if last else CHUNK.pcm})
    decoded = r.AudioChunk.from_kafka(chunk.call_id.encode(), chunk.pcm, chunk.headers())
    assert decoded == chunk
    as_dict = {k: v for k, v in chunk.headers()}
    assert r.AudioChunk.from_kafka(b"call-1", chunk.pcm, as_dict) == chunk


def test_audio_headers_are_ascii_text() -> None:
    headers = dict(CHUNK.headers())
    assert headers == {"v": b"1", "seq": b"7", "rate": b"8000", "channel": b"1",
                       "channels": b"2", "role": b"user", "t_ms": b"700", "last": b"0"}
    assert CHUNK.samples == 800


def test_audio_defaults_for_optional_headers() -> None:
    headers = [(k, v) for k, v in CHUNK.headers() if k not in ("channels", "last")]
    decoded = r.AudioChunk.from_kafka(b"call-1", CHUNK.pcm, headers)
    assert (decoded.channels, decoded.last) == (1, False)


def _fields(chunk: r.AudioChunk) -> dict[str, Any]:
    return {name: getattr(chunk, name) for name in chunk.__slots__}


def _without(name: str) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in CHUNK.headers() if k != name]


def _with(name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [*_without(name), (name, value)]


@pytest.mark.parametrize(
    ("key", "value", "headers", "needle"),
    [
        (None, CHUNK.pcm, CHUNK.headers(), "key"),
        (b"", CHUNK.pcm, CHUNK.headers(), "key"),
        (b"\xff", CHUNK.pcm, CHUNK.headers(), "malformed"),
        (b"c", b"\x00", CHUNK.headers(), "PCM16"),
        (b"c", CHUNK.pcm, _without("seq"), "seq"),
        (b"c", CHUNK.pcm, _without("role"), "role"),
        (b"c", CHUNK.pcm, _with("rate", b"fast"), "malformed"),
        (b"c", CHUNK.pcm, _with("role", b"caller"), "role"),
        (b"c", CHUNK.pcm, _with("role", b"\xff"), "malformed"),
        (b"c", CHUNK.pcm, None, "header"),
    ],
)
def test_malformed_audio(key: bytes | None, value: bytes, headers: Any, needle: str) -> None:
    with pytest.raises(RecordError, match=needle):
        r.AudioChunk.from_kafka(key, value, headers)


def test_transcript_record_and_id() -> None:
    record_id = r.transcript_id("call-1", 0, 1200)
    assert record_id == "call-1:0:1200"
    message = {"type": "transcript", "msg": "Hi", "role": "other", "offset": 1.2}
    record = r.transcript_record("call-1", message, record_id=record_id, audioStartMs=1200,
                                 producedAtMs=None)
    assert record == {**message, "v": 1, "callId": "call-1", "id": record_id,
                      "audioStartMs": 1200}
    assert "v" not in message
    assert r.loads(r.dumps(record)) == record


def test_control_command_json() -> None:
    command = r.ControlCommand(call_id="call-1", type="client:joinCall", id="m-1",
                               bridge="bridge-0", received_at="2026-01-15T10:30:05.000Z")
    assert command.to_json() == {"v": 1, "type": "client:joinCall", "id": "m-1",
                                 "callId": "call-1", "bridge": "bridge-0",
                                 "receivedAt": "2026-01-15T10:30:05.000Z"}


def test_dumps_is_compact_utf8() -> None:
    assert r.dumps({"msg": "héllo", "n": 1}) == '{"msg":"héllo","n":1}'.encode()


@pytest.mark.parametrize("raw", [None, b"", b"{", b"[1]", b'"s"', b"\xff"])
def test_loads_rejects_non_objects(raw: bytes | None) -> None:
    with pytest.raises(RecordError):
        r.loads(raw)


def test_time_helpers() -> None:
    assert r.iso_from_epoch_ms(1_768_473_000_123) == "2026-01-15T10:30:00.123Z"
    assert r.iso_from_epoch_ms(0) == "1970-01-01T00:00:00.000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r.utc_now_iso())


def test_topics() -> None:
    topics = r.Topics("acme")
    assert topics.all() == ("acme.audio", "acme.calls", "acme.transcripts", "acme.control",
                            "acme.interest")
    assert r.Topics().transcripts == "callscribe.transcripts"
    json.dumps(list(topics.all()))
