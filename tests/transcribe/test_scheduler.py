"""The interim scheduler's logic, with the real tracker on fixture audio and a decoder that
only records what it was given (no model, no timing): interims are fair across calls, never
make a final wait behind them, and keep to their share of the decoder while finals need it."""

from __future__ import annotations

import asyncio
import collections
import itertools
import statistics
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tests.transcribe.test_calls import chunks_of, started
from workers.records import AudioChunk
from workers.transcribe.asr import AsrResult, DecodeRequest
from workers.transcribe.calls import CallTracker
from workers.transcribe.channel import VadConfig
from workers.transcribe.pipeline import LOAD_WINDOW_S, DecodePipeline, interim_room


class RecordingDecoder:
    """Every batch it decoded (the kinds, in order), each taking ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.audio: list[set[int]] = []  # id() of each batch's audio
        self.seconds = seconds

    async def __call__(self, requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        if requests:
            self.batches.append([r.kind for r in requests])
            self.audio.append({id(r.pcm) for r in requests})
        await asyncio.sleep(self.seconds)
        return [AsrResult(text=f"{r.prefix} words".strip(), words=(), decode_s=0.0,
                          suppressed=()) for r in requests]


_ALIVE: list[bytes] = []


def calls(count: int) -> list[list[AudioChunk]]:
    return [chunks_of("call_stereo_8k.wav", f"call-{i}") for i in range(count)]


async def play(pipeline: DecodePipeline, tracker: CallTracker,
               streams: list[list[AudioChunk]], *, between: float = 0.0,
               decoder: RecordingDecoder | None = None,
               finals_at: dict[int, int] | None = None) -> None:
    """Every call's chunks interleaved, as one partition would deliver them; ``finals_at``:
    each final's audio id -> how many batches the decoder had started when it was queued."""
    for call in streams:
        await pipeline.submit_start(started(call[0].call_id), [])
    for step in range(max(map(len, streams))):
        for call in streams:
            if step < len(call):
                jobs, _ = tracker.on_audio(call[step])
                for job in jobs:
                    if finals_at is not None and decoder is not None:
                        finals_at[id(job.utterance.pcm)] = len(decoder.batches)
                        _ALIVE.append(job.utterance.pcm)  # so no other audio reuses its id()
                    await pipeline.submit_work(job)
                pipeline.poke()
        await asyncio.sleep(between)


async def schedule(decoder: RecordingDecoder, streams: int, *, batch_max: int,
                   share: float, between: float, send: Any = None,
                   finals_at: dict[int, int] | None = None, interim_ms: int = 300,
                   early: bool = False, lanes: int = 1) -> float:
    """Play ``streams`` calls through a pipeline over ``decoder`` until every final and
    interim is done; the seconds it took. Early decodes are off unless ``early``: the
    interim tests count final decodes."""
    tracker = CallTracker(VadConfig(interim_ms=interim_ms, early=early))
    pipeline = DecodePipeline(tracker, decode=decoder, send=send or _nothing, ack=_nothing,
                              batch_max=batch_max, interim_share=share, lanes=lanes)
    runner = asyncio.create_task(pipeline.run())
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    try:
        await play(pipeline, tracker, calls(streams), between=between, decoder=decoder,
                   finals_at=finals_at)
        await pipeline.wait_idle(interims=True)
        return loop.time() - started_at
    finally:
        runner.cancel()


async def test_each_call_gets_interims_in_turn() -> None:
    served: collections.Counter[str] = collections.Counter()

    async def send(call_id: str, records: list[dict[str, Any]]) -> None:
        served.update(call_id for r in records if r["type"] == "transcript:interim")

    await schedule(RecordingDecoder(seconds=0.002), 4, batch_max=1, share=1.0, between=0.003,
                   send=send)
    assert len(served) == 4
    # One interim a batch, round-robin: no call got far more than another.
    assert max(served.values()) - min(served.values()) <= 0.35 * max(served.values()), served


async def test_a_final_never_waits_behind_interims() -> None:
    decoder = RecordingDecoder(seconds=0.001)
    finals_at: dict[int, int] = {}
    await schedule(decoder, 3, batch_max=8, share=1.0, between=0.002, finals_at=finals_at)
    kinds = [kind for batch in decoder.batches for kind in batch]
    assert "interim" in kinds and kinds.count("final") >= 12
    assert len(finals_at) == kinds.count("final")
    for audio, queued_at in finals_at.items():
        decoded_in = next(i for i, batch in enumerate(decoder.audio) if audio in batch)
        # at most the batch in flight when it was queued runs first, never another interim
        assert decoded_in <= queued_at, (decoded_in, queued_at)


