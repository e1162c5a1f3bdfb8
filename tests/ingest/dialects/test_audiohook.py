"""The Genesys AudioHook codec fed the frames written from the protocol's types
(tests/fixtures/audiohook): the open/opened negotiation, seq numbers both ways, ping/pong,
update, pause/resume, discarded gaps, close/closed, errors answered with disconnect; the HTTP
message signature; fuzzing."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ingest.dialects.fuzz import VALUES
from workers.errors import ProtocolError
from workers.ingest.dialects.audio import mulaw_to_pcm16, pcm16_to_mulaw
from workers.ingest.dialects.audiohook import (
    AudioHookCodec,
    format_duration,
    format_ms,
    parse_duration,
    select_media,
    sign,
    signature_problem,
)
from workers.ingest.dialects.events import (
    Audio,
    CallStart,
    DtmfPressed,
    Event,
    Ignored,
    Outgoing,
    ProviderError,
    Stop,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "audiohook"
SESSION = "e160e428-53e2-487c-977d-96989bf5c99d"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def sent(events: list[Event]) -> list[dict[str, Any]]:
    return [json.loads(f) for e in events if isinstance(e, Outgoing) for f in e.frames]


def opened_codec() -> AudioHookCodec:
    codec = AudioHookCodec()
    codec.receive_text(fixture("open.json"))
    return codec


def message(type_: str, seq: int, serverseq: int = 1, session: str = SESSION,
            **parameters: Any) -> str:
    return json.dumps({"version": "2", "id": session, "type": type_, "seq": seq,
                       "serverseq": serverseq, "position": "PT0S", "parameters": parameters})


def test_open_is_answered_with_the_selected_media_and_starts_the_call() -> None:
    codec = AudioHookCodec()
    events = codec.receive_text(fixture("open.json"))
    assert sent(events) == [json.loads(fixture("opened.json"))]
    [start] = [e for e in events if isinstance(e, CallStart)]
    assert start.call_id == "090eaa2f-72fa-480a-83e0-8667ff89c0ec"
    assert (start.from_, start.to, start.rate) == ("+1-555-555-1234", "+1-800-555-6789", 8000)
    assert (start.mix, start.channels, start.roles) == ("stereo", 2, ("other", "assistant"))
    assert start.metadata["sessionId"] == SESSION
    assert start.metadata["organizationId"] == "d7934305-0972-4844-938e-9060eef73d05"


def test_the_session_of_the_fixtures_in_order() -> None:
    codec = opened_codec()
    assert sent(codec.receive_text(fixture("ping.json"))) == [json.loads(fixture("pong.json"))]
    assert codec.rtt_s == pytest.approx(0.0123)
    assert [m["type"] for m in sent(codec.receive_text(fixture("update.json")))] == ["updated"]
    assert codec.receive_text(fixture("paused.json")) == []
    assert codec.receive_binary(b"\xff\xff") == [Ignored("audio while paused")]
    assert codec.receive_text(fixture("resumed.json")) == []  # the pause is not on the timeline
    assert codec.samples == 0
    [gap] = codec.receive_text(fixture("discarded.json"))  # 0.5 s lost: silence keeps time
    assert isinstance(gap, Audio) and gap.channels == (bytes(8000), bytes(8000))
    [error] = codec.receive_text(fixture("error.json"))
    assert error == ProviderError("error 429", "Rate limit exceeded")
    events = codec.receive_text(fixture("close.json"))
    assert sent(events) == [json.loads(fixture("closed.json"))]
    assert isinstance(events[-1], Stop)
    assert events[-1].reason == "close (end) at PT0.5S (Genesys: PT3.5S); last rtt 12 ms"
    assert codec.receive_binary(b"\xff\xff") == [Ignored("audio while closed")]


def test_stereo_pcmu_is_deinterleaved_in_the_selected_order() -> None:
    codec = opened_codec()
    external = pcm16_to_mulaw(bytes(range(0, 40)))
    internal = pcm16_to_mulaw(bytes(range(40, 80)))
    frame = bytes(b for pair in zip(external, internal, strict=True) for b in pair)
    [audio] = codec.receive_binary(frame[:-1])  # a half sample frame waits for the rest
    assert audio == Audio((mulaw_to_pcm16(external[:-1]), mulaw_to_pcm16(internal[:-1])))
    [audio] = codec.receive_binary(frame[-1:])
    assert audio == Audio((mulaw_to_pcm16(external[-1:]), mulaw_to_pcm16(internal[-1:])))
    assert codec.samples == 20 and codec.flush() == b""


def test_one_channel_when_only_external_is_offered() -> None:
    open_ = json.loads(fixture("open.json"))
    open_["parameters"]["media"] = [{"type": "audio", "format": "L16",
                                     "channels": ["external", "internal"], "rate": 8000},
                                    {"type": "audio", "format": "PCMU", "channels": ["external"],
                                     "rate": 8000}]
    codec = AudioHookCodec()
    events = codec.receive_text(json.dumps(open_))
    assert sent(events)[0]["parameters"]["media"][0]["channels"] == ["external"]
    assert codec.start is not None and codec.start.roles == ("other",)
    assert codec.receive_binary(b"\x00\x01") == [Audio((mulaw_to_pcm16(b"\x00\x01"),))]


def test_a_probe_is_answered_and_starts_no_call() -> None:
    codec = AudioHookCodec()
    events = codec.receive_text(fixture("probe_open.json"))
    assert [m["type"] for m in sent(events)] == ["opened"]
    assert codec.start is None and not any(isinstance(e, CallStart) for e in events)
    closed = codec.receive_text(message("close", 2, session=codec.session_id or "",
                                        reason="end"))
    assert [m["type"] for m in sent(closed)] == ["closed"]


@pytest.mark.parametrize(("frame", "info"), [
    ("not json", "not JSON"),
    ("[1]", "not an object"),
    (message("ping", 5), "Invalid seq value"),
    (message("ping", 2, serverseq=9), "serverseq 9 is ahead"),
    (json.dumps({"version": "2", "id": "other", "type": "ping", "seq": 2, "serverseq": 1,
                 "parameters": {}}), "not this session's"),
    (message("open", 2), "a second open"),
    ("x" * 70000, "at most 65535"),
])
def test_errors_are_answered_with_disconnect(frame: str, info: str) -> None:
    codec = opened_codec()
    events = codec.receive_text(frame)
    [disconnect] = sent(events)
    assert disconnect["type"] == "disconnect" and disconnect["seq"] == 2
    assert disconnect["parameters"]["reason"] == "error"
    assert info in disconnect["parameters"]["info"]
    # The client answers with close; we say closed and take nothing else.
    assert codec.receive_binary(b"\xff\xff") == [Ignored("audio while disconnected")]
    assert [m["type"] for m in sent(codec.receive_text(message("close", 2, 2)))] == ["closed"]


def test_before_open() -> None:
    codec = AudioHookCodec()
    assert sent(codec.receive_binary(b"\xff"))[0]["parameters"]["info"].endswith(
        "audio before open")
    codec = AudioHookCodec()
    assert "ping before open" in sent(codec.receive_text(message("ping", 1, 0)))[0][
        "parameters"]["info"]
    codec = AudioHookCodec()
    open_ = json.loads(fixture("open.json"))
    open_["parameters"]["media"] = [{"type": "audio", "format": "L16", "channels": ["external"],
                                     "rate": 16000}]
    assert "no offered media" in sent(codec.receive_text(json.dumps(open_)))[0][
        "parameters"]["info"]


def test_lenient_on_what_the_reference_does_not_define() -> None:
    codec = opened_codec()
    assert codec.receive_text(fixture("dtmf_pipecat.json")) == [DtmfPressed("5", None)]
    assert codec.receive_text(message("playback_started", 3)) == [
        Ignored("unknown type 'playback_started'")]
    # update with a participant (pipecat's fixture shape) is still answered
    assert [m["type"] for m in sent(codec.receive_text(
        message("update", 4, participant={"ani": "x"})))] == ["updated"]


def test_the_server_seq_counts_everything_we_send() -> None:
    codec = opened_codec()
    codec.receive_text(message("ping", 2))
    frame = json.loads(codec.disconnect("completed"))
    assert (frame["seq"], frame["clientseq"], frame["parameters"]) == (3, 2, {
        "reason": "completed"})


def final(channel: int = 1, text: str = "I can help with that.", start_ms: int = 1230,
          end_ms: int = 3005, **more: Any) -> dict[str, Any]:
    """A transcripts record as the transcriber writes it (workers/transcribe/calls.py)."""
    return {"v": 1, "callId": "090eaa2f-72fa-480a-83e0-8667ff89c0ec", "type": "transcript",
            "msg": text, "role": "assistant" if channel else "other",
            "offset": start_ms / 1000, "channel": channel, "audioStartMs": start_ms,
            "audioEndMs": end_ms, "id": f"090eaa2f-72fa-480a-83e0-8667ff89c0ec:{channel}:"
            f"{start_ms}", **more}


def test_a_final_transcript_is_an_event_with_a_transcript_entity() -> None:
    codec = opened_codec()
    codec.receive_text(message("ping", 2))  # pong: seq 2
    frame = codec.transcript_event(final())
    assert frame is not None
    event = json.loads(frame)
    assert {k: event[k] for k in ("version", "type", "seq", "clientseq", "id")} == {
        "version": "2", "type": "event", "seq": 3, "clientseq": 2, "id": SESSION}
    [entity] = event["parameters"]["entities"]
    assert entity["type"] == "transcript"
    data = entity["data"]
    assert data["channelId"] == 1 and data["isFinal"] is True  # internal: the agent
    assert (data["offset"], data["duration"]) == ("PT1.23S", "PT1.775S")
    assert data["alternatives"] == [{
        "confidence": 1.0, "languages": ["en-US"],
        "interpretations": [{"type": "display", "transcript": "I can help with that."}]}]
    # A UUID, the same for the same record (a record read twice keeps its id).
    assert str(uuid.UUID(data["id"])) == data["id"]
    again = json.loads(codec.transcript_event(final()) or "{}")
    assert again["seq"] == 4 and again["parameters"]["entities"][0]["data"]["id"] == data["id"]
    # The seq contract holds across events: the next server message follows them.
    assert json.loads(codec.disconnect("completed"))["seq"] == 5


def test_the_channel_id_is_the_index_in_the_selected_media() -> None:
    codec = opened_codec()  # external, internal
    first = json.loads(codec.transcript_event(final(channel=0, start_ms=0, end_ms=0)) or "{}")
    data = first["parameters"]["entities"][0]["data"]
    assert (data["channelId"], data["offset"], data["duration"]) == (0, "PT0S", "PT0S")
    mono = AudioHookCodec()
    open_ = json.loads(fixture("open.json"))
    open_["parameters"]["media"] = open_["parameters"]["media"][1:]  # external only
    del open_["parameters"]["language"]
    mono.receive_text(json.dumps(open_))
    assert mono.transcript_event(final(channel=1)) is None  # no such channel
    frame = json.loads(mono.transcript_event(final(channel=0)) or "{}")
    alternative = frame["parameters"]["entities"][0]["data"]["alternatives"][0]
    assert "languages" not in alternative
    # update's language is the one sent from then on
    mono.receive_text(message("update", 2, serverseq=2, language="de-DE"))
    frame = json.loads(mono.transcript_event(final(channel=0)) or "{}")
    assert frame["parameters"]["entities"][0]["data"]["alternatives"][0]["languages"] == [
        "de-DE"]


def test_only_finals_of_a_live_session_are_sent() -> None:
    assert AudioHookCodec().transcript_event(final()) is None  # before open
    codec = opened_codec()
    seq = codec.seq
    for record in (final(type="transcript:interim"), final(text="  "), final(channel="x"),
                   {"type": "event:callEnd"}, final(type="assist")):
        assert codec.transcript_event(record) is None
    assert codec.seq == seq  # nothing sent, nothing counted
    # without audio times (a record of another shape): offset from `offset`, no duration
    data = json.loads(codec.transcript_event(final(audioStartMs=None, audioEndMs=None)) or "{}")
    assert data["parameters"]["entities"][0]["data"]["offset"] == "PT1.23S"
    assert "duration" not in data["parameters"]["entities"][0]["data"]
    codec.disconnect("completed")
    assert codec.transcript_event(final()) is None  # after our disconnect
    probe = AudioHookCodec()
    probe.receive_text(fixture("probe_open.json"))
    assert probe.transcript_event(final(channel=0)) is None
    closed = opened_codec()
    closed.receive_text(message("close", 2, reason="end"))
    assert closed.transcript_event(final()) is None


def test_durations() -> None:
    assert parse_duration("PT0S") == 0 and parse_duration("PT42.3S") == 42.3
    assert parse_duration("PT1H2M3.5S") == 3723.5
    for bad in ("", "P", "PT", "42", "PT-1S", None, 3, "PTxS"):
        assert parse_duration(bad) is None
    assert format_duration(0) == "PT0S" and format_duration(8000 * 42 + 2400) == "PT42.3S"
    assert parse_duration(format_duration(12345)) == pytest.approx(12345 / 8000, abs=1e-3)
    assert (format_ms(0), format_ms(1230), format_ms(61005), format_ms(-5)) == (
        "PT0S", "PT1.23S", "PT61.005S", "PT0S")
    assert select_media("x") is None
    assert select_media([{"format": "PCMU", "rate": 8000, "channels": ["internal"]}]) == {
        "type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}


# --------------------------------------------------------------------------- signature

SECRET = base64.b64encode(b"a client secret of 32 bytes!!!!!").decode()
KEY = "api-key-1"
HEADERS = {"Host": "ingest.example.com", "audiohook-organization-id": "org",
           "audiohook-session-id": SESSION, "audiohook-correlation-id": "corr",
           "x-api-key": KEY}


def signed(**changes: Any) -> dict[str, str]:
    made = sign(SECRET, path="/audiohook?x=1", headers=HEADERS, api_key=KEY,
                nonce="n" * 22, created=1_700_000_000)
    return {**HEADERS, **{k.lower(): v for k, v in made.items()}, **changes}


class Lower(dict[str, str]):
    """Case-insensitive lookups, as websockets' Headers."""

    def get(self, key: str, default: Any = None) -> Any:
        for name, value in self.items():
            if name.lower() == key.lower():
                return value
        return default


