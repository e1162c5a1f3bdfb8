"""The AudioHook transcript relay without a broker: which records it takes (finals of
AudioHook calls this replica holds, nothing else decoded), its overflow policy (the newest
dropped, counted) and a transcript for a session that has ended (counted, not sent)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY

from workers.ingest.audiohook_events import AudioHookTranscripts, source_topic
from workers.ingest.session import CallHandle, CallRegistry
from workers.records import Topics


def outcome(name: str) -> float:
    return REGISTRY.get_sample_value("callscribe_ingest_audiohook_events_total",
                                     {"outcome": name}) or 0.0


def handle(call_id: str, provider: str) -> CallHandle:
    return SimpleNamespace(call_id=call_id, provider=provider)  # type: ignore[return-value]


def message(call_id: str, value: Any, offset: int = 0) -> SimpleNamespace:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return SimpleNamespace(topic="t.transcripts", partition=0, offset=offset,
                           key=call_id.encode(), value=raw, headers=[])


def final(call_id: str, text: str = "hello") -> dict[str, Any]:
    return {"v": 1, "callId": call_id, "id": f"{call_id}:0:0", "type": "transcript",
            "msg": text, "role": "other", "offset": 0.0, "channel": 0}


def test_the_source_setting_names_a_topic() -> None:
    topics = Topics("t")
    assert source_topic("off", topics) is None
    assert source_topic("raw", topics) == "t.transcripts"
    assert source_topic("redacted", topics) == "t.transcripts.redacted"


async def test_only_finals_of_held_audiohook_calls_are_queued_and_overflow_drops_newest(
        ) -> None:
    registry = CallRegistry()
    registry.add(handle("ah", "audiohook"))
    registry.add(handle("tw", "twilio"))
    relay = AudioHookTranscripts(bootstrap="127.0.0.1:1", topic="t.transcripts",
                                 registry=registry, max_queued=2)
    overflow = outcome("overflow")
    relay._take(message("tw", final("tw")))  # not an AudioHook call
    relay._take(message("gone", final("gone")))  # not held here
    relay._take(message("tw", b"not json"))  # never decoded: no malformed count either
    relay._take(message("ah", {**final("ah"), "type": "transcript:interim"}))
    relay._take(message("ah", {"type": "event:callEnd", "callId": "ah"}))
    relay._take(message("ah", b"not json"))  # skipped, counted as malformed (decode_or_skip)
    assert relay._queue.qsize() == 0
    for text in ("one", "two", "three"):
        relay._take(message("ah", final("ah", text)))
    assert [relay._queue.get_nowait()[1]["msg"] for _ in range(2)] == ["one", "two"]
    assert outcome("overflow") == overflow + 1


async def test_a_transcript_for_an_ended_session_is_counted_not_sent() -> None:
    relay = AudioHookTranscripts(bootstrap="127.0.0.1:1", topic="t.transcripts",
                                 registry=CallRegistry())
    ended = outcome("ended")
    await relay._send("ah", final("ah"))
    await relay._send("ah", final("ah"))
    assert outcome("ended") == ended + 2
