"""The vertical slice, end to end on real parts: a simulated jambonz call → ingest → Kafka
(embedded Tansu) → transcription worker (faust + webrtcvad + tiny.en) → Kafka → bridge →
liveCalls client."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import jiwer
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from tests.conftest import FIXTURES, RunningStack, seconds
from tests.kafka_util import read_records
from tests.schema_util import validate
from workers.bridge.client import messages, open_live_call
from workers.records import AudioChunk
from workers.simulate.jambonz import simulate_jambonz

MANIFEST = json.loads((FIXTURES / "speech" / "manifest.json").read_text())
normalise = EnglishTextNormalizer()


def reference(file: str, channel: int) -> list[dict[str, Any]]:
    tracks = MANIFEST["files"][file]["tracks"]
    return next(t for t in tracks if t["channel"] == channel)["sentences"]


def wer(references: list[str], hypotheses: list[str]) -> float:
    return float(jiwer.wer(normalise(" ".join(references)), normalise(" ".join(hypotheses))))


async def watch(stack: RunningStack, call_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    token, _ = stack.issuer.mint(call_id)
    ws = await open_live_call(stack.bridge_url, token, stack.api_key, wait_s=seconds(30),
                              **kwargs)
    return [message async for _, message in messages(ws)]


async def test_stereo_call_is_transcribed_live_with_roles(stack: RunningStack) -> None:
    call_id = "e2e-stereo-1"
    watcher = asyncio.create_task(watch(stack, call_id))
    call = await simulate_jambonz(stack.ingest_url, FIXTURES / "speech" / "call_stereo_8k.wav",
                                  rate=8000, mix="stereo", call_sid=call_id, realtime=True,
                                  dtmf=[(1.0, "5")])
    received = await asyncio.wait_for(watcher, seconds(60))

    types = [m["type"] for m in received]
    assert types[0] == "event:start"
    assert types[-1] == "event:callEnd"
    # Between start and end: finals, and the assist worker's hints for them (each naming the
    # transcript that triggered it); nothing else (no interims: this client did not ask).
    assert "transcript" in types[1:-1] and set(types[1:-1]) <= {"transcript", "assist"}
    transcript_ids = {m["id"] for m in received if m["type"] == "transcript"}
    for message in received:
        if message["type"] == "assist" and message.get("transcriptId"):
            assert message["transcriptId"] in transcript_ids, message
    assert received[0]["phone"] == "+15083084809"
    for message in received:
        validate("livecalls-server", message)

    by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in received:
        if message["type"] == "transcript":
            by_role[message["role"]].append(message)
    assert set(by_role) == {"other", "assistant"}
    for channel, role in ((0, "other"), (1, "assistant")):
        sentences = reference("call_stereo_8k.wav", channel)
        said = [m["msg"] for m in by_role[role]]
        assert wer([s["text"] for s in sentences], said) <= 0.15, said
        # Offsets come from the audio timeline: each sentence's start within half a second.
        offsets = [m["offset"] for m in by_role[role]]
        assert offsets == sorted(offsets)
        for sentence in sentences:
            assert any(abs(o - sentence["start_s"]) <= 0.5 for o in offsets), (sentence, offsets)

    # Every sample sent is on the audio topic, per channel, with contiguous seq.
    def complete(records: list[Any]) -> bool:
        return sum(1 for r in records if dict(r.headers).get("last") == b"1") == call.channels

    records = await read_records(stack.bootstrap, stack.topics.audio, call_id, until=complete,
                                 wait_s=seconds(20))
    chunks = [AudioChunk.from_kafka(r.key, r.value, r.headers) for r in records]
    for channel in range(call.channels):
        mine = [c for c in chunks if c.channel == channel]
        assert [c.seq for c in mine] == list(range(len(mine)))
        assert sum(c.samples for c in mine) == call.samples_sent
        assert [c.last for c in mine] == [False] * (len(mine) - 1) + [True]
        assert all(c.rate == 8000 for c in mine)
        for header_set in (dict((k, v.decode()) for k, v in r.headers) for r in records[:3]):
            validate("audio-headers", header_set)

    # Lifecycle records: started, the DTMF press at 1 s, ended with the last seq per channel.
    calls = await read_records(stack.bootstrap, stack.topics.calls, call_id,
                               until=lambda rs: len(rs) >= 3, wait_s=seconds(10))
    events = [json.loads(r.value) for r in calls]
    for event in events:
        validate("calls", event)
    assert [e["type"] for e in events] == ["call.started", "dtmf", "call.ended"]
    assert events[0]["roles"] == ["other", "assistant"] and events[0]["rate"] == 8000
    assert events[1]["digit"] == "5" and 900 <= events[1]["tMs"] <= 1200
    assert events[2]["lastSeq"] == [max(c.seq for c in chunks if c.channel == ch)
                                    for ch in range(2)]

    # The raw topic has every message the client got but the assist worker's (those are on
    # the redacted topic), plus the interims this client did not ask for.
    from_transcriber = [m for m in received if m["type"] != "assist"]
    transcripts = await read_records(stack.bootstrap, stack.topics.transcripts, call_id,
                                     until=lambda rs: len(rs) >= len(from_transcriber),
                                     wait_s=seconds(10))
    for record in transcripts:
        validate("transcripts", json.loads(record.value))


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_mono_call_at_other_rates(stack: RunningStack, rate: int) -> None:
    call_id = f"e2e-mono-{rate}"
    watcher = asyncio.create_task(watch(stack, call_id))
    await simulate_jambonz(stack.ingest_url, FIXTURES / "speech" / "call_mono_16k.wav",
                           rate=rate, mix="mono", call_sid=call_id, realtime=False)
    received = await asyncio.wait_for(watcher, seconds(60))
    said = [m["msg"] for m in received if m["type"] == "transcript"]
    assert {m["role"] for m in received if m["type"] == "transcript"} == {"other"}
    sentences = reference("call_mono_16k.wav", 0)
    assert wer([s["text"] for s in sentences], said) <= 0.15, said
    assert received[-1]["type"] == "event:callEnd"


async def test_silence_and_line_noise_produce_no_words(stack: RunningStack) -> None:
    call_id = "e2e-silence"
    watcher = asyncio.create_task(watch(stack, call_id))
    # In real time: sent unpaced, a call with nothing to decode can end before the watcher's
    # first connection, and the bridge refuses a call that has ended (404).
    await simulate_jambonz(stack.ingest_url, FIXTURES / "speech" / "silence_noise_8k.wav",
                           rate=8000, mix="mono", call_sid=call_id, realtime=True)
    received = await asyncio.wait_for(watcher, seconds(60))
    assert [m["type"] for m in received] == ["event:start", "event:callEnd"]
