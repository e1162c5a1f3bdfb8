"""The Plivo Audio Streams codec, fed the reference's frames (tests/fixtures/plivo) and literal
frames; outbound renderers, the checkpoint tracker, and the V3 signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ingest.dialects.fuzz import feed, provider_frames
from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.events import (
    CallStart,
    Cleared,
    DtmfPressed,
    Ignored,
    MarkEvent,
    ProviderError,
    Stop,
    TrackAudio,
)
from workers.ingest.dialects.plivo import (
    MAX_MESSAGE_BYTES,
    PlivoCodec,
    PlivoPlayer,
    canonical_url,
    parse_extra_headers,
    render_checkpoint,
    render_clear_audio,
    render_play_audio,
    render_send_dtmf,
    signature_ok,
    signature_v3,
)
from workers.ingest.errors import ControlUnsupported

FIXTURES = Path(__file__).parents[2] / "fixtures" / "plivo"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def started(start: str | dict[str, Any]) -> tuple[PlivoCodec, CallStart]:
    codec = PlivoCodec()
    [event] = codec.receive_text(start if isinstance(start, str) else json.dumps(start))
    assert isinstance(event, CallStart)
    return codec, event


def media(payload: bytes, *, track: str = "inbound", timestamp: Any = "1705312200000",
          chunk: Any = 1, seq: Any = 2) -> str:
    return json.dumps({"event": "media", "sequenceNumber": seq, "streamId": "s",
                       "media": {"track": track, "timestamp": timestamp, "chunk": chunk,
                                 "payload": base64.b64encode(payload).decode()}})


def start_frame(*, tracks: Any = ("inbound",), encoding: str = "audio/x-l16",
                rate: Any = 8000, **extra: Any) -> dict[str, Any]:
    return {"event": "start", "sequenceNumber": 1, "start": {
        "callId": "c-1", "streamId": "s-1", "accountId": "MA1",
        "tracks": list(tracks) if isinstance(tracks, tuple | list) else tracks,
        "mediaFormat": {"encoding": encoding, "sampleRate": rate}}, **extra}


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


# --------------------------------------------------------------------------- the reference


def test_reference_start_is_a_mulaw_call_with_semicolon_headers() -> None:
    _, start = started(fixture("start_reference.json"))
    assert start.call_id == "12345678-1234-1234-1234-123456789abc"
    assert (start.rate, start.mix, start.channels, start.roles) == (8000, "mono", 1, ("other",))
    assert start.metadata["provider"] == "plivo"
    assert start.metadata["streamId"] == "87654321-4321-4321-4321-cba987654321"
    assert start.metadata["accountId"] == "MAXXXXXXXXXXXXXXXXXX"
    assert start.metadata["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000}
    assert start.metadata["extraHeaders"] == {"userId": "12345", "sessionId": "abc-xyz"}
    assert start.metadata["bidirectional"] is True


def test_reference_media_with_a_truncated_payload_is_skipped_not_fatal() -> None:
    codec, _ = started(fixture("start_reference.json"))
    [event] = codec.receive_text(fixture("media_reference.json"))
    assert event == Ignored("media payload is not base64")


def test_reference_notices() -> None:
    codec, _ = started(fixture("start_reference.json"))
    assert codec.receive_text(fixture("dtmf_reference.json")) == [DtmfPressed("5", None, 0)]
    assert codec.receive_text(fixture("playedStream_reference.json")) == [
        MarkEvent("greeting-complete", "playout")]
    assert codec.receive_text(fixture("played_support.json")) == [
        MarkEvent("greeting-complete", "playout")]
    assert codec.receive_text(fixture("clearedAudio_reference.json")) == [Cleared()]
    assert codec.receive_text(fixture("clearedAudio_support.json")) == [Cleared()]
    assert codec.receive_text(fixture("playFailed_agent_transport.json")) == [
        ProviderError("playFailed", "invalid payload")]
    assert codec.receive_text(fixture("error_agent_transport.json")) == [
        ProviderError("error", "stream not bidirectional")]
    assert codec.receive_text(fixture("stop_examples.json")) == [Stop("stop")]


def test_dtmf_position_is_its_timestamp_from_the_first_media() -> None:
    codec, _ = started(fixture("start_reference.json"))
    codec.receive_text(media(bytes(160), timestamp="1705312200000"))
    [press] = codec.receive_text(fixture("dtmf_reference.json"))
    assert press == DtmfPressed("5", None, 50_000)


@pytest.mark.parametrize(("name", "rate", "headers"), [
    ("start_l16_16k_xml_example.json", 16000, {"userId": "12345", "sessionId": "abc-xyz"}),
    ("start_both_comma_headers.json", 8000, {"test1": "12", "test2": "123"}),
    ("start_json_headers.json", 24000, {"userId": "12345", "tier": "gold"}),
])
def test_extra_headers_in_all_three_shapes(name: str, rate: int, headers: dict[str, str]) -> None:
    _, start = started(fixture(name))
    assert start.rate == rate
    assert start.metadata["extraHeaders"] == headers


def test_extra_headers_parser_edge_cases() -> None:
    assert parse_extra_headers("a=1%2C2;b=x%3Dy") == {"a": "1,2", "b": "x=y"}  # URL-decoded
    assert parse_extra_headers(" k = v , k2=v2 ") == {"k": "v", "k2": "v2"}
    assert parse_extra_headers("{}") == {}
    assert parse_extra_headers('{"n": 1, "o": {"x": 2}}') == {"n": "1", "o": '{"x": 2}'}
    assert parse_extra_headers("{not json=1") == {"{not json": "1"}
    assert parse_extra_headers("novalue;=x;") == {}
    assert parse_extra_headers(None) == parse_extra_headers(12) == parse_extra_headers("") == {}


def test_both_tracks_are_two_channels_with_roles() -> None:
    codec, start = started(fixture("start_both_comma_headers.json"))
    assert (start.mix, start.channels, start.roles) == ("tracks", 2, ("other", "assistant"))
    assert start.metadata["bidirectional"] is False  # Plivo allows only inbound then
    [outbound] = codec.receive_text(media(pcm(7, 8), track="outbound"))
    [inbound] = codec.receive_text(media(pcm(1, 2), track="inbound"))
    assert outbound == TrackAudio(1, pcm(7, 8), 0)
    assert inbound == TrackAudio(0, pcm(1, 2), 0)


@pytest.mark.parametrize(("tracks", "roles"), [
    ("both", ("other", "assistant")), (["outbound"], ("assistant",)),
    (["outbound", "inbound"], ("other", "assistant")), ([], ("other",)), (None, ("other",)),
    (["inbound_track", "bogus"], ("other",)),
])
def test_track_lists_are_read_leniently(tracks: Any, roles: tuple[str, ...]) -> None:
    _, start = started(start_frame(tracks=tracks))
    assert start.roles == roles


def test_l16_is_little_endian_and_odd_bytes_carry_per_track() -> None:
    codec, _ = started(start_frame(tracks=["inbound", "outbound"], rate=16000))
    data = pcm(1, -2, 300)
    assert codec.receive_text(media(data[:3])) == [TrackAudio(0, data[:2], 0)]
    assert codec.receive_text(media(data[:1], track="outbound")) == []
    [rest] = codec.receive_text(media(data[3:], timestamp="1705312200020", chunk=2))
    assert rest == TrackAudio(0, data[2:], 320)
    assert codec.flush() == data[:1]


def test_mulaw_is_decoded_to_pcm16() -> None:
    codec, _ = started(fixture("start_reference.json"))
    [audio] = codec.receive_text(media(bytes([0xFF, 0x7F, 0x00, 0x80])))
    assert isinstance(audio, TrackAudio)
    assert audio.pcm == pcm(0, 0, -32124, 32124)


def test_numbers_and_strings_are_both_accepted() -> None:
    codec, start = started(start_frame(rate="16000"))
    assert start.rate == 16000
    [a] = codec.receive_text(media(pcm(1), timestamp=1705312200000, chunk="1", seq="2"))
    [b] = codec.receive_text(media(pcm(2), timestamp="1705312200040", chunk=3.0, seq=3))
    assert (a, b) == (TrackAudio(0, pcm(1), 0), TrackAudio(0, pcm(2), 640))


def test_missing_timestamps_fall_back_to_chunk_numbers() -> None:
    codec, _ = started(start_frame())
    frame = bytes(320)
    assert codec.receive_text(media(frame, chunk=1)) == [TrackAudio(0, frame, 0)]
    assert codec.receive_text(media(frame, timestamp=None, chunk=4)) == [
        TrackAudio(0, frame, 480)]
    assert codec.receive_text(media(frame, timestamp=None, chunk=None)) == [
        TrackAudio(0, frame, None)]


@pytest.mark.parametrize(("encoding", "rate"), [
    ("audio/x-mulaw", 16000), ("audio/x-l16", 44100), ("audio/opus", 8000), ("audio/x-l16", "x"),
])
def test_unsupported_formats_close_1003(encoding: str, rate: Any) -> None:
    with pytest.raises(UnsupportedAudio) as caught:
        started(start_frame(encoding=encoding, rate=rate))
    assert caught.value.close_code == 1003


def test_content_type_with_a_rate_parameter() -> None:
    frame = start_frame()
    frame["start"]["mediaFormat"] = {"encoding": "audio/x-l16;rate=16000"}
    assert started(frame)[1].rate == 16000


def test_bad_input_before_and_after_start() -> None:
    with pytest.raises(ProtocolError) as not_json:
        PlivoCodec().receive_text("{oops")
    assert not_json.value.close_code == 1007
    with pytest.raises(ProtocolError) as early:
        PlivoCodec().receive_text(media(bytes(2)))
    assert early.value.close_code == 1008
    codec = PlivoCodec()
    assert codec.receive_text('{"event": "dtmf"}') == [Ignored("'dtmf' before the start event")]
    codec, _ = started(start_frame())
    assert codec.receive_text("{oops") == [Ignored("text frame is not JSON")]
    assert codec.receive_text("[1]") == [Ignored("text frame is JSON list, not an object")]
    assert codec.receive_text(json.dumps(start_frame())) == [Ignored("a second start event")]
    assert codec.receive_text('{"event": "muteStream"}') == [Ignored("unknown event 'muteStream'")]
    assert codec.receive_text(media(bytes(2), track="outbound")) == [
        Ignored("media for track 'outbound', not in start.tracks")]
    assert codec.receive_text('{"event": "media", "media": 3}') == [
        Ignored("media event without a media object")]
    assert codec.receive_text('{"event":"dtmf","dtmf":{"digit":"55"}}')[0].__class__ is Ignored
    assert codec.receive_binary(b"\x00\x01") == [
        Ignored("binary frame; Plivo sends audio as base64 in JSON media events")]


@settings(max_examples=200, deadline=None)
@given(st.lists(provider_frames(), max_size=8), st.sampled_from(["l16", "mulaw", "both"]))
def test_fuzz_never_raises_anything_but_protocol_errors(frames: list[str | bytes],
                                                        layout: str) -> None:
    codec = PlivoCodec()
    opening = {"l16": start_frame(rate=16000), "mulaw": start_frame(encoding="audio/x-mulaw"),
               "both": start_frame(tracks="both")}[layout]
    feed(codec, [json.dumps(opening), *frames])
    feed(PlivoCodec(), frames)


# --------------------------------------------------------------------------- outbound


def test_play_audio_matches_the_stream_and_splits_under_64_kb() -> None:
    audio = bytes(range(256)) * 400  # 102 400 bytes of L16
    frames = render_play_audio(audio, encoding="l16", sample_rate=16000)
    assert len(frames) == 9
    decoded = b""
    for frame in frames:
        assert len(frame.encode()) < MAX_MESSAGE_BYTES
        message = json.loads(frame)
        assert message["event"] == "playAudio" and "streamId" not in message
        assert message["media"]["contentType"] == "audio/x-l16"
        assert message["media"]["sampleRate"] == 16000  # a number
        chunk = base64.b64decode(message["media"]["payload"])
        assert len(chunk) % 2 == 0
        decoded += chunk
    assert decoded == audio
    with pytest.raises(ValueError, match="64 KB"):
        render_play_audio(audio, encoding="l16", sample_rate=16000, chunk_bytes=60_000)
    with pytest.raises(ValueError):
        render_play_audio(b"\x00", encoding="l16", sample_rate=8000)
    with pytest.raises(ValueError):
        render_play_audio(b"\x00", encoding="mulaw", sample_rate=16000)


def test_checkpoint_clear_and_dtmf_renderers() -> None:
    assert json.loads(render_checkpoint("s-1", "greeting-complete")) == {
        "event": "checkpoint", "streamId": "s-1", "name": "greeting-complete"}
    assert json.loads(render_clear_audio("s-1")) == {"event": "clearAudio", "streamId": "s-1"}
    assert json.loads(render_send_dtmf("5#")) == {"event": "sendDTMF", "dtmf": "5#"}
    with pytest.raises(ValueError):
        render_send_dtmf("5x")


def test_player_tracks_checkpoints_and_clear_cancels_them() -> None:
    _, start = started(fixture("start_reference.json"))
    player = PlivoPlayer.for_start(start)
    [play] = player.play(pcm(0, 1000, -1000))
    assert json.loads(play)["media"]["contentType"] == "audio/x-mulaw"
    assert len(base64.b64decode(json.loads(play)["media"]["payload"])) == 3
    player.checkpoint("a")
    player.checkpoint("b")
    player.on_reply(MarkEvent("a", "playout"))
    assert player.pending == ("b",)
    frame, cancelled = player.clear()
    assert json.loads(frame)["event"] == "clearAudio" and cancelled == ["b"]
    assert player.pending == ()
    _, both = started(fixture("start_both_comma_headers.json"))
    with pytest.raises(ControlUnsupported):
        PlivoPlayer.for_start(both).play(pcm(1))


# --------------------------------------------------------------------------- signature


def expected_v3(token: str, signed_url: str, nonce: str) -> str:
    """The V3 algorithm written out by hand (not via the module): HMAC-SHA256 over
    "<url>.<nonce>", base64."""
    mac = hmac.new(token.encode(), f"{signed_url}.{nonce}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def test_v3_signature_vectors() -> None:
    token, nonce = "MjA5ODU0ZTMtYTFjNS00NDE3", "05429567804466091622"
    url = "wss://calls.example.com/plivo"
    assert signature_v3(token, url, nonce) == expected_v3(token, url, nonce)
    # The query is sorted by key (and values per key) before signing.
    assert canonical_url("wss://h/p?b=2&a=1&a=0") == "wss://h/p?a=0&a=1&b=2"
    assert signature_v3(token, "wss://h/p?b=2&a=1", nonce) == expected_v3(
        token, "wss://h/p?a=1&b=2", nonce)


def test_v3_several_signatures_any_may_match() -> None:
    token, nonce, url = "tok", "123", "wss://h/plivo"
    good = expected_v3(token, url, nonce)
    other = expected_v3("old-token", url, nonce)
    assert signature_ok(token, [url], nonce, f"{other}, {good}")
    assert signature_ok(token, ["ws://h/plivo", url], nonce, good)
    assert not signature_ok(token, [url], nonce, other)
    assert not signature_ok(token, [url], "124", good)
    assert not signature_ok(token, [url], None, good)
    assert not signature_ok(token, [url], nonce, None)
