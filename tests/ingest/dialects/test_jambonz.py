"""The jambonz ``listen`` codec, fed literal frames and the recorded-style fixtures."""

from __future__ import annotations

import base64
import json
import struct
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.jambonz import (
    SUBPROTOCOLS,
    SUPPORTED_RATES,
    Audio,
    CallStart,
    DtmfPressed,
    Ignored,
    JambonzCodec,
    MarkEvent,
    PlayDone,
    render_clear_marks,
    render_disconnect,
    render_kill_audio,
    render_mark,
    render_play_audio,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "jambonz"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def started(meta: str | dict[str, object]) -> tuple[JambonzCodec, CallStart]:
    codec = JambonzCodec()
    text = meta if isinstance(meta, str) else json.dumps(meta)
    [start] = codec.receive_text(text)
    assert isinstance(start, CallStart)
    assert codec.started and codec.start is start
    return codec, start


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def collect(codec: JambonzCodec, frames: list[bytes]) -> tuple[bytes, ...]:
    """Concatenate every channel over all frames' Audio events."""
    out: list[bytearray] | None = None
    for frame in frames:
        for event in codec.receive_binary(frame):
            assert isinstance(event, Audio)
            assert len({len(c) for c in event.channels}) == 1
            assert all(len(c) % 2 == 0 and c for c in event.channels)
            out = out or [bytearray() for _ in event.channels]
            for acc, chan in zip(out, event.channels, strict=True):
                acc += chan
    return tuple(bytes(acc) for acc in out or [])


# --------------------------------------------------------------------------- metadata


def test_subprotocols_accept_both_names() -> None:
    assert SUBPROTOCOLS == ("audio.jambonz.org", "audio.drachtio.org")


def test_mono_8k_fixture() -> None:
    _, start = started(fixture("metadata_mono_8k.json"))
    assert start.call_sid == "b5e39996-bd2f-4bda-b928-355147186a2a"
    assert (start.from_, start.to, start.direction) == ("+15083084809", "+15083728299", "inbound")
    assert (start.rate, start.mix, start.channels, start.roles) == (8000, "mono", 1, ("other",))
    assert start.metadata["clientId"] == "12udih"  # user metadata merged at top level
    assert start.metadata["sipStatus"] == 200
    assert start.truncated is False


def test_stereo_16k_fixture() -> None:
    _, start = started(fixture("metadata_stereo_16k.json"))
    assert (start.rate, start.mix, start.channels) == (16000, "stereo", 2)
    assert start.roles == ("other", "assistant")
    assert start.metadata["customerData"] == {"crmId": "ACME-4711", "queue": "billing"}
    assert start.metadata["agentId"] == "agent-17"


def test_dial_nested_fixture_with_raw_callinfo_names() -> None:
    _, start = started(fixture("metadata_dial_nested.json"))
    assert start.rate == 8000  # numeric string accepted
    assert (start.direction, start.mix, start.channels) == ("outbound", "stereo", 2)
    assert start.call_sid == "7e0b6c2d-51a4-4f8e-9d3b-8c1a2e4f6b70"
    assert start.metadata["parentCallSid"] == "b5e39996-bd2f-4bda-b928-355147186a2a"
    assert start.metadata["localSipAddress"] == "10.0.150.88:5070"
    assert start.metadata["callerName"] == "Alice"


def test_defaults_when_rate_and_mix_are_absent() -> None:
    _, start = started({"callSid": "abc"})
    assert (start.rate, start.mix, start.channels, start.roles) == (8000, "mono", 1, ("other",))
    assert (start.from_, start.to, start.direction) == ("", "", "")


def test_null_rate_and_mix_mean_the_defaults() -> None:
    _, start = started({"sampleRate": None, "mixType": None})
    assert (start.rate, start.mix) == (8000, "mono")


def test_codec_defaults_are_used() -> None:
    codec = JambonzCodec(default_rate=16000, default_mix="stereo")
    [start] = codec.receive_text('{"callSid":"abc"}')
    assert isinstance(start, CallStart)
    assert (start.rate, start.mix, start.channels) == (16000, "stereo", 2)


def test_mixed_is_one_channel() -> None:
    _, start = started({"mixType": "mixed"})
    assert (start.channels, start.roles) == (1, ("other",))


@pytest.mark.parametrize("rate", sorted(SUPPORTED_RATES))
@pytest.mark.parametrize("form", [int, str])
def test_every_supported_rate(rate: int, form: type) -> None:
    _, start = started({"sampleRate": form(rate), "mixType": "mono"})
    assert start.rate == rate


@pytest.mark.parametrize("rate", [11025, 44100, 0, "fast", "", True, 8000.5, [8000]])
def test_rejected_rate_closes_1003(rate: object) -> None:
    codec = JambonzCodec()
    with pytest.raises(UnsupportedAudio) as info:
        codec.receive_text(json.dumps({"sampleRate": rate}))
    assert info.value.close_code == 1003
    assert repr(rate) in str(info.value) and "8000, 16000, 24000, 32000, 48000, 64000" in str(
        info.value
    )
    assert not codec.started


def test_unknown_mix_type_closes_1003() -> None:
    with pytest.raises(UnsupportedAudio) as info:
        JambonzCodec().receive_text('{"sampleRate":8000,"mixType":"quad"}')
    assert info.value.close_code == 1003
    assert "quad" in str(info.value)


@pytest.mark.parametrize("text", ["hello", '{"sampleRate":8000', "", "   ", "[" * 9000])
def test_short_non_json_first_frame_closes_1007(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        JambonzCodec().receive_text(text)
    assert info.value.close_code == 1007


@pytest.mark.parametrize("text", ["[1,2]", '"metadata"', "8000", "null"])
def test_first_frame_not_an_object_closes_1007(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        JambonzCodec().receive_text(text)
    assert info.value.close_code == 1007


def test_truncated_metadata_is_salvaged() -> None:
    text = fixture("metadata_truncated.txt")
    assert len(text.encode()) == 8192
    with pytest.raises(ValueError):
        json.loads(text)
    _, start = started(text)
    assert start.truncated is True
    assert (start.rate, start.mix, start.channels) == (16000, "stereo", 2)
    assert start.call_sid == "0c6f1a2b-3d4e-4f50-8a9b-c0d1e2f3a4b5"
    assert (start.from_, start.to, start.direction) == ("+15083084809", "+15083728299", "inbound")
    assert start.metadata["callId"] == "2a7d9e11-0bc7-123b-09b5-12e962f3039b"
    assert start.metadata["duration"] == 12
    assert "customerData" not in start.metadata  # the member that was cut off
    assert "clientId" not in start.metadata  # lost beyond the cut


def test_truncation_inside_a_number_drops_that_member() -> None:
    text = '{"sampleRate":16000,"callSid":"x","pad":"' + "a" * 8100 + '","duration":123'
    _, start = started(text)
    assert start.truncated and start.metadata["callSid"] == "x"
    assert "duration" not in start.metadata  # 123 may have been 1234...


def test_long_garbage_first_frame_closes_1007() -> None:
    with pytest.raises(ProtocolError) as info:
        JambonzCodec().receive_text("x" * 9000)
    assert info.value.close_code == 1007


# --------------------------------------------------------------------------- audio


def test_binary_before_metadata_closes_1008() -> None:
    codec = JambonzCodec()
    with pytest.raises(ProtocolError) as info:
        codec.receive_binary(pcm(1, 2))
    assert info.value.close_code == 1008
    assert "metadata" in str(info.value)


def test_mono_frame_passes_through() -> None:
    codec, _ = started(fixture("metadata_mono_8k.json"))
    frame = pcm(*range(-160, 160))  # 20 ms at 8 kHz = 320 bytes
    assert codec.receive_binary(frame) == [Audio((frame,))]


def test_stereo_deinterleave_is_exact() -> None:
    codec, _ = started(fixture("metadata_stereo_16k.json"))
    frame = pcm(1, -1, 32767, -32768, 0, 256, -2, 2)
    assert codec.receive_binary(frame) == [Audio((pcm(1, 32767, 0, -2), pcm(-1, -32768, 256, 2)))]


def test_zero_length_frame_is_ignored() -> None:
    codec, _ = started({"mixType": "stereo"})
    assert codec.receive_binary(b"") == []
    assert codec.receive_binary(b"\x01") == []
    assert codec.receive_binary(b"") == []
    assert codec.flush() == b"\x01"


def test_mono_odd_byte_counts_carry_across_frames() -> None:
    codec, _ = started({"sampleRate": 8000})
    stream = pcm(100, -200, 300, -400)
    assert codec.receive_binary(stream[:3]) == [Audio((stream[:2],))]
    assert codec.receive_binary(stream[3:4]) == [Audio((stream[2:4],))]
    assert codec.receive_binary(stream[4:7]) == [Audio((stream[4:6],))]
    assert codec.flush() == stream[6:7]
    assert codec.flush() == b""
    assert codec.receive_binary(stream[7:]) == []  # carry was reset: one byte, no sample


def test_stereo_partial_sample_frames_carry_across_frames() -> None:
    codec, _ = started({"mixType": "stereo"})
    stream = pcm(1, 2, 3, 4, 5, 6)
    assert codec.receive_binary(stream[:3]) == []
    assert codec.receive_binary(stream[3:5]) == [Audio((pcm(1), pcm(2)))]
    assert codec.receive_binary(stream[5:11]) == [Audio((pcm(3), pcm(4)))]
    assert codec.receive_binary(stream[11:]) == [Audio((pcm(5), pcm(6)))]
    assert codec.flush() == b""


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(st.integers(-32768, 32767), min_size=2, max_size=400).filter(
        lambda s: len(s) % 2 == 0
    ),
    cuts=st.lists(st.integers(0, 1600), max_size=12),
)
def test_any_split_of_a_stereo_stream_deinterleaves_the_same(
    samples: list[int], cuts: list[int]
) -> None:
    stream = pcm(*samples)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    frames = [stream[a:b] for a, b in pairwise(bounds)]
    split, _ = started({"mixType": "stereo"})
    whole, _ = started({"mixType": "stereo"})
    expected = (pcm(*samples[0::2]), pcm(*samples[1::2]))
    assert collect(whole, [stream]) == expected
    assert collect(split, frames) == expected
    assert split.flush() == b""


# --------------------------------------------------------------------------- notices


def test_dtmf_fixture_with_string_duration() -> None:
    codec, _ = started({})
    assert codec.receive_text(fixture("dtmf.json")) == [DtmfPressed("2", 200)]


@pytest.mark.parametrize(
    ("duration", "ms"), [(1600, 200), (800.0, 100), ("abc", None), (None, None), (-8, None)]
)
def test_dtmf_duration_forms(duration: object, ms: int | None) -> None:
    codec, _ = started({})
    frame = json.dumps({"event": "dtmf", "dtmf": "#", "duration": duration})
    assert codec.receive_text(frame) == [DtmfPressed("#", ms)]


def test_dtmf_without_digit_is_ignored() -> None:
    codec, _ = started({})
    [event] = codec.receive_text('{"event":"dtmf","duration":"1600"}')
    assert isinstance(event, Ignored)


def test_play_done_fixture() -> None:
    codec, _ = started({})
    [event] = codec.receive_text(fixture("playdone.json"))
    assert event == PlayDone(
        "greeting-1",
        {
            "id": "greeting-1",
            "playbackSeconds": "3",
            "playbackMilliseconds": "3020",
            "playbackLastOffsetPos": "24160",
        },
    )


def test_bare_play_done_from_the_docs() -> None:
    codec, _ = started({})
    assert codec.receive_text('{"type":"playDone"}') == [PlayDone(None, {})]


def test_mark_fixture_and_cleared() -> None:
    codec, _ = started({})
    assert codec.receive_text(fixture("mark_playout.json")) == [MarkEvent("my-mark-1", "playout")]
    cleared = '{"type":"mark","data":{"name":"my-mark-1","event":"cleared"}}'
    assert codec.receive_text(cleared) == [MarkEvent("my-mark-1", "cleared")]


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"transcription","data":{}}',
        "not json at all",
        "[1,2,3]",
        "[" * 100_000,
        '{"type":"mark","data":{"event":"playout"}}',
        fixture("metadata_mono_8k.json"),  # a second metadata frame is nothing special
    ],
)
def test_other_text_is_ignored_never_raised(text: str) -> None:
    codec, start = started({})
    [event] = codec.receive_text(text)
    assert isinstance(event, Ignored) and event.reason
    assert codec.start is start


