"""The Twilio Media Streams codec, fed the docs' frames and the public capture's frames
(tests/fixtures/twilio); outbound renderers, the mark tracker, and X-Twilio-Signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ingest.dialects.fuzz import feed, provider_frames
from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.audio import mulaw_to_pcm16
from workers.ingest.dialects.events import (
    CallStart,
    DtmfPressed,
    Ignored,
    MarkEvent,
    Stop,
    TrackAudio,
)
from workers.ingest.dialects.twilio import (
    TwilioCodec,
    TwilioPlayer,
    render_clear,
    render_mark,
    render_media,
    signature,
    signature_ok,
    url_variants,
)
from workers.ingest.errors import ControlUnsupported

FIXTURES = Path(__file__).parents[2] / "fixtures" / "twilio"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def started(start: str | dict[str, Any], **kwargs: Any) -> tuple[TwilioCodec, CallStart]:
    codec = TwilioCodec(**kwargs)
    assert codec.receive_text(fixture("connected_docs.json")) == []
    [event] = codec.receive_text(start if isinstance(start, str) else json.dumps(start))
    assert isinstance(event, CallStart)
    return codec, event


def start_frame(tracks: Any = ("inbound",), **custom: str) -> dict[str, Any]:
    return {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": {
        "accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1", "tracks": list(tracks),
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": custom}}


def media(payload: bytes, *, track: str = "inbound", chunk: Any = "1",
          timestamp: Any = "0") -> str:
    return json.dumps({"event": "media", "sequenceNumber": "2", "streamSid": "MZ1", "media": {
        "track": track, "chunk": chunk, "timestamp": timestamp,
        "payload": base64.b64encode(payload).decode()}})


# --------------------------------------------------------------------------- docs + capture


def test_docs_start_and_notices() -> None:
    codec, start = started(fixture("start_docs.json"))
    assert start.call_id == "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    assert (start.rate, start.mix, start.channels, start.roles) == (8000, "mono", 1, ("other",))
    assert start.metadata["customParameters"] == {"FirstName": "Jane", "LastName": "Doe",
                                                  "RemoteParty": "Bob"}
    assert start.metadata["streamSid"] == "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    assert start.metadata["connected"] == {"protocol": "Call", "version": "1.0.0"}
    assert start.metadata["bidirectional"] is False  # the default: never send by accident
    # The docs print the payload truncated: skipped, not fatal.
    assert codec.receive_text(fixture("media_docs.json")) == [
        Ignored("media payload is not base64")]
    assert codec.receive_text(fixture("dtmf_docs.json")) == [DtmfPressed("1", None)]
    assert codec.receive_text(fixture("mark_docs.json")) == [MarkEvent("my label", "playout")]
    assert codec.receive_text(fixture("stop_docs.json")) == [Stop("stop")]


def test_capture_frames() -> None:
    """The public session log: a UUID streamSid (not MZ…), a 160-byte μ-law payload whose
    first chunk says timestamp 52 (so 52 ms of silence precede it on the timeline)."""
    codec, start = started(fixture("capture_start.json"))
    assert start.metadata["streamSid"] == "9e7ee906-377b-408f-a852-eebfb834422a"
    assert start.call_id == "CA3c95a2a6bba5fde93a5dea01e388e8fb"
    assert start.metadata["customParameters"] == {
        "aCutomParameter": "aCustomValue that was set in TwiML"}
    [audio] = codec.receive_text(fixture("capture_media.json"))
    payload = base64.b64decode(json.loads(fixture("capture_media.json"))["media"]["payload"])
    assert audio == TrackAudio(0, mulaw_to_pcm16(payload), 52 * 8)
    assert len(audio.pcm) == 320  # 20 ms at 8 kHz
    assert codec.receive_text(fixture("capture_mark.json")) == [
        MarkEvent("Repeat message 0", "playout")]


def test_both_tracks_are_two_channels_and_never_bidirectional() -> None:
    codec, start = started(start_frame(("inbound", "outbound"), callscribeBidirectional="true"))
    assert (start.mix, start.roles) == ("tracks", ("other", "assistant"))
    assert start.metadata["bidirectional"] is False
    [out] = codec.receive_text(media(b"\xff" * 160, track="outbound", timestamp="20"))
    [inb] = codec.receive_text(media(b"\xff" * 160, track="inbound_track", timestamp="20"))
    assert isinstance(out, TrackAudio) and isinstance(inb, TrackAudio)
    assert (out.channel, inb.channel) == (1, 0)
    assert out.at_sample == inb.at_sample == 160


def test_bidirectional_from_the_setting_or_a_custom_parameter() -> None:
    assert started(start_frame(), bidirectional=True)[1].metadata["bidirectional"] is True
    assert started(start_frame(callscribeBidirectional="TRUE"))[1].metadata["bidirectional"]
    assert not started(start_frame(callscribeBidirectional="false"),
                       bidirectional=True)[1].metadata["bidirectional"]


def test_parties_come_from_custom_parameters_when_given() -> None:
    _, start = started(start_frame(From="+15550001111", to="+15550002222"))
    assert (start.from_, start.to) == ("+15550001111", "+15550002222")


def test_numbers_are_accepted_where_twilio_sends_strings() -> None:
    codec, _ = started(start_frame())
    assert codec.receive_text(media(b"\xff" * 8, chunk=1, timestamp=40)) == [
        TrackAudio(0, bytes(16), 320)]


@pytest.mark.parametrize("media_format", [
    {"encoding": "audio/x-l16", "sampleRate": 8000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
])
def test_formats_twilio_never_sends_close_1003(media_format: dict[str, Any]) -> None:
    frame = start_frame()
    frame["start"]["mediaFormat"] = media_format
    with pytest.raises(UnsupportedAudio):
        started(frame)


def test_bad_input() -> None:
    with pytest.raises(ProtocolError) as first:
        TwilioCodec().receive_text("not json")
    assert first.value.close_code == 1007
    with pytest.raises(ProtocolError) as early:
        TwilioCodec().receive_text(media(bytes(2)))
    assert early.value.close_code == 1008
    codec, _ = started(start_frame())
    assert codec.receive_text(media(bytes(2), track="outbound")) == [
        Ignored("media for track 'outbound', not in start.tracks")]
    assert codec.receive_text('{"event":"dtmf","dtmf":{"digit":"x"}}')[0].__class__ is Ignored
    assert codec.receive_text('{"event":"mark"}') == [Ignored("mark event without a mark object")]
    assert codec.receive_text('{"event":"nope"}') == [Ignored("unknown event 'nope'")]
    assert codec.receive_text("[]") == [Ignored("text frame is JSON list, not an object")]
    assert codec.receive_binary(b"x")[0].__class__ is Ignored


@settings(max_examples=200, deadline=None)
@given(st.lists(provider_frames(), max_size=8), st.booleans())
def test_fuzz_never_raises_anything_but_protocol_errors(frames: list[str | bytes],
                                                        both: bool) -> None:
    opening = start_frame(("inbound", "outbound") if both else ("inbound",))
    feed(TwilioCodec(), [fixture("connected_docs.json"), json.dumps(opening), *frames])
    feed(TwilioCodec(), frames)


# --------------------------------------------------------------------------- outbound


def test_renderers_match_the_docs() -> None:
    assert json.loads(render_media("MZ1", b"\x01\x02")) == {
        "event": "media", "streamSid": "MZ1", "media": {"payload": "AQI="}}
    assert json.loads(render_mark("MZ1", "my label")) == {
        "event": "mark", "streamSid": "MZ1", "mark": {"name": "my label"}}
    assert json.loads(render_clear("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


def test_nothing_is_ever_sent_on_a_unidirectional_stream() -> None:
    _, start = started(start_frame())
    player = TwilioPlayer.for_start(start)
    for attempt in (lambda: player.play(bytes(2)), lambda: player.mark("m"), player.clear):
        with pytest.raises(ControlUnsupported):
            attempt()


def test_a_mark_echoed_after_clear_was_cleared() -> None:
    _, start = started(start_frame(), bidirectional=True)
    player = TwilioPlayer.for_start(start)
    frames = player.play(bytes(2 * 12_000))  # 1.5 s → two media messages
    assert len(frames) == 2
    assert len(base64.b64decode(json.loads(frames[0])["media"]["payload"])) == 8000
    player.mark("one")
    assert player.on_reply(MarkEvent("one", "playout")) == MarkEvent("one", "playout")
    player.mark("two")
    player.mark("three")
    assert json.loads(player.clear())["event"] == "clear"
    assert player.on_reply(MarkEvent("three", "playout")) == MarkEvent("three", "cleared")
    assert player.on_reply(MarkEvent("two", "playout")) == MarkEvent("two", "cleared")
    assert player.pending == ()


# --------------------------------------------------------------------------- signature


def expected(token: str, data: str) -> str:
    """HMAC-SHA1 base64, written out here (not via the module)."""
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
                            ).decode()


def test_signature_vectors() -> None:
    token, url = "12345", "wss://calls.example.com/twilio"
    assert signature(token, url) == expected(token, url)
    # POST parameters are appended sorted by name, name then value (for webhooks).
    assert signature(token, "https://x/y", {"b": "2", "a": "1"}) == expected(
        token, "https://x/ya1b2")
    assert signature_ok(token, [url], expected(token, url))
    assert not signature_ok(token, [url], expected("other", url))
    assert not signature_ok(token, [url], None)


def test_signature_with_or_without_the_default_port() -> None:
    token = "t"
    assert signature_ok(token, ["wss://h.example/twilio"],
                        expected(token, "wss://h.example:443/twilio"))
    assert signature_ok(token, ["wss://h.example:443/twilio"],
                        expected(token, "wss://h.example/twilio"))
    assert url_variants("wss://h:8443/twilio") == ["wss://h:8443/twilio"]
    assert url_variants("wss://h:bad/twilio") == ["wss://h:bad/twilio"]
