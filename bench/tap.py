"""Reads what the system wrote, from the first offset, while it runs: the transcripts topic
(what the transcribers produced), the topic the bridge serves (the redacted transcripts), the
audio topic (``seq``, samples and ``last`` of each record, not the audio) and the calls topic,
each kept per call id, for the fault ledger (``bench.ledger``). No consumer group: it
commits nothing and disturbs no worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.ledger import AudioRecord
from workers.kafka import new_consumer
from workers.records import Topics

log = logging.getLogger(__name__)


async def read_to_end(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition],
                      timeout_s: float, reader: asyncio.Task[None] | None = None) -> bool:
    """Wait until ``consumer`` has read every record its ``partitions`` hold now; ``False`` on
    timeout. A ``reader`` task that stopped raises what stopped it."""
    ends = await consumer.end_offsets(list(partitions))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        positions = [await consumer.position(tp) for tp in ends]
        if all(p >= end for p, end in zip(positions, ends.values(), strict=True)):
            return True
        if reader is not None and reader.done():
            reader.result()
        await asyncio.sleep(0.2)
    return False


class TopicTap:
    """See the module docstring. ``produced``, ``served`` and ``calls`` hold each record as
    parsed JSON with ``_seenAt`` (``time.time()`` when read) added; ``audio`` the
    :class:`AudioRecord` of each audio record."""

    def __init__(self, bootstrap: str, topics: Topics, *, served: str | None = None) -> None:
        self._bootstrap = bootstrap
        self._names = {"produced": topics.transcripts,
                       "served": served or topics.transcripts_redacted,
                       "calls": topics.calls, "audio": topics.audio}
        self._kinds: dict[str, list[str]] = defaultdict(list)  # served may be produced
        for kind, topic in self._names.items():
            self._kinds[topic].append(kind)
        self.produced: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.served: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.audio: dict[str, list[AudioRecord]] = defaultdict(list)
        self._consumer = new_consumer(bootstrap, group_id=None, enable_auto_commit=False,
                                      fetch_max_wait_ms=100, auto_offset_reset="earliest")
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        for topic in self._kinds:
            found: set[int] | None = None
            for _ in range(100):
                found = self._consumer.partitions_for_topic(topic)
                if found:
                    break
                await self._consumer._client.force_metadata_update()  # no public way
                await asyncio.sleep(0.1)
            if not found:
                raise RuntimeError(f"topic {topic} has no partitions")
            self._partitions += [TopicPartition(topic, p) for p in sorted(found)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._run(), name="bench-topic-tap")

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            now = time.time()
            for partition, messages in batches.items():
                for message in messages:
                    try:
                        for kind in self._kinds[partition.topic]:
                            self._take(kind, message, now)
                    except (ValueError, KeyError) as exc:
                        log.warning("tap: skipped %s@%d: %s", partition, message.offset, exc)

    def _take(self, kind: str, message: Any, now: float) -> None:
        if kind == "audio":
            headers = {k: bytes(v) for k, v in message.headers or ()}
            self.audio[message.key.decode()].append(AudioRecord(
                channel=int(headers["channel"]), seq=int(headers["seq"]),
                samples=len(message.value or b"") // 2, last=headers.get("last") == b"1"))
            return
        record = json.loads(message.value)
        record["_seenAt"] = now
        getattr(self, kind)[str(record.get("callId"))].append(record)

    async def caught_up(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything on the topics now has been read; ``False`` on timeout."""
        return await read_to_end(self._consumer, self._partitions, timeout_s, self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


__all__ = ["TopicTap", "read_to_end"]
