"""The per-call :class:`Outbox`: order kept through sends the producer could not take, the bound
(back-pressure, nothing dropped), ``max_in_flight``, a failure that fails the call; and the
producer's delivery timeout (aiokafka's batch TTL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RequestTimedOutError
from pydantic import ValidationError

from tests.conftest import seconds
from workers import metrics
from workers.ingest.outbox import EVENT_SLACK, Budget, Outbox, Record, buffer_records
from workers.kafka import new_producer, set_delivery_timeout
from workers.settings import IngestSettings


class Producer:
    """Takes records as ``AIOKafkaProducer.send`` does: a future per record, settled by the
    test (``ack``), or an error raised from ``send`` itself (``refuse``: the next n sends)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.refuse: list[BaseException] = []
        self.taken = asyncio.Event()

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        await asyncio.sleep(0)
        if self.refuse:
            raise self.refuse.pop(0)
        assert value is not None
        self.sent.append(value)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        self.taken.set()
        return future

    def ack(self, count: int | None = None) -> None:
        for future in [f for f in self.futures if not f.done()][:count]:
            future.set_result(None)

    async def wait_sent(self, count: int) -> None:
        async with asyncio.timeout(seconds(5)):
            while len(self.sent) < count:
                self.taken.clear()
                await self.taken.wait()


def record(n: int) -> Record:
    return Record("audio", b"call", str(n).encode(), (("seq", str(n).encode()),))


def buffered() -> float:
    return metrics.INGEST_BUFFERED_BYTES._value.get()  # type: ignore[attr-defined, no-any-return]


def test_buffer_records_holds_the_seconds_of_every_channel() -> None:
    assert buffer_records(120, 100, 1) == 1200 + EVENT_SLACK
    assert buffer_records(120, 100, 2) == 2400 + EVENT_SLACK
    assert buffer_records(0.05, 100, 1) == 1 + EVENT_SLACK


async def test_records_reach_the_producer_in_order_and_drain_waits_for_every_ack() -> None:
    producer = Producer()
    outbox = Outbox(producer, limit=100, max_in_flight=100)
    before = buffered()
    for n in range(10):
        await outbox.put(record(n))
    await producer.wait_sent(10)
    assert producer.sent == [str(n).encode() for n in range(10)]
    drained = asyncio.create_task(outbox.drain())
    await asyncio.sleep(0.01)
    assert not drained.done() and outbox.held == 10
    producer.ack()
    async with asyncio.timeout(seconds(5)):
        await drained
    assert outbox.held == 0 and buffered() == before
    await outbox.close()


async def test_a_send_the_producer_could_not_take_is_tried_again_before_the_next() -> None:
    """Kafka not answering: ``send`` raises after the request timeout (the partition's batch
    full); the record stays first in line, nothing overtakes it, nothing is lost."""
    producer = Producer()
    producer.refuse = [KafkaTimeoutError(), KafkaTimeoutError(), RequestTimedOutError()]
    outbox = Outbox(producer, limit=100, max_in_flight=100, retry_s=0.001)
    retries = metrics.INGEST_SEND_RETRIES._value.get()  # type: ignore[attr-defined]
    for n in range(5):
        await outbox.put(record(n))
    await producer.wait_sent(5)
    assert producer.sent == [str(n).encode() for n in range(5)]
    assert outbox.retries == 3
    assert metrics.INGEST_SEND_RETRIES._value.get() == retries + 3  # type: ignore[attr-defined]
    producer.ack()
    await outbox.drain()
    await outbox.close()


async def test_at_most_max_in_flight_are_handed_to_the_producer() -> None:
    producer = Producer()
    outbox = Outbox(producer, limit=100, max_in_flight=3)
    for n in range(7):
        await outbox.put(record(n))
    await producer.wait_sent(3)
    await asyncio.sleep(0.01)
    assert len(producer.sent) == 3 and outbox.held == 7
    producer.ack(2)
    await producer.wait_sent(5)
    await asyncio.sleep(0.01)
    assert len(producer.sent) == 5
    producer.ack()
    await producer.wait_sent(7)
    producer.ack()
    await outbox.drain()
    assert producer.sent == [str(n).encode() for n in range(7)]
    await outbox.close()


