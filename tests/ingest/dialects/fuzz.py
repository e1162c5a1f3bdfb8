"""Hypothesis strategies shared by the codec fuzz tests: frames that look like a provider's
(its vocabulary of keys and values, valid and not) mixed with arbitrary text and bytes."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import strategies as st

from workers.errors import ProtocolError
from workers.ingest.dialects.events import Audio, CallStart, Codec, TrackAudio

KEYS = ["event", "start", "media", "track", "tracks", "payload", "timestamp", "chunk",
        "sequenceNumber", "mediaFormat", "encoding", "sampleRate", "channels", "extra_headers",
        "dtmf", "digit", "name", "mark", "stop", "streamId", "streamSid", "callId", "callSid",
        "accountSid", "accountId", "customParameters", "reason", "contentType", "type", "data"]
EVENTS = ["start", "media", "dtmf", "mark", "stop", "connected", "playedStream", "played",
          "clearedAudio", "playFailed", "error", "muteStream", None, 7, ""]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["inbound", "outbound", "both", "inbound_track", "audio/x-mulaw",
                     "audio/x-l16", "audio/x-l16;rate=16000", "audio/x-mulaw;rate=8000",
                     "8000", "16000", "24000", "1705312200000", "52", "9" * 40, "-1",
                     "a=1;b=2", "x=1,y=2", '{"k": "v"}', "{", "AAAA", "AAA", "////",
                     base64.b64encode(bytes(range(7))).decode()]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)),
    max_leaves=20,
)


@st.composite
def provider_frames(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(st.text(max_size=80))
    frame: dict[str, Any] = draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
    if kind < 8:
        frame["event"] = draw(st.sampled_from(EVENTS))
    return json.dumps(frame)


def feed(codec: Codec, frames: list[str | bytes]) -> None:
    """Feed frames as a session would: a ProtocolError ends the connection (and the test's
    run); anything else raised fails the test. Events must be well-formed."""
    for frame in frames:
        try:
            events = (codec.receive_text(frame) if isinstance(frame, str)
                      else codec.receive_binary(frame))
        except ProtocolError:
            return
        for event in events:
            if isinstance(event, CallStart):
                assert event.channels == len(event.roles) >= 1
                assert event.rate > 0
            if isinstance(event, Audio):
                assert len({len(c) for c in event.channels}) == 1
                assert all(len(c) % 2 == 0 for c in event.channels)
            if isinstance(event, TrackAudio):
                assert codec.start is not None and 0 <= event.channel < codec.start.channels
                assert len(event.pcm) % 2 == 0
                assert event.at_sample is None or event.at_sample >= 0
    codec.flush()