def test_interims_wait_in_proportion_to_the_finals_load() -> None:
    pipeline = DecodePipeline(CallTracker(VadConfig(interim_ms=300)), decode=RecordingDecoder(),
                              send=_nothing, ack=_nothing, interim_share=0.25)
    # No final decoded lately: interims may take the whole decoder.
    assert pipeline._interim_pause() == 0.0
    now = time.monotonic()
    # Finals took 1.875 s of the last 5 s, half the 75 % they are owed: half the full wait.
    pipeline._final_batches.extend([(now - 1.0, 1.0), (now - 0.5, 0.875)])
    assert pipeline._interim_pause() == pytest.approx(1.5)
    # At (or above) what they are owed: the whole wait, (1 - share) / share.
    pipeline._final_batches.append((now, 2.0))
    assert pipeline._interim_pause() == pytest.approx(3.0)
    # Batches older than the window no longer count.
    pipeline._final_batches.appendleft((now - LOAD_WINDOW_S - 1, 10.0))
    assert pipeline._interim_pause() == pytest.approx(3.0)


class TimedDecoder(RecordingDecoder):
    """Also notes when each batch started (loop time)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.starts: list[float] = []

    async def __call__(self, requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        if requests:
            self.starts.append(asyncio.get_running_loop().time())
        return await super().__call__(requests)


@pytest.mark.parametrize("finals_load", [0.0, 1.0])
async def test_interims_wait_only_while_finals_need_the_decoder(finals_load: float) -> None:
    decoder = TimedDecoder(seconds=0.02)
    tracker = CallTracker(VadConfig(interim_ms=300))
    pipeline = DecodePipeline(tracker, decode=decoder, send=_nothing, ack=_nothing,
                              batch_max=1, interim_share=0.25)
    # As if finals had kept the decoder busy (1.0) or idle (0.0) for the last window.
    pipeline._final_batches.append((time.monotonic(), finals_load * LOAD_WINDOW_S))
    runner = asyncio.create_task(pipeline.run())
    try:
        await play(pipeline, tracker, calls(1), between=0.002)
        await pipeline.wait_idle(interims=True)
    finally:
        runner.cancel()
    batches = list(zip(decoder.starts, decoder.batches, strict=True))
    gaps = [b - a for (a, kinds_a), (b, kinds_b) in itertools.pairwise(batches)
            if kinds_a == kinds_b == ["interim"]]
    assert len(gaps) >= 3
    if finals_load:
        # 20 ms of interim decoding, then 60 ms of wait at a 25 % share.
        assert min(gaps) >= 0.079, gaps
    else:
        assert statistics.median(gaps) < 0.075, gaps


@pytest.mark.parametrize(("budget", "single", "room"), [
    # 3 x 0.15 s take 0.15 (1 + 2 BATCH_ITEM_COST) = 0.27 s <= 0.3 s
    (0.3, 0.3, 1), (0.3, 0.15, 3), (0.3, 0.05, 8), (0.3, 0.6, 1), (1.0, 0.0, 8)])
def test_an_interim_batch_holds_what_fits_the_budget(budget: float, single: float,
                                                     room: int) -> None:
    assert interim_room(budget, single, 8) == room


class KindDecoder(RecordingDecoder):
    """Answers each request with its kind, so a final's text says which decode it came from."""

    async def __call__(self, requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        await super().__call__(requests)
        return [AsrResult(text=f"{r.prefix} {r.kind}".strip(), words=(), decode_s=0.0,
                          suppressed=()) for r in requests]


@pytest.mark.parametrize(("interim_ms", "lanes", "seconds"), [
    (0, 1, 0.001), (300, 1, 0.001),
    # The early decode is still being decoded in one lane when the final is queued: the
    # other lane waits for it instead of decoding the utterance again. (Not with interims:
    # this fake decoder's interim and early texts never agree, unlike whisper's.)
    (0, 2, 0.05)])
async def test_a_final_decoded_during_the_end_of_speech_wait_is_not_decoded_again(
        interim_ms: int, lanes: int, seconds: float) -> None:
    finals: list[tuple[str, str]] = []

    async def send(call_id: str, records: list[dict[str, Any]]) -> None:
        finals.extend((r["id"], r["msg"]) for r in records if r["type"] == "transcript")

    decoder = KindDecoder(seconds=seconds)
    await schedule(decoder, 2, batch_max=8, share=1.0, between=0.003, send=send,
                   interim_ms=interim_ms, early=True, lanes=lanes)
    kinds = [kind for batch in decoder.batches for kind in batch]
    # Two calls of two channels, two sentences each: each final once, each from the decode
    # made while its end-of-speech wait ran, but the last of each call: its audio stops
    # 0.3 s after the speech, inside that wait, so the end of the stream closes it shorter.
    assert len(finals) == len({i for i, _ in finals}) == 8
    last = {"call-0:1:9060", "call-1:1:9060"}
    # (the fake decoder's text is the committed prefix, then the request's kind)
    assert all(text.split()[-1] == "early" for i, text in finals if i not in last), finals
    assert [text.split()[-1] for i, text in finals if i in last] == ["final", "final"]
    assert kinds.count("final") == 2 and kinds.count("early") >= 6


async def test_early_decodes_ride_in_the_batch_of_queued_finals() -> None:
    tracker = CallTracker(VadConfig(interim_ms=0))
    pipeline = DecodePipeline(tracker, decode=KindDecoder(), send=_nothing, ack=_nothing)
    # One call pauses (its early decode is due) while another call's final is queued.
    for chunk in chunks_of("caller.wav", "call-paused"):
        tracker.on_audio(chunk)
        if tracker.early:
            break
    assert tracker.early
    finals = [job for chunk in chunks_of("agent.wav", "call-final")
              for job in tracker.on_audio(chunk)[0]]
    for work in finals:
        await pipeline.submit_work(work)
    batch = await pipeline._next_batch()
    kinds = [job.work.kind for job in batch if job.work is not None]
    assert kinds == ["final"] * len(finals) + ["early"]
    assert not tracker.early


async def _nothing(*_: Any) -> None:
    return None


async def test_a_channel_whose_interim_may_close_a_sentence_is_served_first() -> None:
    """Two calls want an interim and one fits: the call whose open utterance holds a
    committed sentence end with words after it gets it, though served more recently."""
    tracker = CallTracker(VadConfig(interim_ms=300))
    pipeline = DecodePipeline(tracker, decode=RecordingDecoder(), send=_nothing, ack=_nothing,
                              batch_max=1)
    streams = calls(2)
    for step in range(40):  # both callers are inside their first utterance
        for call in streams:
            tracker.on_audio(call[step])
    keys = [k for k in tracker.wanted if k[1] == 0]
    assert len(keys) == 2
    first, second = keys
    pipeline._served = {first: 1.0, second: 2.0}  # round-robin alone would pick ``first``
    work = tracker.interim_work(second)
    assert work is not None
    tracker.on_transcribed(work, AsrResult(text="Hello.", words=(), decode_s=0.0, suppressed=()))
    tracker.on_transcribed(work, AsrResult(text="Hello. I", words=(), decode_s=0.0,
                                           suppressed=()))
    assert tracker.close_pending(second) and not tracker.close_pending(first)
    for step in range(40, 50):  # more of the same utterances: both want an interim again
        for call in streams:
            tracker.on_audio(call[step])
    assert second in tracker.wanted and first in tracker.wanted
    [job] = pipeline._interims()
    assert (job.call_id, job.work.channel if job.work else None) == second


class SlowFirstDecoder(RecordingDecoder):
    """The first batch of finals takes ``first`` seconds, every other batch none; records how
    many batches were being decoded at once at most."""

    def __init__(self, first: float) -> None:
        super().__init__()
        self.first = first
        self.running = self.most = 0

    async def __call__(self, requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        self.running += 1
        self.most = max(self.most, self.running)
        slow = not any(k == "final" for b in self.batches for k in b) and any(
            r.kind == "final" for r in requests)
        try:
            results = await super().__call__(requests)
            await asyncio.sleep(self.first if slow else 0.0)
            return results
        finally:
            self.running -= 1


async def test_with_two_lanes_records_and_acks_keep_queue_order() -> None:
    """A batch of finals that a lane decodes slowly completes before the batches queued after
    it that the other lane decoded meanwhile: each call's records and the acknowledgements
    keep queue order."""
    decoder = SlowFirstDecoder(first=0.3)
    tracker = CallTracker(VadConfig(interim_ms=300, early=False))
    sent: list[dict[str, Any]] = []
    acked: list[int] = []
    queued: list[str] = []  # the finals' ids, in queue order

    async def send(call_id: str, records: list[dict[str, Any]]) -> None:
        sent.extend(records)

    async def ack(tokens: list[Any]) -> None:
        acked.extend(tokens)

    pipeline = DecodePipeline(tracker, decode=decoder, send=send, ack=ack, batch_max=1,
                              lanes=2)
    runner = asyncio.create_task(pipeline.run())
    try:
        streams = calls(3)
        for call in streams:
            await pipeline.submit_start(started(call[0].call_id), [])
        token = 0
        for step in range(max(map(len, streams))):
            for call in streams:
                if step < len(call):
                    jobs, release = tracker.on_audio(call[step], token)
                    token += 1
                    for job in jobs:
                        queued.append(job.id)
                        await pipeline.submit_work(job)
                    pipeline.poke()
                    await pipeline.submit_ack(release)
            await asyncio.sleep(0.001)
        await pipeline.wait_idle(interims=True)
    finally:
        runner.cancel()
    assert decoder.most == 2  # the lanes decoded at once
    assert sorted(acked) == list(range(token))  # each once
    finals = [r["id"] for r in sent if r["type"] == "transcript"]
    assert len(queued) >= 6 and finals == queued  # in queue order, the slow first included
    for call in streams:
        mine = [r for r in sent if r["callId"] == call[0].call_id]
        assert mine[0]["type"] == "event:start"
        for channel in (0, 1):
            offsets = [r["offset"] for r in mine
                       if r["type"] == "transcript" and r.get("channel") == channel]
            assert offsets == sorted(offsets)
        # no interim of an utterance after its final
        final_at = {r["id"]: i for i, r in enumerate(mine) if r["type"] == "transcript"}
        assert all(i < final_at.get(r["id"], len(mine)) for i, r in enumerate(mine)
                   if r["type"] == "transcript:interim")
