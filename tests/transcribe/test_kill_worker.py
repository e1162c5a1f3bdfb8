"""Kill the transcription worker (SIGKILL) in the middle of a call and start a new one: every
utterance still arrives on the transcripts topic, none twice, and the call still ends."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.conftest import FIXTURES, seconds, spawn_worker, transcriber_env
from tests.test_end_to_end import reference, wer
from workers.broker import EmbeddedBroker, free_port
from workers.ingest.server import IngestServer
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.local_stack import wait_ready
from workers.records import Topics
from workers.simulate.jambonz import simulate_jambonz


async def test_killed_worker_loses_no_utterance_and_repeats_none(broker: EmbeddedBroker) -> None:
    topics = Topics(f"k{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, topics.all(), partitions=2)
    producer = new_producer(broker.bootstrap, client_id="kill-test")
    await start_producer(producer)
    ingest = IngestServer(producer=producer, topics=topics, host="127.0.0.1", port=0)
    await ingest.start()
    web_port = free_port()
    env = transcriber_env(broker.bootstrap, topics, web_port, partitions=2)
    ready = f"http://127.0.0.1:{web_port}/readyz"
    worker = spawn_worker("transcribe", env)
    try:
        await asyncio.to_thread(wait_ready, ready, seconds(90), worker)
        call_id = "killed-mid-call"
        call = asyncio.create_task(simulate_jambonz(
            f"ws://127.0.0.1:{ingest.port}/jambonz", FIXTURES / "speech" / "call_stereo_8k.wav",
            rate=8000, mix="stereo", call_sid=call_id, realtime=True))
        await asyncio.sleep(6.5)  # mid-call: the first utterances are out, others open
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = spawn_worker("transcribe", env)
        await call
        records = await transcripts_until_call_end(broker.bootstrap, topics.transcripts,
                                                   call_id, wait_s=seconds(120))
    finally:
        worker.kill()
        worker.wait()
        await ingest.drain(1)
        await producer.stop()

    finals = [r for r in records if r["type"] == "transcript"]
    ids = [r["id"] for r in finals]
    assert len(ids) == len(set(ids)), ids  # nothing produced twice
    for channel, role in ((0, "other"), (1, "assistant")):
        sentences = reference("call_stereo_8k.wav", channel)
        said = [r["msg"] for r in finals if r["role"] == role]
        assert wer([s["text"] for s in sentences], said) <= 0.15, said  # nothing lost
    assert records[0]["type"] == "event:start"
    assert records[-1]["type"] == "event:callEnd"


async def transcripts_until_call_end(bootstrap: str, topic: str, call_id: str, *,
                                     wait_s: float) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(wait_s):
            while not found or found[-1]["type"] != "event:callEnd":
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    found += [json.loads(m.value) for m in batch if m.key == call_id.encode()]
    finally:
        await consumer.stop()
    return found
