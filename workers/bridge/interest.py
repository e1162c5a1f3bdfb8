"""The bridge's side of ``CALLSCRIBE_INTERIMS=watched``: which calls this replica's liveCalls
clients watch with ``interim=true``, published on the interest topic.

:class:`Watchers` (pure) counts those clients per call and says when a call starts or stops
being watched. :class:`InterestPublisher` sends an :class:`~workers.records.InterimInterest`
keyed by the call id (so it lands on the partition of the call's audio) when that happens, and
again every ``interval_s`` for every watched call; each record holds for twice the interval,
so the interest of a replica that dies lapses by itself. Its queue is the ``pending`` map, one
entry per call (a newer state replaces an unsent one), so it is bounded by the calls this
replica's clients watch; a record that could not be sent stays pending and is retried on the
next tick (the overflow policy: coalesce, never grow).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from workers.records import InterimInterest, dumps

log = logging.getLogger(__name__)

#: Longest the last "no longer watched" records may take to send when the bridge stops.
STOP_FLUSH_S = 2.0


class Watchers:
    """Clients watching each call with interims."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, call_id: str) -> bool:
        """One more client of ``call_id``; whether the call just became watched."""
        self._counts[call_id] = self._counts.get(call_id, 0) + 1
        return self._counts[call_id] == 1

    def remove(self, call_id: str) -> bool:
        """One client of ``call_id`` went; whether that was the last."""
        left = self._counts.get(call_id, 0) - 1
        if left > 0:
            self._counts[call_id] = left
            return False
        self._counts.pop(call_id, None)
        return left == 0

    def calls(self) -> list[str]:
        return list(self._counts)


class InterestPublisher:
    """Publishes this replica's :class:`Watchers` on the interest topic (see the module)."""

    def __init__(self, *, topic: str, instance: str, interval_s: float) -> None:
        self._topic = topic
        self._instance = instance
        self._interval_s = interval_s
        self.watchers = Watchers()
        self.producer: AIOKafkaProducer | None = None  # set once started
        self._pending: dict[str, bool] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, call_id: str) -> None:
        if self.watchers.add(call_id):
            self._change(call_id, True)

    def unwatch(self, call_id: str) -> None:
        if self.watchers.remove(call_id):
            self._change(call_id, False)

    def _change(self, call_id: str, watching: bool) -> None:
        self._pending[call_id] = watching
        self._wake.set()

    def start(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._task = asyncio.create_task(self._run(), name="bridge-interest")

    async def stop(self) -> None:
        """Stop re-sending; say that no call is watched here any more (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for call_id in self.watchers.calls():
            self._pending[call_id] = False
        # Never holds the drain up for long: what is not said lapses by itself.
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self._flush()

    async def _run(self) -> None:
        next_beat = time.monotonic() + self._interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._interval_s
                for call_id in self.watchers.calls():
                    self._pending.setdefault(call_id, True)
            try:
                await self._flush()
            except (KafkaError, OSError) as exc:
                log.warning("could not publish interim interest (retried in %.0fs): %r",
                            self._interval_s, exc)

    async def _flush(self) -> None:
        """Send every pending state; one that fails stays pending unless replaced."""
        if self.producer is None or not self._pending:
            return
        sending, self._pending = self._pending, {}
        now = int(time.time() * 1000)
        ttl = int(2 * self._interval_s * 1000)
        try:
            futures = [await self.producer.send(
                self._topic, key=call_id.encode(), value=dumps(InterimInterest(
                    call_id=call_id, bridge=self._instance, watching=watching, at_ms=now,
                    ttl_ms=ttl).to_json()))
                for call_id, watching in sending.items()]
            await asyncio.gather(*futures)
        except BaseException:
            for call_id, watching in sending.items():
                self._pending.setdefault(call_id, watching)
            raise


__all__ = ["InterestPublisher", "Watchers"]
