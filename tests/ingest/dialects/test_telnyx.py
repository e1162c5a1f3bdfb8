"""The Telnyx Media Streaming codec fed frames written from Telnyx's docs (tests/fixtures/telnyx):
connected, start, PCMU/PCMA/L16 media per track, DTMF, marks, errors, stop; the layout and the
bidirectional mode from custom parameters or the defaults; the outbound renderers and the mark
tracker; fuzzing."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ingest.dialects.fuzz import VALUES, feed
from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.audio import alaw_to_pcm16, mulaw_to_pcm16
from workers.ingest.dialects.events import (
    CallStart,
    DtmfPressed,
    Ignored,
    MarkEvent,
    ProviderError,
    Stop,
    TrackAudio,
)
from workers.ingest.dialects.telnyx import (
    TelnyxCodec,
    TelnyxPlayer,
    error_reason,
    parse_custom_parameters,
    parse_media_format,
    render_clear,
    render_mark,
    render_media,
)
from workers.ingest.errors import ControlUnsupported

FIXTURES = Path(__file__).parents[2] / "fixtures" / "telnyx"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def started(start: str | dict[str, Any], **kwargs: Any) -> tuple[TelnyxCodec, CallStart]:
    codec = TelnyxCodec(**kwargs)
    assert codec.receive_text(fixture("connected_docs.json")) == []
    [event] = codec.receive_text(start if isinstance(start, str) else json.dumps(start))
    assert isinstance(event, CallStart)
    return codec, event


def start_frame(encoding: str = "PCMU", rate: int = 8000, **custom: str) -> dict[str, Any]:
    return {"event": "start", "sequence_number": "1", "stream_id": "s-1", "start": {
        "call_control_id": "v3:abc", "from": "+1", "to": "+2", "custom_parameters": custom,
        "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1}}}


def media(payload: bytes, *, track: str | None = "inbound", chunk: Any = "1",
          timestamp: Any = "0") -> str:
    body: dict[str, Any] = {"chunk": chunk, "timestamp": timestamp,
                            "payload": base64.b64encode(payload).decode()}
    if track is not None:
        body["track"] = track
    return json.dumps({"event": "media", "sequence_number": "2", "stream_id": "s-1",
                       "media": body})


# --------------------------------------------------------------------------- docs


def test_the_docs_session_in_order() -> None:
    codec = TelnyxCodec()
    assert codec.receive_text(fixture("connected_token.json")) == []
    [start] = codec.receive_text(fixture("start_docs.json"))
    assert isinstance(start, CallStart)
    assert start.call_id == "v3:Qm9vZ3VzQ2FsbENvbnRyb2xJZEZvclRlc3RzMDE"
    assert (start.from_, start.to) == ("+13125550100", "+13125550199")
    assert (start.rate, start.mix, start.channels, start.roles) == (8000, "mono", 1, ("other",))
    meta = start.metadata
    assert meta["stream_id"] == "5b0e1c9a-7d41-4f0b-9a7e-2c3d4e5f6a7b"
    assert meta["call_control_id"] == start.call_id
    assert meta["call_session_id"] == "8f7e6d5c-0000-11ef-9abc-02420a0b0c0d"
    assert meta["custom_parameters"] == {"customer_id": "c-42"}
    assert meta["tags"] == ["support", "en"] and meta["client_state"] == "Y2FsbHNjcmliZQ=="
    assert meta["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    assert meta["tracks"] == ["inbound"] and meta["bidirectional"] is False
    assert meta["connected"] == {"version": "1.0.0"}
    assert "stream-token-123" not in json.dumps(meta)  # the auth token is never kept

    [audio] = codec.receive_text(fixture("media_docs.json"))
    assert isinstance(audio, TrackAudio) and audio.channel == 0
    assert audio.pcm == mulaw_to_pcm16(bytes([0xFF, 0x7F, 0x00, 0x80] * 40))
    assert audio.at_sample == 0  # the first timestamp is the origin
    assert codec.receive_text(fixture("dtmf_docs.json")) == [DtmfPressed("1", None)]
    assert codec.receive_text(fixture("mark_docs.json")) == [MarkEvent("greeting", "playout")]
    assert codec.receive_text(fixture("error_docs.json")) == [ProviderError(
        "error", "100003 malformed_frame: The received frame is not valid JSON.")]
    assert codec.receive_text(fixture("stop_docs.json")) == [Stop("stop")]


def test_both_tracks_l16_big_endian_and_odd_bytes_carried_per_track() -> None:
    codec, start = started(fixture("start_l16_both_list.json"))
    assert (start.rate, start.mix, start.channels, start.roles) == (
        16000, "tracks", 2, ("other", "assistant"))
    assert start.from_ == "sip:alice@example.com"
    assert start.metadata["bidirectional"] is True  # callscribeBidirectional=rtp
    assert start.metadata["custom_parameters"]["callscribeTracks"] == "both_tracks"
    big = struct.pack(">3h", 1, -2, 300)
    little = struct.pack("<3h", 1, -2, 300)
    assert codec.receive_text(media(big[:3], track="inbound", timestamp="0")) == [
        TrackAudio(0, little[:2], 0)]
    assert codec.receive_text(media(big[:1], track="outbound", timestamp="0")) == []
    assert codec.receive_text(media(big[3:], track="inbound", timestamp="20")) == [
        TrackAudio(0, little[2:], 320)]
    assert codec.receive_text(media(big[1:2], track="outbound_track", timestamp="20")) == [
        TrackAudio(1, little[:2], 320)]
    assert codec.receive_text(media(b"\x01", track="outbound", timestamp="40")) == []
    assert codec.flush() == b"\x01" and codec.flush() == b""


def test_pcma_is_decoded_and_gaps_come_from_the_timestamps() -> None:
    codec, start = started(start_frame("PCMA"))
    assert start.metadata["media_format"]["encoding"] == "PCMA"
    alaw = bytes([0xD5, 0x55, 0xAA, 0x2A])
    [first] = codec.receive_text(media(alaw, timestamp="1000"))
    assert first == TrackAudio(0, alaw_to_pcm16(alaw), 0)
    [later] = codec.receive_text(media(alaw, chunk="5", timestamp="1100"))
    assert isinstance(later, TrackAudio) and later.at_sample == 800  # 100 ms on
    [untimed] = codec.receive_text(media(alaw, chunk="6", timestamp=None, track=None))
    assert isinstance(untimed, TrackAudio) and untimed.at_sample == 804  # from the chunk


def test_layout_and_mode_come_from_start_then_custom_parameters_then_defaults() -> None:
    _, start = started(start_frame(callscribeTracks="outbound_track"))
    assert start.roles == ("assistant",)
    _, start = started(start_frame(), tracks="both_tracks", bidirectional=True)
    assert start.roles == ("other", "assistant") and start.metadata["bidirectional"] is True
    _, start = started(start_frame(callscribeBidirectional="false"), bidirectional=True)
    assert start.metadata["bidirectional"] is False
    frame = start_frame(callscribeTracks="inbound_track")
    frame["start"]["stream_track"] = "both_tracks"  # a field of start, were Telnyx to send one
    _, start = started(frame)
    assert start.channels == 2


def test_media_of_a_track_not_announced_is_ignored_and_says_what_to_set() -> None:
    codec, _ = started(start_frame())
    [ignored] = codec.receive_text(media(bytes(4), track="outbound"))
    assert isinstance(ignored, Ignored)
    assert ignored.reason.split(":")[0] == "track not announced"
    assert "CALLSCRIBE_TELNYX_TRACKS" in ignored.reason
    assert codec.receive_text(media(b"!!", track="inbound"))[0].__class__ is TrackAudio
    assert codec.receive_text('{"event":"media","media":{"payload":"***"}}') == [
        Ignored("media payload is not base64")]
    assert codec.receive_text('{"event":"media"}') == [
        Ignored("media event without a media object")]
    assert codec.receive_text('{"event":"dtmf","dtmf":{"digit":"x"}}')[0].__class__ is Ignored
    assert codec.receive_text('{"event":"mark"}') == [Ignored("mark event without a mark object")]
    assert codec.receive_text(fixture("start_docs.json")) == [Ignored("a second start event")]
    assert codec.receive_text('{"event":"nope"}') == [Ignored("unknown event 'nope'")]
    assert codec.receive_text("[]") == [Ignored("text frame is JSON list, not an object")]
    assert codec.receive_binary(b"x")[0].__class__ is Ignored


def test_media_formats() -> None:
    assert parse_media_format({}) == ("PCMU", 8000)
    assert parse_media_format({"media_format": {"encoding": "pcma"}}) == ("PCMA", 8000)
    for rate in (8000, 16000, 24000):
        assert parse_media_format({"media_format": {"encoding": "L16", "sample_rate": str(rate),
                                                    "channels": "1"}}) == ("L16", rate)
    for bad in ({"encoding": "G722"}, {"encoding": "OPUS", "sample_rate": 48000},
                {"encoding": "AMR-WB"}, {"encoding": "PCMU", "sample_rate": 16000},
                {"encoding": "L16", "sample_rate": 44100}, {"encoding": "PCMU", "channels": 2},
                {"encoding": "L16", "sample_rate": None}):
        with pytest.raises(UnsupportedAudio) as refused:
            parse_media_format({"media_format": bad})
        assert refused.value.close_code == 1003


def test_custom_parameters_and_error_shapes() -> None:
    assert parse_custom_parameters({"a": 1, "b": None}) == {"a": "1", "b": ""}
    assert parse_custom_parameters([{"name": "a", "value": "x"}, {"value": "y"}, 3]) == {"a": "x"}
    assert parse_custom_parameters("a=1") == {}
    assert error_reason({"event": "error", "error": {"code": 1, "message": "m"}}) == "1: m"
    assert error_reason({"event": "error", "title": "t"}) == "t"
    assert error_reason({"event": "error"}) == "error"


def test_bad_input_closes_with_documented_codes() -> None:
    with pytest.raises(ProtocolError) as caught:
        TelnyxCodec().receive_text("hello")
    assert caught.value.close_code == 1007
    with pytest.raises(ProtocolError) as caught:
        TelnyxCodec().receive_text(fixture("media_docs.json"))
    assert caught.value.close_code == 1008
    with pytest.raises(ProtocolError) as caught:
        TelnyxCodec().receive_text('{"event":"start","start":7}')
    assert caught.value.close_code == 1008
    with pytest.raises(UnsupportedAudio) as unsupported:
        TelnyxCodec().receive_text(json.dumps(start_frame("G722", 16000)))
    assert unsupported.value.close_code == 1003
    codec = TelnyxCodec()
    assert codec.receive_text('{"event":"dtmf","dtmf":{"digit":"1"}}') == [
        Ignored("'dtmf' before the start event")]


TELNYX_KEYS = ["event", "start", "media", "track", "payload", "timestamp", "chunk",
               "sequence_number", "stream_id", "media_format", "encoding", "sample_rate",
               "channels", "custom_parameters", "tracks", "stream_track", "dtmf", "digit",
               "mark", "name", "stop", "error", "code", "title", "detail", "call_control_id",
               "connected", "tags", "from", "to", "callscribeTracks",
               "callscribeBidirectional"]
TELNYX_EVENTS = ["connected", "start", "media", "dtmf", "mark", "error", "stop", "clear", None]
FORMATS = st.fixed_dictionaries({
    "encoding": st.sampled_from(["PCMU", "PCMA", "L16", "G722", "pcmu", "", 7]),
    "sample_rate": st.sampled_from([8000, 16000, 24000, "16000", 44100, None, "x"]),
    "channels": st.sampled_from([1, "1", 2, None])})
STARTS = st.fixed_dictionaries({
    "call_control_id": st.text(max_size=12), "media_format": FORMATS,
    "custom_parameters": st.one_of(
        st.dictionaries(st.sampled_from(["callscribeTracks", "callscribeBidirectional"]),
                        st.sampled_from(["both_tracks", "outbound", "rtp", "x", ""])),
        st.lists(st.fixed_dictionaries({"name": st.sampled_from(["callscribeTracks", "a"]),
                                        "value": st.sampled_from(["both_tracks", "x"])})),
        VALUES)}).map(lambda body: json.dumps({"event": "start", "start": body}))
MEDIA = st.fixed_dictionaries({
    "track": st.sampled_from(["inbound", "outbound", "both", "inbound_track", 3, None]),
    "chunk": st.one_of(st.none(), st.integers(-5, 10**6).map(str)),
    "timestamp": st.one_of(st.none(), st.integers(-5, 10**13).map(str), VALUES),
    "payload": st.one_of(st.binary(max_size=41).map(lambda b: base64.b64encode(b).decode()),
                         VALUES)}).map(lambda body: json.dumps({"event": "media", "media": body}))
FRAMES = st.one_of(
    st.binary(max_size=64), st.text(max_size=60), STARTS, MEDIA,
    st.dictionaries(st.sampled_from(TELNYX_KEYS), VALUES, max_size=5).map(json.dumps),
    st.tuples(st.sampled_from(TELNYX_EVENTS), st.dictionaries(
        st.sampled_from(TELNYX_KEYS), VALUES, max_size=4)).map(
        lambda pair: json.dumps({**pair[1], "event": pair[0]})))


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAMES, max_size=10), st.sampled_from(["inbound_track", "both_tracks"]))
def test_fuzz_never_raises_anything_but_protocol_errors(frames: list[str | bytes],
                                                        tracks: str) -> None:
    opening = [fixture("connected_docs.json"), fixture("start_l16_both_list.json")]
    feed(TelnyxCodec(tracks=tracks), [*opening, *frames])
    feed(TelnyxCodec(tracks=tracks), [fixture("start_docs.json"), *frames])
    feed(TelnyxCodec(tracks=tracks), frames)


# --------------------------------------------------------------------------- outbound


def test_renderers() -> None:
    assert json.loads(render_media(b"\x01\x02")) == {"event": "media",
                                                     "media": {"payload": "AQI="}}
    assert json.loads(render_mark("my label")) == {"event": "mark", "mark": {"name": "my label"}}
    assert json.loads(render_clear()) == {"event": "clear"}
    with pytest.raises(ValueError):
        render_mark("")


def payloads(frames: list[str]) -> list[bytes]:
    return [base64.b64decode(json.loads(f)["media"]["payload"]) for f in frames]


def test_nothing_is_sent_unless_the_stream_is_rtp_bidirectional() -> None:
    _, start = started(start_frame())
    player = TelnyxPlayer.for_start(start)
    for attempt in (lambda: player.play(bytes(320)), lambda: player.mark("m"), player.clear):
        with pytest.raises(ControlUnsupported, match="CALLSCRIBE_TELNYX_BIDIRECTIONAL"):
            attempt()


def test_play_is_in_the_stream_format_in_1_s_to_20_ms_messages() -> None:
    _, start = started(start_frame(callscribeBidirectional="true"))
    player = TelnyxPlayer.for_start(start)
    assert (player.encoding, player.rate) == ("PCMU", 8000)
    assert [len(p) for p in payloads(player.play(bytes(2 * 12000)))] == [8000, 4000]
    assert payloads(player.play(bytes(2 * 40))) == [b"\xff" * 160]  # 5 ms padded to 20 ms
    _, start = started(start_frame("PCMA", callscribeBidirectional="true"))
    assert payloads(TelnyxPlayer.for_start(start).play(bytes(320))) == [b"\xd5" * 160]
    _, start = started(start_frame("L16", 16000, callscribeBidirectional="true"))
    player = TelnyxPlayer.for_start(start)
    [payload] = payloads(player.play(struct.pack("<2h", 1, -2) + bytes(636)))
    assert payload[:4] == struct.pack(">2h", 1, -2) and len(payload) == 640


def test_a_mark_sent_back_after_clear_was_cleared() -> None:
    player = TelnyxPlayer(encoding="PCMU", rate=8000, bidirectional=True)
    player.mark("a")
    assert player.on_reply(MarkEvent("a", "playout")) == MarkEvent("a", "playout")
    player.mark("b")
    player.mark("c")
    assert player.pending == ("b", "c")
    assert json.loads(player.clear()) == {"event": "clear"}
    assert player.pending == ()
    assert player.on_reply(MarkEvent("b", "playout")) == MarkEvent("b", "cleared")
    assert player.on_reply(MarkEvent("c", "playout")) == MarkEvent("c", "cleared")
    assert player.on_reply(MarkEvent("c", "playout")) == MarkEvent("c", "playout")