# --------------------------------------------------------------------------- renderers


def test_play_audio_raw_has_numeric_rate_and_base64_round_trips() -> None:
    audio = pcm(0, 1, -1, 32767)
    msg = json.loads(
        render_play_audio(audio, content_type="raw", sample_rate=16000, id="p1", queue_play=True)
    )
    assert msg["type"] == "playAudio"
    data = msg["data"]
    assert data["sampleRate"] == 16000 and type(data["sampleRate"]) is int
    assert data["audioContentType"] == "raw"
    assert base64.b64decode(data["audioContent"]) == audio
    assert (data["id"], data["queuePlay"]) == ("p1", True)


def test_play_audio_wav_without_rate() -> None:
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt "
    data = json.loads(render_play_audio(wav, content_type="wav", sample_rate=None))["data"]
    assert base64.b64decode(data["audioContent"]) == wav
    assert "sampleRate" not in data and "id" not in data and "queuePlay" not in data


@pytest.mark.parametrize("rate", [None, 44100, 0])
def test_play_audio_raw_rejects_bad_rate(rate: int | None) -> None:
    with pytest.raises(ValueError, match="sample"):
        render_play_audio(pcm(1), content_type="raw", sample_rate=rate)


def test_play_audio_raw_rejects_half_samples() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        render_play_audio(b"\x01\x02\x03", content_type="raw", sample_rate=8000)


def test_commands() -> None:
    assert json.loads(render_kill_audio()) == {"type": "killAudio"}
    assert json.loads(render_disconnect()) == {"type": "disconnect"}
    assert json.loads(render_mark("m-1")) == {"type": "mark", "data": {"name": "m-1"}}
    assert json.loads(render_clear_marks()) == {"type": "clearMarks"}
    with pytest.raises(ValueError, match="name"):
        render_mark("")
