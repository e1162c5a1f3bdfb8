"""A call's records on their way to Kafka, held until the broker acknowledges them.

:class:`Outbox` is the bounded buffer between one call's socket and the shared producer. The
socket's reader :meth:`~Outbox.put`\\ s records without waiting for Kafka, so a broker that stops
answering does not stall the provider's socket; one pump task hands the records to the producer
in order, at most ``max_in_flight`` unacknowledged there at once. The producer retries a request
that timed out until its batch is ``CALLSCRIBE_INGEST_DELIVERY_TIMEOUT_S`` old
(:func:`workers.kafka.new_producer`) and has one batch per partition in flight, so a call's
records reach the topic in order, each at least once (a retried request the broker did store
leaves a duplicate with the same ``seq``, which consumers drop). A ``send`` the producer could
not take within its request timeout (the partition's batch full while the broker does not
answer) is tried again, the record still first in line: nothing overtakes it.

Bounds and overflow policy (``docs/reliability.md``, "A broker outage"):

* at most :attr:`~Outbox.limit` records held, queued and in flight (:func:`buffer_records`:
  ``CALLSCRIBE_INGEST_BUFFER_S`` of the call's audio), and at most the :class:`Budget`'s bytes
  held by every call of the process together (``CALLSCRIBE_INGEST_BUFFER_MAX_BYTES``). Beyond
  either, :meth:`~Outbox.put` waits for room, which stops reading the provider's socket:
  back-pressure, logged once per call and counted in ``callscribe_ingest_buffer_full_total``
  (``bound``: ``call`` or ``ingest``); nothing is dropped;
* a record the producer failed (older than the delivery timeout, or refused: too large, not
  authorized) fails the outbox: nothing more is sent, :meth:`~Outbox.put` and
  :meth:`~Outbox.drain` raise the error (the session closes the socket 1011).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import KafkaError, KafkaTimeoutError

from workers import metrics

log = logging.getLogger(__name__)

#: Room for a call's events (start, DTMF, control outcomes, end) beside its audio.
EVENT_SLACK = 32
#: Pause before a ``send`` that failed at once with a retriable error is tried again.
RETRY_S = 0.2


def buffer_records(buffer_s: float, chunk_ms: int, channels: int) -> int:
    """The records that hold ``buffer_s`` of audio of ``channels`` channels in ``chunk_ms``
    chunks, plus :data:`EVENT_SLACK` for the call's events."""
    return max(1, math.ceil(buffer_s * 1000 / chunk_ms)) * max(1, channels) + EVENT_SLACK


class Budget:
    """The bytes every call's outbox holds together, and the most they may (ingest-wide);
    mirrored in ``callscribe_ingest_buffered_bytes``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def full(self) -> bool:
        return self.used >= self.limit

    def take(self, size: int) -> None:
        self.used += size
        metrics.INGEST_BUFFERED_BYTES.inc(size)

    def give(self, size: int) -> None:
        self.used -= size
        metrics.INGEST_BUFFERED_BYTES.dec(size)
        if not self.full:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def room(self) -> None:
        """Wait until the outboxes hold less than :attr:`limit`."""
        while self.full:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


#: Unbounded: the budget of an outbox built without one (tests, embedding).
UNBOUNDED = 1 << 62


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record of a call, as the outbox holds it until it is acknowledged."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        return len(self.key) + len(self.value) + sum(len(k) + len(v) for k, v in self.headers)


class Producer(Protocol):
    """What the outbox needs of ``AIOKafkaProducer``."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]: ...


