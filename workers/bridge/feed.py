"""The bridge's topic feed: every partition of the calls and transcripts topics, read from the
beginning by every replica (no consumer group), so that any replica can serve any call; the
history the :class:`~workers.bridge.hub.CallHub` rebuilds from them is what it replays.

Calls-topic records go to the hub (and ``call.ended`` to the live-listen fan-out, which closes
the call's listeners); transcripts-topic records (the assist worker's redacted copy unless
configured otherwise) are appended to their call's history and offered to its clients. A
record that does not decode, or has no ``callId``, is skipped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from workers import metrics
from workers.bridge.hub import CallHub
from workers.errors import RecordError, TopicNotFound
from workers.kafka import decode_or_skip, new_consumer, partitions_of
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.records import loads

log = logging.getLogger(__name__)


class TopicFeed:
    """One consumer of the calls and transcripts topics feeding a :class:`CallHub`."""

    def __init__(self, *, bootstrap: str, calls_topic: str, transcripts_topic: str,
                 hub: CallHub, client_id: str, fetch_max_wait_ms: int = 20,
                 on_call_ended: Callable[[str], None] = lambda call_id: None,
                 security: KafkaSecurity = PLAINTEXT) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._calls_topic = calls_topic
        self.transcripts_topic = transcripts_topic
        self._hub = hub
        self._client_id = client_id
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._on_call_ended = on_call_ended
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._partition_counts: dict[str, int] = {}

    @property
    def running(self) -> bool:
        """Started and still consuming."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Connect, assign every partition of both topics from the beginning, consume."""
        self._consumer = new_consumer(
            self._bootstrap, security=self._security, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_max_wait_ms, client_id=self._client_id,
        )
        await self._consumer.start()
        partitions: list[TopicPartition] = []
        for topic in (self._calls_topic, self.transcripts_topic):
            for partition in sorted(await partitions_of(self._consumer, topic)):
                partitions.append(TopicPartition(topic, partition))
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._consume(), name="bridge-consume")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()

    async def partition_count(self, topic: str) -> int:
        """Partitions of ``topic`` (for the audio topic, which this consumer is not assigned),
        from fresh cluster metadata once, then cached: adding partitions to a topic moves
        its keys, so it is not done to live topics."""
        count = self._partition_counts.get(topic)
        if count is None:
            assert self._consumer is not None
            metadata = await self._consumer._client.fetch_all_metadata()
            count = len(metadata.partitions_for_topic(topic) or ())
            if not count:
                raise TopicNotFound(topic)
            self._partition_counts[topic] = count
        return count

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for partition, messages in batches.items():
                for message in messages:
                    decode_or_skip(message, self._take, logger=log,
                                   errors=(RecordError, KeyError))
                    # Let the relays send this record before the next is offered: a fetched
                    # batch larger than a client's queue must not overflow a client that
                    # keeps up.
                    await asyncio.sleep(0)
                if messages:
                    self._observe_lag(partition, messages[-1].offset)

    def _take(self, message: ConsumerRecord[bytes, bytes]) -> None:
        """Hand a record to the hub (a record without ``callId`` raises ``KeyError``)."""
        record = loads(message.value)
        if message.topic == self.transcripts_topic:
            self._hub.on_transcript_record(record)
        else:
            self._on_call_record(record)

    def _on_call_record(self, record: dict[str, Any]) -> None:
        self._hub.on_call_record(record)
        kind = record.get("type")
        if kind == "call.ended":
            self._on_call_ended(record["callId"])
        elif kind in ("call.joined", "call.control_failed"):
            outcome = "joined" if kind == "call.joined" else "failed"
            metrics.BRIDGE_CONTROL_OUTCOMES.labels(outcome).inc()

    def _observe_lag(self, partition: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        highwater = self._consumer.highwater(partition)
        if highwater is not None:
            metrics.KAFKA_CONSUMER_LAG.labels("bridge", partition.topic, str(
                partition.partition)).set(max(0, highwater - offset - 1))


__all__ = ["TopicFeed"]
