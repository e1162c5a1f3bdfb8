"""Reading what ingest produced, for the provider tests: a call's records on a topic, its audio
chunks, its lifecycle events, and its finished transcript."""

from __future__ import annotations

import json
from typing import Any

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

from tests.conftest import FIXTURES, seconds
from tests.kafka_util import read_records
from tests.schema_util import validate
from workers.records import AudioChunk, Topics

MANIFEST = json.loads((FIXTURES / "speech" / "manifest.json").read_text())
_normalise = EnglishTextNormalizer()


async def audio_of(bootstrap: str, topics: Topics, call_id: str,
                   channels: int) -> list[AudioChunk]:
    def done(records: list[Any]) -> bool:
        return sum(1 for r in records if dict(r.headers).get("last") == b"1") >= channels
    records = await read_records(bootstrap, topics.audio, call_id, until=done)
    return [AudioChunk.from_kafka(r.key, r.value, r.headers) for r in records]


async def call_events(bootstrap: str, topics: Topics, call_id: str, *,
                      until: str = "call.ended", wait_s: float = seconds(20)
                      ) -> list[dict[str, Any]]:
    """The calls-topic records of a call, up to and including one of type ``until``."""
    def ended(records: list[Any]) -> bool:
        return any(json.loads(r.value)["type"] == until for r in records)
    records = await read_records(bootstrap, topics.calls, call_id, until=ended, wait_s=wait_s)
    events = [json.loads(r.value) for r in records]
    for event in events:
        validate("calls", event)
    return events


async def transcript_of(bootstrap: str, topics: Topics, call_id: str,
                        wait_s: float = seconds(90)) -> list[dict[str, Any]]:
    """The transcriber's records for a call, up to ``event:callEnd``."""
    def ended(records: list[Any]) -> bool:
        return any(json.loads(r.value)["type"] == "event:callEnd" for r in records)
    records = await read_records(bootstrap, topics.transcripts, call_id, until=ended,
                                 wait_s=wait_s)
    return [json.loads(r.value) for r in records]


def assert_contiguous(chunks: list[AudioChunk], channels: int) -> dict[int, bytes]:
    """Per channel: seq from 0 without gaps, one last chunk at the end; the audio."""
    assert {c.channel for c in chunks} == set(range(channels))
    audio = {}
    for channel in range(channels):
        mine = [c for c in chunks if c.channel == channel]
        assert [c.seq for c in mine] == list(range(len(mine)))
        assert [c.last for c in mine] == [False] * (len(mine) - 1) + [True]
        t = 0
        for chunk in mine:
            assert chunk.t_ms == t * 1000 // chunk.rate
            t += chunk.samples
        audio[channel] = b"".join(c.pcm for c in mine)
    return audio


def reference(file: str, channel: int) -> str:
    tracks = MANIFEST["files"][file]["tracks"]
    return " ".join(s["text"] for s in next(t for t in tracks
                                            if t["channel"] == channel)["sentences"])


def wer(expected: str, said: list[str]) -> float:
    return float(jiwer.wer(_normalise(expected), _normalise(" ".join(said))))