class Outbox:
    """One call's records not yet acknowledged by Kafka, in order (see the module)."""

    def __init__(self, producer: Producer, *, limit: int, max_in_flight: int,
                 budget: Budget | None = None, provider: str = "",
                 retry_s: float = RETRY_S) -> None:
        self._producer = producer
        self._budget = budget if budget is not None else Budget(UNBOUNDED)
        self.limit = limit
        self._max_in_flight = max_in_flight
        self._provider = provider
        self._retry_s = retry_s
        self._queued: collections.deque[Record] = collections.deque()
        self._in_flight: collections.deque[tuple[asyncio.Future[Any], Record, float]] = \
            collections.deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._stalled_since: float | None = None
        self._full_logged = False
        self.call_id: str | None = None  # for log lines, once the call has one
        self.retries = 0  # sends the producer could not take in its request timeout

    @property
    def held(self) -> int:
        """Records put and not yet acknowledged."""
        return len(self._queued) + len(self._in_flight)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def put(self, record: Record) -> None:
        """Hold ``record`` until Kafka acknowledges it; waits while :attr:`limit` are held."""
        self._check()
        if self.held >= self.limit:
            self._full("call")
            while self.held >= self.limit:
                await self._changed()
                self._check()
        if self._budget.full:
            self._full("ingest")
            await self._budget.room()
            self._check()
        self._queued.append(record)
        self._budget.take(record.size)
        self._notify()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pump(), name=f"outbox-{self.call_id}")

    async def drain(self) -> None:
        """Wait until every record put is acknowledged; the producer's error if one failed."""
        while self.held and self._error is None:
            await self._changed()
        self._check()

    async def close(self) -> None:
        """Stop sending (what is in the producer stays there); forget what is queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._forget_queued()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def _pump(self) -> None:
        """Hand the queued records to the producer, in order, until none is left."""
        while self._queued and self._error is None:
            if len(self._in_flight) >= self._max_in_flight:
                await self._changed()
                continue
            record = self._queued[0]
            try:
                future = await self._producer.send(
                    record.topic, value=record.value, key=record.key,
                    headers=list(record.headers) or None)
            except KafkaError as exc:
                if not (exc.retriable or isinstance(exc, KafkaTimeoutError)):
                    self._fail(exc)
                    return
                self._retried(exc)
                await asyncio.sleep(self._retry_s)
                continue
            self._queued.popleft()
            self._in_flight.append((future, record, time.monotonic()))
            future.add_done_callback(self._settled)

    def _settled(self, _: asyncio.Future[Any]) -> None:
        """Acknowledgements, taken from the front: a call's records settle in order."""
        while self._in_flight and self._in_flight[0][0].done():
            future, record, sent = self._in_flight.popleft()
            self._budget.give(record.size)
            metrics.KAFKA_PRODUCE_SECONDS.labels(record.topic).observe(time.monotonic() - sent)
            error = KafkaError("send cancelled") if future.cancelled() else future.exception()
            if error is not None and self._error is None:
                self._fail(error)
        if self._stalled_since is not None and not self._in_flight and self._error is None:
            log.warning("call %s: Kafka takes its records again, %.1f s after the first it "
                        "could not take", self.call_id, time.monotonic() - self._stalled_since)
            self._stalled_since = None
        self._notify()

    def _retried(self, exc: KafkaError) -> None:
        self.retries += 1
        metrics.INGEST_SEND_RETRIES.inc()
        if self._stalled_since is None:
            self._stalled_since = time.monotonic()
            log.warning("call %s: Kafka did not take its records (%s); holding up to %d and "
                        "retrying", self.call_id, type(exc).__name__, self.limit)

    def _full(self, bound: str) -> None:
        metrics.INGEST_BUFFER_FULL.labels(self._provider, bound).inc()
        if not self._full_logged:  # once per call: the socket stays paused until there is room
            self._full_logged = True
            what = ("CALLSCRIBE_INGEST_BUFFER_S" if bound == "call"
                    else "CALLSCRIBE_INGEST_BUFFER_MAX_BYTES, every call together")
            log.warning("call %s: as much held unacknowledged by Kafka as allowed (%s): its "
                        "socket is not read until Kafka takes it (logged once per call, "
                        "counted in callscribe_ingest_buffer_full_total)", self.call_id, what)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._forget_queued()
        self._notify()

    def _forget_queued(self) -> None:
        queued, self._queued = self._queued, collections.deque()
        for record in queued:
            self._budget.give(record.size)

    async def _changed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


__all__ = ["EVENT_SLACK", "UNBOUNDED", "Budget", "Outbox", "Producer", "Record", "buffer_records"]
