"""Transcript → assist latency through a real broker: ``python -m workers.assist.bench``.

Starts the embedded broker (unless ``--bootstrap``) and ``callscribe assist`` as a child
process on a fresh topic prefix, then plays calls made of the labelled example utterances
(``tests/fixtures/assist/eval_calls.yaml``) as final transcripts on the transcripts topic,
``--calls`` at a time, one utterance per call every ``--gap`` seconds, and prints the
percentiles of (assist record produced - transcript produced) and of (assist record consumed
- transcript produced), the delay a bridge reading the assist topic would add on top.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from workers.assist.app import assist_topics
from workers.broker import EmbeddedBroker, free_port
from workers.kafka import ensure_topics, new_consumer, new_producer, start_producer
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.local_stack import wait_ready
from workers.records import Topics, dumps, transcript_id, transcript_record
from workers.settings import KafkaSettings

EVAL = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "assist" / "eval_calls.yaml"


def _utterances() -> list[tuple[str, str]]:
    calls = yaml.safe_load(EVAL.read_text())["calls"]
    out = []
    for call in calls:
        for item in call["said"]:
            role, text = (item["role"], item["text"]) if isinstance(item, dict) else item
            out.append((role, text))
    return out


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99),
            "max": round(ordered[-1], 1)}


async def _play(bootstrap: str, topics: Topics, calls: int, gap: float,
                security: KafkaSecurity = PLAINTEXT) -> list[dict[str, Any]]:
    producer = new_producer(bootstrap, client_id="assist-bench", security=security)
    await start_producer(producer, security=security)
    consumer = new_consumer(bootstrap, topics.assist, security=security, group_id=None,
                            auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    said = _utterances()
    received: list[dict[str, Any]] = []

    async def collect() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            now = int(time.time() * 1000)
            received.extend(dict(json.loads(m.value), consumedAtMs=now)
                            for batch in batches.values() for m in batch)

    reader = asyncio.create_task(collect())
    sent: dict[str, int] = {}
    try:
        for index, (role, text) in enumerate(said):
            for call in range(calls):
                call_id = f"bench-{call}"
                channel = 0 if role == "other" else 1
                record_id = transcript_id(call_id, channel, index * 4000)
                produced = int(time.time() * 1000)
                sent[record_id] = produced
                record = transcript_record(
                    call_id, {"type": "transcript", "msg": text, "role": role,
                              "offset": index * 4.0}, record_id=record_id, channel=channel,
                    audioStartMs=index * 4000, audioEndMs=index * 4000 + 2000,
                    producedAtMs=produced)
                await producer.send(topics.transcripts, key=call_id.encode(),
                                    value=dumps(record))
            await asyncio.sleep(gap)
        await asyncio.sleep(2)
    finally:
        reader.cancel()
        await consumer.stop()
        await producer.stop()
    return [dict(m, sentAtMs=sent[m["transcriptId"]]) for m in received
            if m["transcriptId"] in sent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8, help="concurrent calls")
    parser.add_argument("--gap", type=float, default=0.25, help="seconds between utterances")
    parser.add_argument("--bootstrap", default="", help="Kafka bootstrap (default: embedded)")
    args = parser.parse_args()
    broker = None if args.bootstrap else EmbeddedBroker().start()
    bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
    topics = Topics(f"bench{secrets.token_hex(3)}")
    # An external cluster is reached as the workers reach it (CALLSCRIBE_KAFKA_SECURITY_*).
    security = KafkaSettings().kafka_security() if args.bootstrap else PLAINTEXT
    asyncio.run(ensure_topics(bootstrap, (*topics.all(), *assist_topics(topics)),
                              partitions=4, security=security))
    port = free_port()
    env = {**os.environ, "CALLSCRIBE_KAFKA_BOOTSTRAP": bootstrap,
           "CALLSCRIBE_TOPIC_PREFIX": topics.prefix, "CALLSCRIBE_ASSIST_WEB_PORT": str(port),
           "CALLSCRIBE_TOPIC_PARTITIONS": "4", "CALLSCRIBE_LOG_FORMAT": "text"}
    worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "assist"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", 60, worker)
        messages = asyncio.run(_play(bootstrap, topics, args.calls, args.gap, security))
    finally:
        worker.terminate()
        worker.wait(30)
        if broker is not None:
            broker.stop()
    print(json.dumps({
        "calls": args.calls, "messages": len(messages),
        "transcript_to_assist_produced_ms": _percentiles(
            [m["producedAtMs"] - m["sentAtMs"] for m in messages]),
        "transcript_to_assist_consumed_ms": _percentiles(
            [m["consumedAtMs"] - m["sentAtMs"] for m in messages]),
    }, indent=2))


if __name__ == "__main__":
    main()
