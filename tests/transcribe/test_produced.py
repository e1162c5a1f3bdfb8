"""What was already transcribed (workers/transcribe/produced.py): the end of the last final per
call channel, from the transcripts topic as a worker taking over calls reads it."""

from __future__ import annotations

import secrets
from typing import Any

from workers.broker import EmbeddedBroker
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.records import dumps
from workers.transcribe.produced import fold, produced_until


def record(kind: str, call: str, channel: int, end: int) -> dict[str, Any]:
    return {"v": 1, "type": kind, "callId": call, "id": f"{call}:{channel}:{end - 1000}",
            "channel": channel, "audioStartMs": end - 1000, "audioEndMs": end, "msg": "hi",
            "role": "other", "offset": 0.0}


def test_fold_keeps_the_latest_final_end_per_call_channel_and_the_started_calls() -> None:
    values = [dumps(record("transcript", "a", 0, 3000)),
              dumps(record("transcript", "a", 0, 2000)),  # a redelivery of an older one
              dumps(record("transcript:interim", "a", 0, 9000)),  # not final: not produced
              dumps(record("transcript", "a", 1, 4000)),
              dumps({"type": "event:callEnd", "callId": "b", "id": "b:callEnd"}),
              dumps({"type": "event:start", "callId": "b", "id": "b:start", "phone": ""}),
              b'{"type":"transcript", broken', b""]
    produced = fold(values)
    assert produced.ends == {("a", 0): 3000, ("a", 1): 4000}
    assert produced.started == {"b"}


async def test_produced_until_reads_the_recent_finals_of_the_given_partitions(
        broker: EmbeddedBroker) -> None:
    topic = f"produced-{secrets.token_hex(3)}"
    await ensure_topics(broker.bootstrap, [topic], partitions=2)
    producer = new_producer(broker.bootstrap, client_id="produced-test")
    await start_producer(producer)
    try:
        for partition, call in ((0, "on-0"), (1, "on-1")):
            for end in (1000, 5000):
                await producer.send_and_wait(topic, dumps(record("transcript", call, 0, end)),
                                             partition=partition)
    finally:
        await producer.stop()
    assert (await produced_until(broker.bootstrap, topic, [0])).ends == {("on-0", 0): 5000}
    assert (await produced_until(broker.bootstrap, topic, [0, 1], lookback_s=0.0)).ends == {}
