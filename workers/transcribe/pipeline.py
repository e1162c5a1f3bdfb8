"""The decode pipeline: one bounded FIFO of jobs between the agent and whisper.

The agent only endpoints (fast) and enqueues; one runner task takes jobs in order, decodes the
utterances in a batch off the event loop, turns results into records through the
:class:`CallTracker` (in queue order, so a call's records keep liveCalls order), sends them,
and only then acknowledges the audio records they came from.

Overflow policy (the queue holds at most ``max_jobs``): a full queue makes ``submit`` wait,
which stops the agent and so the consumer (back-pressure on Kafka, never a dropped final).
Interims are best effort and shed first: one is not queued while any final waits, and a
queued one is cancelled when a newer interim or the final of its utterance arrives; each drop
is counted. Acknowledgements take no queue slot: they wait beside the queue for the jobs
submitted before them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from workers import metrics
from workers.records import CallStarted
from workers.transcribe.asr import AsrResult
from workers.transcribe.calls import CallTracker, Work

log = logging.getLogger(__name__)

Send = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
Ack = Callable[[list[Any]], Awaitable[None]]
#: (utterances, whether each is decoded again if it loops: finals) -> results, in order.
Decode = Callable[[list[bytes], list[bool]], Awaitable[list[AsrResult]]]


@dataclass(slots=True)
class Job:
    kind: Literal["decode", "start", "finish"]
    call_id: str
    work: Work | None = None
    started: CallStarted | None = None
    tokens: list[Any] = field(default_factory=list)
    cancelled: bool = False
    seq: int = 0


class DecodePipeline:
    """Runs jobs in order; see the module docstring for the overflow policy."""

    def __init__(self, tracker: CallTracker, *, decode: Decode, send: Send, ack: Ack,
                 max_jobs: int = 64, batch_max: int = 8) -> None:
        self._tracker = tracker
        self._decode = decode
        self._send = send
        self._ack = ack
        self._max_jobs = max_jobs
        self._batch_max = batch_max
        self._queue: asyncio.Queue[Job] = asyncio.Queue(max_jobs)
        self._latest_interim: dict[str, Job] = {}
        self._finals_waiting = 0
        self._submitted = 0  # seq of the last job submitted
        self._done = 0  # every job up to this seq is complete
        self._deferred_acks: collections.deque[tuple[int, list[Any]]] = collections.deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit_work(self, work: Work) -> None:
        previous = self._latest_interim.pop(work.id, None)
        if previous is not None:  # superseded by a newer interim, or by the final
            previous.cancelled = True
            metrics.TRANSCRIBE_SUPPRESSED.labels("interim_superseded").inc()
        if work.kind == "interim":
            if self._finals_waiting:
                metrics.TRANSCRIBE_SUPPRESSED.labels("interim_shed").inc()
                return
            job = Job("decode", work.call_id, work=work)
            self._latest_interim[work.id] = job
        else:
            self._finals_waiting += 1
            job = Job("decode", work.call_id, work=work, tokens=work.tokens)
        await self._put(job)

    async def submit_start(self, event: CallStarted, tokens: list[Any]) -> None:
        await self._put(Job("start", event.call_id, started=event, tokens=tokens))

    async def submit_finish(self, call_id: str, tokens: list[Any]) -> None:
        await self._put(Job("finish", call_id, tokens=tokens))

    async def submit_ack(self, tokens: list[Any]) -> None:
        """Acknowledge ``tokens`` once every job submitted before them is done."""
        if not tokens:
            return
        if self._done == self._submitted:
            await self._ack(tokens)
        else:
            self._deferred_acks.append((self._submitted, tokens))

    async def _put(self, job: Job) -> None:
        self._idle.clear()
        self._submitted += 1
        job.seq = self._submitted
        await self._queue.put(job)

    async def wait_idle(self) -> None:
        """Until every job submitted so far is done (used when draining)."""
        while True:
            await self._idle.wait()
            if self._queue.empty() and self._done == self._submitted:
                return

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._run_batch(batch)
            except Exception:
                log.exception("decode batch failed; its audio stays unacknowledged")
                raise
            finally:
                if self._queue.empty():
                    self._idle.set()

    async def _run_batch(self, batch: list[Job]) -> None:
        decodes = [j for j in batch if j.kind == "decode" and not j.cancelled
                   and j.work is not None]
        for job in decodes:
            assert job.work is not None
            metrics.TRANSCRIBE_QUEUE_WAIT_SECONDS.observe(
                max(0.0, time.time() - job.work.ready_at))
        if decodes:
            metrics.TRANSCRIBE_BATCH_SIZE.observe(len(decodes))
        works = [j.work for j in decodes if j.work is not None]
        results = await self._decode([w.utterance.pcm for w in works],
                                     [w.kind == "final" for w in works])
        by_job = {id(job): result for job, result in zip(decodes, results, strict=True)}
        for job in batch:
            await self._complete(job, by_job.get(id(job)))

    async def _complete(self, job: Job, result: AsrResult | None) -> None:
        records: list[dict[str, Any]] = []
        if job.kind == "decode" and job.work is not None:
            work = job.work
            if work.kind == "interim" and self._latest_interim.get(work.id) is job:
                del self._latest_interim[work.id]
            if result is not None:
                records = self._tracker.on_transcribed(work, result)
                if work.kind == "final" and records:
                    metrics.TRANSCRIBE_EOU_TO_PRODUCED.observe(
                        max(0.0, records[-1]["producedAtMs"] / 1000 - work.ready_at))
        elif job.kind == "start" and job.started is not None:
            records = self._tracker.on_started(job.started)
        elif job.kind == "finish" and not job.cancelled:
            records = self._tracker.finish(job.call_id)
        if records:
            await self._send(job.call_id, records)
        if job.kind == "decode" and job.work is not None and job.work.kind == "final":
            self._finals_waiting -= 1
        if job.tokens:
            await self._ack(job.tokens)
        self._done = job.seq
        while self._deferred_acks and self._deferred_acks[0][0] <= self._done:
            await self._ack(self._deferred_acks.popleft()[1])