def problem(headers: dict[str, str], *, now: float = 1_700_000_002, path: str = "/audiohook?x=1",
            secret: str = SECRET) -> str:
    return signature_problem(secret, KEY, path=path, headers=Lower(headers), now=now)


def test_signature_base_matches_rfc9421_shape() -> None:
    made = sign(SECRET, path="/audiohook", headers=HEADERS, api_key=KEY, nonce="n" * 22,
                created=1)
    assert made["Signature-Input"] == (
        'sig1=("@request-target" "@authority" "audiohook-organization-id" '
        '"audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="api-key-1";'
        'nonce="nnnnnnnnnnnnnnnnnnnnnn";alg="hmac-sha256";created=1')
    assert made["Signature"].startswith("sig1=:") and made["Signature"].endswith(":")


def test_signature_verifies_and_each_fault_is_named() -> None:
    assert problem(signed()) == ""
    assert problem(signed(), path="/audiohook?x=2") == "signature mismatch"
    assert problem(signed(**{"audiohook-session-id": "other"})) == "signature mismatch"
    assert problem(signed(), secret=base64.b64encode(b"another").decode()) == \
        "signature mismatch"
    assert problem(signed(), now=1_700_000_100) == "created is missing, in the future or too old"
    assert problem(signed(), now=1_600_000_000) == "created is missing, in the future or too old"
    assert problem(HEADERS) == "unsigned request"
    assert problem(signed(signature="sig1=:AAAA")) == "unparsable Signature or Signature-Input"
    assert problem(signed(signature="sig2=:AAAA:")) == "no signature labelled sig1"
    other_key = signed(**{"signature-input": signed()["signature-input"].replace(
        'keyid="api-key-1"', 'keyid="k2"')})
    assert problem(other_key) == "keyid is not the X-API-KEY"
    fewer = signed(**{"signature-input": signed()["signature-input"].replace(
        ' "x-api-key"', "")})
    assert problem(fewer) == "signature does not cover x-api-key"


