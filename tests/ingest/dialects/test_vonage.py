"""The Vonage Voice API WebSocket codec fed frames written from Vonage's docs
(tests/fixtures/vonage): the connected message, L16 audio with odd bytes carried, DTMF,
cleared/notify replies, outbound 20 ms framing; fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ingest.dialects.fuzz import VALUES
from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.events import (
    Audio,
    CallStart,
    Cleared,
    DtmfPressed,
    Ignored,
    MarkEvent,
)
from workers.ingest.dialects.vonage import (
    VonageCodec,
    frames,
    parse_content_type,
    render_clear,
    render_notify,
)
from workers.ingest.providers.base import PlayPrompt
from workers.ingest.providers.vonage import VonagePlayer

FIXTURES = Path(__file__).parents[2] / "fixtures" / "vonage"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_connected_message_starts_the_call_with_its_headers() -> None:
    codec = VonageCodec()
    [start] = codec.receive_text(fixture("connected_docs.json"))
    assert isinstance(start, CallStart)
    assert (start.rate, start.mix, start.channels, start.roles) == (16000, "mono", 1, ("other",))
    assert start.metadata["prop1"] == "value1" and start.call_id == ""
    codec = VonageCodec()
    [start] = codec.receive_text(fixture("connected_8k_headers.json"))
    assert isinstance(start, CallStart)
    assert (start.call_id, start.from_, start.to, start.rate) == (
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "447700900000", "447700900001", 8000)


def test_audio_and_events() -> None:
    codec = VonageCodec()
    codec.receive_text(fixture("connected_docs.json"))
    assert codec.receive_binary(b"\x01\x02\x03") == [Audio((b"\x01\x02",))]
    assert codec.receive_binary(b"\x04") == [Audio((b"\x03\x04",))]
    assert codec.receive_binary(b"\x05") == [] and codec.flush() == b"\x05"
    assert codec.receive_text(fixture("dtmf_docs.json")) == [DtmfPressed("5", 260)]
    assert codec.receive_text(fixture("cleared_docs.json")) == [Cleared()]
    assert codec.receive_text(fixture("notify_docs.json")) == [MarkEvent("prompt-1", "playout")]
    assert codec.receive_text('{"event":"websocket:nope"}') == [
        Ignored("unknown event 'websocket:nope'")]
    assert codec.receive_text("[]") == [Ignored("text frame is not a JSON object")]


def test_content_types() -> None:
    assert [parse_content_type(f"audio/l16;rate={r}") for r in (8000, 16000, 24000)] == [
        8000, 16000, 24000]
    assert parse_content_type(None) == 16000 and parse_content_type("Audio/L16; rate=8000") == 8000
    for bad in ("audio/l16;rate=44100", "audio/pcmu", "audio/l16;rate=x", 7):
        with pytest.raises(UnsupportedAudio):
            parse_content_type(bad)


def test_bad_input_closes_with_documented_codes() -> None:
    with pytest.raises(ProtocolError) as caught:
        VonageCodec().receive_binary(b"\x00\x00")
    assert caught.value.close_code == 1008
    with pytest.raises(ProtocolError) as caught:
        VonageCodec().receive_text("hello")
    assert caught.value.close_code == 1007
    with pytest.raises(UnsupportedAudio) as caught:
        VonageCodec().receive_text('{"event":"websocket:connected","content-type":"audio/x"}')
    assert caught.value.close_code == 1003


def test_outbound_is_exact_20_ms_frames_and_notify_tracks_playout() -> None:
    assert [len(f) for f in frames(bytes(1000), 16000)] == [640, 640]
    assert frames(bytes(700), 8000)[-1] == bytes(380).ljust(320, b"\x00")[:320]
    assert json.loads(render_clear()) == {"action": "clear"}
    assert json.loads(render_notify("p")) == {"action": "notify", "payload": {"name": "p"}}
    start = VonageCodec().receive_text(fixture("connected_8k_headers.json"))[0]
    assert isinstance(start, CallStart)
    player = VonagePlayer(8000)
    out = player.play_frames(PlayPrompt(bytes(3200), 16000, "p1"), start)
    assert [len(f) for f in out[:-1]] == [320] * 5 and json.loads(out[-1])["action"] == "notify"
    assert player.pending == ["p1"]
    assert player.on_reply(MarkEvent("p1", "playout")) == "notify p1 played"
    assert player.pending == [] and player.stop_frames() == [render_clear()]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=64), st.text(max_size=60),
    st.dictionaries(st.sampled_from(["event", "content-type", "digit", "duration", "payload",
                                     "uuid", "name"]), VALUES, max_size=5).map(json.dumps),
    st.sampled_from(["websocket:dtmf", "websocket:notify", "websocket:cleared",
                     "websocket:connected", "websocket:error"]).map(
        lambda e: json.dumps({"event": e}))), max_size=8))
def test_fuzz_never_raises_anything_but_protocol_errors(frames_: list[str | bytes]) -> None:
    for opening in ([fixture("connected_docs.json")], []):
        codec = VonageCodec()
        try:
            for frame in [*opening, *frames_]:
                events = (codec.receive_text(frame) if isinstance(frame, str)
                          else codec.receive_binary(frame))
                for event in events:
                    if isinstance(event, Audio):
                        assert len(event.channels) == 1 and len(event.channels[0]) % 2 == 0
        except ProtocolError:
            pass
