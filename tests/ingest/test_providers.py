"""Plivo and Twilio calls through the real ingest server and broker, played by the
simulators: tracks as channels with their roles, gaps filled from the provider's clock,
metadata, DTMF, signatures, and bad input closed with the documented codes."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets

import numpy as np
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import FIXTURES, RunningStack, seconds
from tests.ingest.conftest import PLIVO_TOKEN, TWILIO_TOKEN, ProviderRig
from tests.ingest.helpers import assert_contiguous, audio_of, call_events
from workers.ingest.dialects.audio import mulaw_to_pcm16, pcm16_to_mulaw
from workers.simulate.plivo import simulate_plivo
from workers.simulate.tracks import load_tracks
from workers.simulate.twilio import simulate_twilio

STEREO = FIXTURES / "speech" / "call_stereo_8k.wav"


def counted(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def test_plivo_two_tracks_with_lost_chunks_headers_and_dtmf(rig: ProviderRig) -> None:
    call_id = f"plivo-{secrets.token_hex(4)}"
    call = await simulate_plivo(rig.ws_base + "/plivo", STEREO, tracks="both",
                                content_type="audio/x-l16;rate=16000", call_id=call_id,
                                extra_headers="userId=12345;sessionId=abc-xyz",
                                auth_token=PLIVO_TOKEN, drop_chunks={10, 11},
                                dtmf=[(1.0, "7")], realtime=False)
    assert call.close_code == 1000
    topics = rig.worker.topics
    chunks = await audio_of(rig.settings.bootstrap, topics, call_id, 2)
    audio = assert_contiguous(chunks, 2)
    sent = load_tracks(STEREO, rate=16000, tracks=("inbound", "outbound"))
    for channel, track in enumerate(("inbound", "outbound")):
        role = "other" if track == "inbound" else "assistant"
        assert {c.role for c in chunks if c.channel == channel} == {role}
        assert {c.rate for c in chunks} == {16000}
        # Chunks 10 and 11 (20 ms each, from 180 ms) never arrived: silence in their place,
        # so everything after them is where the provider's clock says.
        gap = slice(2 * 9 * 320, 2 * 11 * 320)
        expected = bytearray(sent[track])
        expected[gap] = bytes(gap.stop - gap.start)
        assert audio[channel] == bytes(expected)
    events = await call_events(rig.settings.bootstrap, topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "dtmf", "call.ended"]
    started = events[0]
    assert (started["provider"], started["mix"], started["roles"]) == (
        "plivo", "tracks", ["other", "assistant"])
    assert started["metadata"]["extraHeaders"] == {"userId": "12345", "sessionId": "abc-xyz"}
    assert started["metadata"]["streamId"] == call.stream_id
    assert events[1]["digit"] == "7" and events[1]["tMs"] == 1000
    assert events[2]["reason"] == "closed"


async def test_twilio_two_tracks_mulaw(rig: ProviderRig) -> None:
    call_id = "CA" + secrets.token_hex(16)
    call = await simulate_twilio(rig.ws_base + "/twilio", STEREO, tracks="both",
                                 call_sid=call_id, auth_token=TWILIO_TOKEN, realtime=False,
                                 custom_parameters={"From": "+15083084809",
                                                    "callscribeVocabulary": "Quorvo, Omnira"})
    assert call.close_code == 1000
    assert call.received == []  # a unidirectional stream: nothing is ever sent to Twilio
    topics = rig.worker.topics
    audio = assert_contiguous(await audio_of(rig.settings.bootstrap, topics, call_id, 2), 2)
    sent = load_tracks(STEREO, rate=8000, tracks=("inbound", "outbound"))
    for channel, track in enumerate(("inbound", "outbound")):
        assert audio[channel] == mulaw_to_pcm16(pcm16_to_mulaw(sent[track]))
    events = await call_events(rig.settings.bootstrap, topics, call_id)
    assert events[0]["from"] == "+15083084809"
    assert events[0]["metadata"]["customParameters"] == {
        "From": "+15083084809", "callscribeVocabulary": "Quorvo, Omnira"}
    # the call's custom vocabulary, for the transcriber
    assert events[0]["vocabulary"] == ["Quorvo", "Omnira"]
    assert events[0]["roles"] == ["other", "assistant"]


async def test_signatures(rig: ProviderRig) -> None:
    plivo_url, twilio_url = rig.ws_base + "/plivo", rig.ws_base + "/twilio"
    before = counted("callscribe_ingest_rejected_total", provider="plivo", reason="auth")
    call = await simulate_plivo(plivo_url, STEREO, auth_token="not-the-token", realtime=False)
    assert (call.close_code, call.close_reason) == (1008, "Signature validation failed")
    async with connect(plivo_url) as ws:  # no signature headers at all
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), seconds(5))
    assert ws.close_code == 1008
    assert counted("callscribe_ingest_rejected_total", provider="plivo",
                   reason="auth") == before + 2
    with pytest.raises(InvalidStatus) as caught:
        await simulate_twilio(twilio_url, STEREO, auth_token="not-the-token", realtime=False)
    assert caught.value.response.status_code == 403


async def frames_then_close(url: str, *frames: str,
                            we_close: bool = False) -> tuple[int | None, str | None]:
    """Send ``frames``; the close code the server sent (or ours, ``we_close``)."""
    async with connect(url) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            if we_close:
                await asyncio.wait_for(await ws.ping(), seconds(5))  # all frames taken
                await ws.close(1000)
            async with asyncio.timeout(seconds(5)):
                async for _ in ws:
                    pass
        except ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason


async def test_bad_input_is_closed_with_documented_codes(stack_unsigned: str) -> None:
    twilio, plivo = stack_unsigned + "/twilio", stack_unsigned + "/plivo"
    media = json.dumps({"event": "media", "media": {"payload": "AAAA"}})
    assert (await frames_then_close(twilio, "hello"))[0] == 1007
    assert (await frames_then_close(twilio, media))[0] == 1008
    bad_format = {"event": "start", "start": {"mediaFormat": {"encoding": "audio/x-l16",
                                                               "sampleRate": 8000}}}
    assert (await frames_then_close(twilio, json.dumps(bad_format)))[0] == 1003
    assert (await frames_then_close(plivo, "[1, 2]"))[0] == 1007
    assert (await frames_then_close(plivo, media))[0] == 1008
    opus = {"event": "start", "start": {"mediaFormat": {"encoding": "audio/opus"}}}
    code, reason = await frames_then_close(plivo, json.dumps(opus))
    assert code == 1003 and reason and "audio/opus" in reason


async def test_unknown_events_are_skipped_and_counted(stack_unsigned: str) -> None:
    before = counted("callscribe_ingest_ignored_frames_total", provider="twilio",
                     reason="unknown event 'somethingNew'")
    start = json.loads((FIXTURES / "twilio" / "start_docs.json").read_text())
    start["start"]["callSid"] = "CA" + secrets.token_hex(16)
    payload = base64.b64encode(b"\xff" * 160).decode()
    code, _ = await frames_then_close(
        stack_unsigned + "/twilio", json.dumps(start), '{"event": "somethingNew"}',
        json.dumps({"event": "media", "media": {"track": "inbound", "payload": payload}}),
        we_close=True)
    assert code == 1000
    assert counted("callscribe_ingest_ignored_frames_total", provider="twilio",
                   reason="unknown event 'somethingNew'") == before + 1


@pytest.fixture
def stack_unsigned(stack: RunningStack) -> str:
    """The session stack's ingest (no signature checks), as a ws:// base."""
    return stack.ingest_url.removesuffix("/jambonz")


def test_load_tracks_layout() -> None:
    tracks = load_tracks(STEREO, rate=8000, tracks=("inbound", "outbound"))
    left = np.frombuffer(tracks["inbound"], "<i2")
    right = np.frombuffer(tracks["outbound"], "<i2")
    assert len(left) == len(right) and not np.array_equal(left, right)