# --------------------------------------------------------------------------- fuzz

TYPES = ["open", "ping", "update", "paused", "resumed", "discarded", "close", "error", "dtmf",
         "opened", "nope", "", None, 3]


@st.composite
def audiohook_frames(draw: st.DrawFn, seq: int) -> str | bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(st.text(max_size=80))
    frame: dict[str, Any] = {
        "version": "2", "id": draw(st.sampled_from([SESSION, "x", None])),
        "type": draw(st.sampled_from(TYPES)),
        "seq": draw(st.one_of(st.just(seq), st.integers(-2, 2**63), VALUES)),
        "serverseq": draw(st.one_of(st.integers(0, 3), VALUES)),
        "position": draw(st.one_of(st.sampled_from(["PT0S", "PT1.5S", "PT", "P1D"]), VALUES)),
        "parameters": draw(st.one_of(st.dictionaries(st.sampled_from(
            ["media", "rtt", "start", "discarded", "reason", "code", "message", "digit",
             "conversationId", "participant", "language"]), VALUES, max_size=4), VALUES)),
    }
    return json.dumps(frame)


def feed(codec: AudioHookCodec, frames: list[str | bytes]) -> None:
    for frame in frames:
        try:
            events = (codec.receive_text(frame) if isinstance(frame, str)
                      else codec.receive_binary(frame))
        except ProtocolError:
            return
        for event in events:
            if isinstance(event, CallStart):
                assert event.channels == len(event.roles) in (1, 2) and event.rate == 8000
            if isinstance(event, Audio):
                assert codec.start is not None and len(event.channels) == codec.start.channels
                assert len({len(c) for c in event.channels}) == 1
                assert all(len(c) % 2 == 0 for c in event.channels)
            if isinstance(event, Outgoing):
                for out in event.frames:  # strict on output: always a well-formed envelope
                    data = json.loads(out)
                    assert data["version"] == "2" and isinstance(data["seq"], int)
                    assert data["clientseq"] == codec.clientseq
    codec.flush()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(2, 9).flatmap(audiohook_frames), max_size=8))
def test_fuzz_never_raises(frames: list[str | bytes]) -> None:
    feed(AudioHookCodec(), [fixture("open.json"), *frames])
    feed(AudioHookCodec(), frames)
