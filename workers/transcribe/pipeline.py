"""The decode pipeline: one bounded FIFO of jobs between the agent and whisper, and interims
scheduled from the decoder time it leaves.

The agent only endpoints (fast) and enqueues; one runner task takes jobs in order, decodes the
utterances in a batch off the event loop, turns results into records through the
:class:`CallTracker` (in queue order, so a call's records keep liveCalls order), sends them,
and only then acknowledges the audio records they came from.

Overflow policy (the queue holds at most ``max_jobs``): a full queue makes ``submit`` wait,
which stops the agent and so the consumer (back-pressure on Kafka, never a dropped final).
Acknowledgements take no queue slot: they wait beside the queue for the jobs submitted before
them.

Early decodes come next: once a channel's trailing silence is settled (what its close will
keep), the tracker marks it (:attr:`CallTracker.early`) and the runner decodes that audio while
the end-of-speech wait runs, in the batch of the queued finals when there is one (same windows)
or on their own, as many as fit the interim budget (they are speculative too). If the wait
ends with no more speech, the final is that result (:meth:`CallTracker.reusable`), sent without
a decode of its own; if speech goes on, it served as an interim.

Interims are best effort and never queued: the tracker marks call channels whose open
utterance has ``interim_ms`` of new audio (:attr:`CallTracker.wanted`), and only when no job
waits does the runner decode interims, of the channels served least recently first
(round-robin; a channel whose next interim may close a committed sentence goes first, since
that sentence's final waits on it), as many in one batch as its estimate says fit
``interim_budget_s``. So a final
never waits behind queued interims, at most behind one interim batch. Interims take at most
``interim_share`` of the decoder's time when finals need the rest: after an interim batch of *d*
seconds the next waits *d* (1 - share) / share, scaled by how much of the last
``LOAD_WINDOW_S`` the decoder spent on finals and early decodes against the (1 - share) they are
owed (no wait when it spent none, the whole wait from (1 - share) up). So an idle decoder
serves interims back to back (words are seen and committed sooner at low load), and under load
each call gets interims less often (``callscribe_transcribe_interim_interval_seconds``) while
finals keep the rest. Each interim decodes the open utterance as it is at that moment, after
its committed words.

Decode lanes (:attr:`workers.transcribe.asr.Transcriber.lanes`: whisper replicas that decode
at once, a core each) each take the next batch as above, so finals that queue behind a batch
in decoding go to the next free lane, and an idle decoder serves interims in every lane. A
batch of queued jobs completes (makes and sends its records, acknowledges) only after the
queued batch before it, so records and acknowledgements keep queue order whatever lane
finishes first; one batch's records are made and sent at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from workers import metrics
from workers.records import CallStarted
from workers.transcribe.asr import AsrResult, DecodeRequest
from workers.transcribe.calls import CallTracker, DecodeWork

log = logging.getLogger(__name__)

Send = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
Ack = Callable[[list[Any]], Awaitable[None]]
#: Requests -> results, in order.
Decode = Callable[[Sequence[DecodeRequest]], Awaitable[list[AsrResult]]]
#: Interval between two interims of one channel above which it is not observed (a new turn).
_INTERVAL_MAX_S = 30.0
#: What each utterance after the first adds to a batch's decode time, as a share of a batch
#: of one (encoder passes add up; the decoder's steps are shared). Measured 2026-12-07, tiny.en
#: int8, 2 threads, 5 s of speech each: 1, 4 and 8 interims took 297, 649 and 1,144 ms.
BATCH_ITEM_COST = 0.4
#: How far back the decoder's time on finals and early decodes is looked at (seconds).
LOAD_WINDOW_S = 5.0


def interim_room(budget_s: float, single_s: float, batch_max: int) -> int:
    """How many interims one batch may hold to take about ``budget_s``, given that a batch of
    one takes ``single_s`` (at least one, at most ``batch_max``)."""
    if single_s <= 0:
        return batch_max
    extra = (budget_s / single_s - 1) / BATCH_ITEM_COST
    return max(1, min(batch_max, 1 + int(extra)))


@dataclass(slots=True)
class PipelineStep:
    """One entry of the ordered queue (a "job"): decode a :class:`DecodeWork`, or start or
    finish a call, in the order the records came; ``tokens`` are acknowledged once it and
    every step before it are done."""

    kind: Literal["decode", "start", "finish"]
    call_id: str
    work: DecodeWork | None = None
    started: CallStarted | None = None
    tokens: list[Any] = field(default_factory=list)
    seq: int = 0  # 0: an interim, outside the ordered queue


class DecodePipeline:
    """Runs jobs in order and interims in between; see the module docstring."""

    def __init__(self, tracker: CallTracker, *, decode: Decode, send: Send, ack: Ack,
                 max_jobs: int = 64, batch_max: int = 8, interim_budget_s: float = 0.7,
                 interim_share: float = 0.5, lanes: int = 1) -> None:
        self._tracker = tracker
        self._decode = decode
        self._send = send
        self._ack = ack
        self._max_jobs = max_jobs
        self._batch_max = batch_max
        self._interim_budget_s = interim_budget_s
        self._interim_share = min(max(interim_share, 0.05), 1.0)
        self._lanes = max(1, lanes)
        self._interim_single_s = 0.15  # running estimate of a batch of one interim
        self._interims_from = 0.0  # monotonic time before which no interim batch starts
        self._queue: asyncio.Queue[PipelineStep] = asyncio.Queue(max_jobs)
        self._wake = asyncio.Event()
        self._served: dict[tuple[str, int], float] = {}  # last interim per call channel
        self._submitted = 0  # seq of the last job submitted
        self._done = 0  # every job up to this seq is complete
        self._deferred_acks: collections.deque[tuple[int, list[Any]]] = collections.deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0  # lanes decoding now
        self._completing = asyncio.Lock()  # one batch's records at a time
        #: Done once the last batch of queued jobs taken so far has completed.
        self._ordered_done: asyncio.Future[None] | None = None
        #: Early decodes being decoded in a lane, by utterance id: done once completed.
        self._early_running: dict[str, asyncio.Future[None]] = {}
        #: (ended at, seconds) of recent batches that held a final or early decode.
        self._final_batches: collections.deque[tuple[float, float]] = collections.deque()
        #: Calls moved to another worker since their jobs were queued (see :meth:`drop`).
        self._dropped: set[str] = set()
        self._running = asyncio.Event()  # cleared while a rebalance decides who owns what
        self._running.set()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def poke(self) -> None:
        """Interims or early decodes may be wanted (the tracker took audio): wake an idle
        runner."""
        if self._tracker.wanted or self._tracker.early:
            self._wake.set()

    def pause(self) -> None:
        """A rebalance began: start no batch (the one running finishes) until :meth:`resume`,
        so that nothing is produced for a call while another worker may be taking it over."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def drop(self, call_ids: set[str]) -> None:
        """These calls moved to another worker (a rebalance): forget them, and let their
        queued jobs produce and acknowledge nothing (the new owner replays that audio from
        the committed offset), until a record of theirs comes again."""
        for call_id in call_ids:
            self._tracker.forget(call_id)
        self._dropped |= call_ids

    async def submit_work(self, work: DecodeWork) -> None:
        await self._put(PipelineStep("decode", work.call_id, work=work, tokens=work.tokens))

    async def submit_start(self, event: CallStarted, tokens: list[Any]) -> None:
        await self._put(PipelineStep("start", event.call_id, started=event, tokens=tokens))

    async def submit_finish(self, call_id: str, tokens: list[Any]) -> None:
        await self._put(PipelineStep("finish", call_id, tokens=tokens))

    async def submit_ack(self, tokens: list[Any]) -> None:
        """Acknowledge ``tokens`` once every job submitted before them is done."""
        if not tokens:
            return
        if self._done == self._submitted:
            await self._ack(tokens)
        else:
            self._deferred_acks.append((self._submitted, tokens))

    async def _put(self, job: PipelineStep) -> None:
        self._dropped.discard(job.call_id)  # ours again
        self._idle.clear()
        self._submitted += 1
        job.seq = self._submitted
        await self._queue.put(job)
        self._wake.set()

    async def wait_idle(self, *, interims: bool = False) -> None:
        """Until every job submitted so far is done (used when draining); ``interims``: and
        no interim is wanted or being decoded."""
        while True:
            await self._idle.wait()
            if self._queue.empty() and self._done == self._submitted and not (
                    interims and (self._tracker.wanted or self._busy)):
                return
            await asyncio.sleep(0.005)

    async def run(self) -> None:
        """Run every lane until cancelled (or one fails)."""
        lanes = [asyncio.create_task(self._lane(), name=f"decode-lane-{i}")
                 for i in range(self._lanes)]
        try:
            await asyncio.gather(*lanes)
        finally:
            for lane in lanes:
                lane.cancel()

    async def _lane(self) -> None:
        while True:
            await self._running.wait()
            batch = await self._next_batch()
            after: asyncio.Future[None] | None = None
            mine: asyncio.Future[None] | None = None
            if any(job.seq for job in batch):  # completes after the queued batch before it
                after = self._ordered_done
                mine = self._ordered_done = asyncio.get_running_loop().create_future()
            self._busy += 1
            try:
                await self._run_batch(batch, after=after)
            except Exception:
                log.exception("decode batch failed; its audio stays unacknowledged")
                raise
            finally:
                self._busy -= 1
                if mine is not None and not mine.done():
                    mine.set_result(None)
                if self._queue.empty() and self._done == self._submitted:
                    self._idle.set()

    async def _next_batch(self) -> list[PipelineStep]:
        """Queued jobs first (up to ``batch_max``, in order, with early decodes in the room
        left); else early decodes; else interims; else wait."""
        while True:
            if not self._queue.empty():
                batch = [self._queue.get_nowait()]
                while len(batch) < self._batch_max and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                # Early decodes share the finals' windows: they ride in the same batch.
                return batch + self._early(self._batch_max - len(batch))
            # On their own, early decodes are speculative like interims: a batch of them
            # keeps to the interim budget, so a final that comes meanwhile waits no longer.
            early = self._early(self._interim_room())
            if early:
                return early
            now = time.monotonic()
            if now >= self._interims_from:
                interims = self._interims()
                if interims:
                    return interims
            self._wake.clear()
            if not self._queue.empty():
                continue
            if self._tracker.early:
                continue
            if not self._tracker.wanted:
                await self._wake.wait()
            else:  # interims wanted, but their share of the decoder is spent for now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           max(0.0, self._interims_from - now))

    def _early(self, room: int) -> list[PipelineStep]:
        """Up to ``room`` early jobs (utterances whose end-of-speech wait began), oldest pause
        first."""
        jobs: list[PipelineStep] = []
        for key in list(self._tracker.early):
            if len(jobs) >= room:
                break
            work = self._tracker.early_work(key)
            if work is not None:
                self._served[key] = time.monotonic()
                jobs.append(PipelineStep("decode", work.call_id, work=work))
        return jobs

    def _interim_room(self) -> int:
        return interim_room(self._interim_budget_s, self._interim_single_s, self._batch_max)

    def _interims(self) -> list[PipelineStep]:
        """Interim jobs for the channels served least recently, within the budget."""
        # Channels whose next interim may close a sentence first (that final waits on it),
        # then the ones served least recently.
        wanted = sorted(self._tracker.wanted, key=lambda k: (
            not self._tracker.close_pending(k), self._served.get(k, 0.0)))
        room = self._interim_room()
        jobs: list[PipelineStep] = []
        now = time.monotonic()
        for key in wanted:
            if len(jobs) >= room:
                break
            work = self._tracker.interim_work(key)
            if work is None or work.id in self._early_running:
                continue  # (its early decode, being decoded, serves as its interim)
            last = self._served.get(key)
            if last is not None and now - last < _INTERVAL_MAX_S:
                metrics.TRANSCRIBE_INTERIM_INTERVAL.observe(now - last)
            self._served[key] = now
            jobs.append(PipelineStep("decode", work.call_id, work=work))
        if len(self._served) > 4 * max(len(self._tracker.calls), 16):
            live = {(c, ch) for c, s in self._tracker.calls.items() for ch in s.channels}
            self._served = {k: v for k, v in self._served.items() if k in live}
        return jobs

    async def _run_batch(self, batch: list[PipelineStep], *,
                         after: asyncio.Future[None] | None = None) -> None:
        reused = await self._reused(batch)
        decodes = [j for j in batch
                   if j.kind == "decode" and j.work is not None and id(j) not in reused]
        running = {j.work.id: asyncio.get_running_loop().create_future() for j in decodes
                   if j.work is not None and j.work.kind == "early"}
        self._early_running.update(running)
        try:
            await self._decode_and_complete(batch, decodes, reused, after)
        finally:
            for key, done in running.items():
                done.set_result(None)
                if self._early_running.get(key) is done:
                    del self._early_running[key]

    async def _reused(self, batch: list[PipelineStep]) -> dict[int, AsrResult]:
        """The early results the batch's finals are (by ``id()`` of the job): an early decode
        of a final's utterance that another lane is decoding now is waited for, not repeated."""
        reused: dict[int, AsrResult] = {}
        for job in batch:
            if job.kind != "decode" or job.work is None or job.work.kind != "final":
                continue
            running = self._early_running.get(job.work.id)
            if running is not None:
                await asyncio.shield(running)
            early = self._tracker.reusable(job.work)
            if early is not None:
                reused[id(job)] = early
        return reused

    async def _decode_and_complete(self, batch: list[PipelineStep],
                                   decodes: list[PipelineStep], reused: dict[int, AsrResult],
                                   after: asyncio.Future[None] | None) -> None:
        works = [j.work for j in decodes if j.work is not None]
        for work in works:
            if work.kind == "final":
                metrics.TRANSCRIBE_QUEUE_WAIT_SECONDS.observe(
                    max(0.0, time.time() - work.ready_at))
        if decodes:
            metrics.TRANSCRIBE_BATCH_SIZE.observe(len(decodes))
        separates = [self._tracker.separates(w) for w in works]
        # A mixed call's final (or early decode) is aligned too when its voice prints may
        # change speaker (judged against its speakers now): the words' times place the change.
        requests = [DecodeRequest(w.utterance.pcm, prefix=self._tracker.prefix_for(w),
                                  retry=w.kind != "interim", align=w.kind != "final",
                                  kind=w.kind, vocabulary=self._tracker.vocabulary_for(w),
                                  speakers=mixed,
                                  centroids=self._tracker.speaker_centroids(w)
                                  if mixed and w.kind != "interim" else None)
                    for w, mixed in zip(works, separates, strict=True)]
        started = time.monotonic()
        results = await self._decode(requests)
        took = time.monotonic() - started
        if works and all(w.kind == "interim" for w in works):
            single = took / (1 + BATCH_ITEM_COST * (len(works) - 1))
            self._interim_single_s = 0.7 * self._interim_single_s + 0.3 * single
            # Interims take at most interim_share of the decoder's time while finals need
            # the rest: the next interim batch waits in proportion to this one and to the
            # finals' recent load (finals never wait).
            self._interims_from = (time.monotonic() + took * self._interim_pause())
        elif works:
            self._final_batches.append((time.monotonic(), took))
            self._forget_old_batches()
        by_job = {id(job): result for job, result in zip(decodes, results, strict=True)}
        by_job.update(reused)
        if after is not None:
            await asyncio.shield(after)
        async with self._completing:
            for job in batch:
                await self._complete(job, by_job.get(id(job)))

    def _interim_pause(self) -> float:
        """Seconds of wait per second of interim decoding: (1 - share) / share, scaled by
        the share of the last ``LOAD_WINDOW_S`` spent on finals and early decodes against the
        (1 - share) they are owed."""
        self._forget_old_batches()
        load = sum(took for _, took in self._final_batches) / LOAD_WINDOW_S
        owed = 1 - self._interim_share
        if owed <= 0:
            return 0.0
        return owed / self._interim_share * min(1.0, load / owed)

    def _records(self, job: PipelineStep, result: AsrResult | None) -> list[dict[str, Any]]:
        if job.kind == "decode" and job.work is not None:
            work = job.work
            if result is None:
                return []
            records = self._tracker.on_transcribed(work, result)
            if work.kind == "final" and records:
                metrics.TRANSCRIBE_EOU_TO_PRODUCED.observe(
                    max(0.0, records[-1]["producedAtMs"] / 1000 - work.ready_at))
            return records
        if job.kind == "start" and job.started is not None:
            return self._tracker.on_started(job.started)
        if job.kind == "finish":
            return self._tracker.finish(job.call_id)
        return []

    def _forget_old_batches(self) -> None:
        """Drop batches older than ``LOAD_WINDOW_S`` (also when no interim ever asks: with
        interims off the record would otherwise grow with every batch)."""
        horizon = time.monotonic() - LOAD_WINDOW_S
        while self._final_batches and self._final_batches[0][0] < horizon:
            self._final_batches.popleft()

    async def _complete(self, job: PipelineStep, result: AsrResult | None) -> None:
        dropped = job.call_id in self._dropped  # moved away: the new owner produces it
        records = [] if dropped else self._records(job, result)
        if records:
            await self._send(job.call_id, records)
        if not job.seq:
            return  # an interim: nothing to acknowledge, not in the ordered queue
        if not dropped:
            tokens = self._tracker.settle_tokens(job.call_id, job.tokens)
            if tokens:
                await self._ack(tokens)
        self._done = job.seq
        while self._deferred_acks and self._deferred_acks[0][0] <= self._done:
            await self._ack(self._deferred_acks.popleft()[1])