async def test_a_full_outbox_makes_put_wait_and_drops_nothing() -> None:
    """The bound: ``put`` waits (the socket is not read) until Kafka acknowledges; counted."""
    producer = Producer()
    outbox = Outbox(producer, limit=4, max_in_flight=100, provider="test")
    full = metrics.INGEST_BUFFER_FULL.labels("test", "call")._value.get()  # type: ignore[attr-defined]
    for n in range(4):
        await outbox.put(record(n))
    waiting = asyncio.create_task(outbox.put(record(4)))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert metrics.INGEST_BUFFER_FULL.labels("test", "call")._value.get() == full + 1  # type: ignore[attr-defined]
    producer.ack(1)
    async with asyncio.timeout(seconds(5)):
        await waiting
    await producer.wait_sent(5)
    producer.ack()
    await outbox.drain()
    assert producer.sent == [str(n).encode() for n in range(5)]
    await outbox.close()


async def test_the_ingest_wide_budget_holds_back_every_call_until_kafka_takes_some() -> None:
    producer = Producer()
    size = record(0).size
    budget = Budget(3 * size)
    one = Outbox(producer, limit=100, max_in_flight=100, budget=budget, provider="test")
    two = Outbox(producer, limit=100, max_in_flight=100, budget=budget, provider="test")
    full = metrics.INGEST_BUFFER_FULL.labels("test", "ingest")._value.get()  # type: ignore[attr-defined]
    await one.put(record(0))
    await one.put(record(1))
    await two.put(record(2))
    assert budget.full and budget.used == 3 * size
    waiting = asyncio.create_task(two.put(record(3)))  # the other call's record is held back
    await producer.wait_sent(3)
    assert not waiting.done()
    assert metrics.INGEST_BUFFER_FULL.labels("test", "ingest")._value.get() == full + 1  # type: ignore[attr-defined]
    producer.ack(1)  # Kafka takes one of the first call's: room for the second's
    async with asyncio.timeout(seconds(5)):
        await waiting
    await producer.wait_sent(4)
    producer.ack()
    await one.drain()
    await two.drain()
    assert budget.used == 0
    await one.close()
    await two.close()


async def test_a_record_the_producer_failed_fails_the_call() -> None:
    """Past the delivery timeout (or refused): put and drain raise, nothing more is sent."""
    producer = Producer()
    outbox = Outbox(producer, limit=100, max_in_flight=2)
    before = buffered()
    for n in range(5):
        await outbox.put(record(n))
    await producer.wait_sent(2)
    producer.futures[0].set_exception(RequestTimedOutError())
    with pytest.raises(RequestTimedOutError):
        await outbox.drain()
    with pytest.raises(RequestTimedOutError):
        await outbox.put(record(5))
    producer.ack()
    await asyncio.sleep(0.01)
    assert len(producer.sent) == 2 and outbox.held == 0 and buffered() == before
    await outbox.close()


async def test_a_send_refused_for_good_fails_the_call() -> None:
    producer = Producer()
    producer.refuse = [MessageSizeTooLargeError()]
    outbox = Outbox(producer, limit=100, max_in_flight=2)
    await outbox.put(record(0))
    with pytest.raises(MessageSizeTooLargeError):
        await outbox.drain()
    assert producer.sent == []
    await outbox.close()


async def test_the_producer_retries_its_batches_for_the_delivery_timeout() -> None:
    """aiokafka fails a batch older than the request timeout; ``delivery_timeout_ms`` sets
    that age apart (a private attribute: this fails if an aiokafka release renames it)."""
    producer = new_producer("127.0.0.1:9", client_id="test", request_timeout_ms=3000,
                            delivery_timeout_ms=180_000)
    plain = new_producer("127.0.0.1:9", client_id="test", request_timeout_ms=3000)
    try:
        assert producer._message_accumulator._batch_ttl == 180.0
        assert producer.client._request_timeout_ms == 3000
        assert plain._message_accumulator._batch_ttl == 3.0
        set_delivery_timeout(plain, 60)
        assert plain._message_accumulator._batch_ttl == 60.0
    finally:
        await producer.stop()
        await plain.stop()


def test_the_delivery_timeout_must_outlive_the_request_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSCRIBE_INGEST_REQUEST_TIMEOUT_S", "30")
    monkeypatch.setenv("CALLSCRIBE_INGEST_DELIVERY_TIMEOUT_S", "10")
    with pytest.raises(ValidationError, match="DELIVERY_TIMEOUT_S"):
        IngestSettings()
    monkeypatch.setenv("CALLSCRIBE_INGEST_REQUEST_TIMEOUT_S", "3")
    settings = IngestSettings()
    assert (settings.ingest_request_timeout_s, settings.ingest_delivery_timeout_s) == (3, 10)
