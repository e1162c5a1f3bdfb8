"""Transcripts back to Genesys: each final utterance of an AudioHook session this replica
holds, sent on that session as an ``event`` with a ``transcript`` entity.

Off unless ``CALLSCRIBE_AUDIOHOOK_TRANSCRIPTS`` names a source: ``raw`` (the transcripts topic,
what the transcriber wrote) or ``redacted`` (the assist worker's copy, PII/PCI replaced by
placeholders; it needs the assist worker and arrives later). The default, when on, is the
customer's own words going back to the customer's own Genesys org, which has the call's audio
already; ``redacted`` is for orgs whose Genesys users must not see card numbers and the like.

Like the control executor, every replica reads the whole topic (no consumer group, from its
end when the replica starts: a session it holds began after that). A record whose key is not
the id of an AudioHook call in the :class:`~workers.ingest.session.CallRegistry` is dropped
before it is decoded; interims, assist messages and call events after it is decoded (only
finals are sent: Genesys keeps each transcript it is given, and an interim would be repeated
and revised several times per utterance).

Between the consumer and the sockets, a queue of at most ``max_queued`` records (one task
sends them in topic order). Overflow policy: when it is full the newest record is dropped
(``outcome="overflow"``) — the consumer never waits on a socket, and the transcript is still
on the topic for every other reader. A send that has not finished after ``send_timeout_s``
is left to finish on its own and the call's records are dropped until it has
(``outcome="stalled"``); websockets' keepalive closes a peer that stopped reading. Each kind
of failure is logged once per call and counted in ``callscribe_ingest_audiohook_events_total``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from websockets.exceptions import ConnectionClosed

from workers import metrics
from workers.ingest.dialects.audiohook import PROVIDER
from workers.ingest.providers.audiohook import AudioHookPlayer
from workers.ingest.session import CallRegistry, ProviderSession
from workers.kafka import decode_or_skip, new_consumer, partitions_of, record_call
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.records import Topics, loads

log = logging.getLogger(__name__)


def source_topic(source: str, topics: Topics) -> str | None:
    """The topic ``CALLSCRIBE_AUDIOHOOK_TRANSCRIPTS`` names (None: off)."""
    return {"raw": topics.transcripts, "redacted": topics.transcripts_redacted}.get(source)


class AudioHookTranscripts:
    """Consumes a transcripts topic and sends the finals of owned AudioHook sessions."""

    def __init__(self, *, bootstrap: str, topic: str, registry: CallRegistry,
                 fetch_max_wait_ms: int = 20, max_queued: int = 1000,
                 send_timeout_s: float = 5.0, security: KafkaSecurity = PLAINTEXT) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self.topic = topic
        self._registry = registry
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._timeout_s = send_timeout_s
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(max_queued)
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: Sends still running after the timeout, by call: that call's records are dropped.
        self._stalled: dict[str, asyncio.Task[int]] = {}
        #: (call, outcome) pairs already logged (bounded: oldest forgotten).
        self._logged: collections.OrderedDict[tuple[str, str], None] = \
            collections.OrderedDict()

    async def start(self) -> None:
        self._consumer = new_consumer(
            self._bootstrap, security=self._security, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_max_wait_ms, client_id="ingest-audiohook-events")
        await self._consumer.start()
        partitions = [TopicPartition(self.topic, p)
                      for p in sorted(await partitions_of(self._consumer, self.topic))]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end offsets now, before any call starts
            await self._consumer.position(partition)
        self._tasks = [asyncio.create_task(self._consume(), name="ingest-audiohook-consume"),
                       asyncio.create_task(self._deliver(), name="ingest-audiohook-deliver")]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._stalled.values()]:
            task.cancel()
        for task in [*self._tasks, *self._stalled.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks, self._stalled = [], {}
        if self._consumer is not None:
            await self._consumer.stop()

    def _wanted(self, call_id: str | None) -> bool:
        handle = self._registry.get(call_id) if call_id else None
        return handle is not None and handle.provider == PROVIDER

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as exc:  # the broker away: retried, not a crash
                log.warning("%s unavailable: %s", self.topic, exc)
                await asyncio.sleep(1)
                continue
            for messages in batches.values():
                for message in messages:
                    self._take(message)

    def _take(self, message: ConsumerRecord[bytes, bytes]) -> None:
        call_id = record_call(message)
        if call_id is None or not self._wanted(call_id):
            return  # another replica's call, or not an AudioHook one: not even decoded
        record = decode_or_skip(message, lambda m: loads(m.value), logger=log)
        if record is None or record.get("type") != "transcript":
            return
        try:
            self._queue.put_nowait((call_id, record))
        except asyncio.QueueFull:
            self._count(call_id, "overflow", f"queue full ({self._queue.maxsize} records): "
                        "the newest transcript is dropped")

    async def _deliver(self) -> None:
        while True:
            call_id, record = await self._queue.get()
            await self._send(call_id, record)

    async def _send(self, call_id: str, record: dict[str, Any]) -> None:
        handle = self._registry.get(call_id)
        if not isinstance(handle, ProviderSession) \
                or not isinstance(handle.player, AudioHookPlayer):
            self._count(call_id, "ended", "the session ended before its transcript was sent")
            return
        pending = self._stalled.get(call_id)
        if pending is not None and not pending.done():
            self._count(call_id, "stalled", "a send is still pending: transcript dropped")
            return
        self._stalled.pop(call_id, None)
        player = handle.player
        task = asyncio.create_task(handle.send_rendered(
            lambda: player.transcript_frames(record)))
        done, _ = await asyncio.wait({task}, timeout=self._timeout_s)
        if not done:  # left to finish (or fail) on its own; the call's records wait for it
            self._stalled[call_id] = task
            task.add_done_callback(self._settled)
            self._count(call_id, "stalled", f"send not done after {self._timeout_s:g} s")
            return
        try:
            sent = task.result()
        except ConnectionClosed:
            self._count(call_id, "send_failed", "the session's socket is closed")
            return
        except Exception as exc:  # noqa: BLE001 -- counted, never kills the delivery task
            self._count(call_id, "send_failed", f"{type(exc).__name__}: {exc}")
            return
        self._count(call_id, "sent" if sent else "ended", "")

    def _settled(self, task: asyncio.Task[int]) -> None:
        if not task.cancelled() and task.exception() is not None:
            metrics.INGEST_AUDIOHOOK_EVENTS.labels("send_failed").inc()

    def _count(self, call_id: str, outcome: str, why: str) -> None:
        metrics.INGEST_AUDIOHOOK_EVENTS.labels(outcome).inc()
        if not why or (call_id, outcome) in self._logged:
            return
        self._logged[(call_id, outcome)] = None
        if len(self._logged) > 10_000:
            self._logged.popitem(last=False)
        log.warning("audiohook call %s: transcript event not sent (%s): %s", call_id,
                    outcome, why)


__all__ = ["AudioHookTranscripts", "source_topic"]
