"""Kafka helpers shared by every worker: topic creation, producers, bounded in-flight sends."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from workers import metrics
from workers.errors import BrokerUnavailable

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, names: Iterable[str], *, partitions: int,
                        replication: int = 1, wait_s: float = 30.0) -> None:
    """Create each topic that does not exist yet; wait up to ``wait_s`` for the cluster."""
    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication)
                     for n in missing]
                )
                log.info("created topics %s with %d partitions", ",".join(missing), partitions)
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"cannot create topics on {bootstrap}: {exc}") from exc
            await asyncio.sleep(0.5)
        else:
            return
        finally:
            await admin.close()


def new_producer(bootstrap: str, *, client_id: str, linger_ms: int = 2) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas (``acks=all``).

    Idempotence is off because not every Kafka-protocol broker (Tansu) implements producer ids;
    duplicates after a retry are harmless because every record carries a deterministic id.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=linger_ms,
        request_timeout_ms=30000,
        max_request_size=4 * 1024 * 1024,
    )


async def start_producer(producer: AIOKafkaProducer, *, wait_s: float = 30.0) -> None:
    """Start ``producer``, retrying while the cluster comes up."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await producer.start()
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"producer cannot reach Kafka: {exc}") from exc
            await asyncio.sleep(0.5)
        else:
            return


class OrderedSender:
    """Sends records keyed by call with at most ``max_in_flight`` unconfirmed deliveries.

    ``send`` returns once the record is queued in the producer; when ``max_in_flight``
    deliveries are unconfirmed it first waits for the oldest, which stalls the caller (and so the
    socket it reads): back-pressure instead of an unbounded buffer. ``drain`` waits for all.
    A failed delivery raises from ``send`` or ``drain``; nothing fails silently.
    """

    def __init__(self, producer: AIOKafkaProducer, *, max_in_flight: int) -> None:
        self._producer = producer
        self._max_in_flight = max_in_flight
        self._pending: collections.deque[asyncio.Future[object]] = collections.deque()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def send(self, topic: str, *, key: bytes, value: bytes,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        while len(self._pending) >= self._max_in_flight:
            await self._pending.popleft()
        future = await self._producer.send(topic, value=value, key=key,
                                           headers=list(headers) if headers else None)
        started = time.monotonic()
        observe = metrics.KAFKA_PRODUCE_SECONDS.labels(topic)
        future.add_done_callback(lambda _: observe.observe(time.monotonic() - started))
        self._pending.append(future)

    async def drain(self) -> None:
        while self._pending:
            await self._pending.popleft()
