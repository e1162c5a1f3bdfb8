"""The transcription worker: a faust-streaming app whose one agent reads the audio and calls
topics (co-partitioned by call id; with ``CALLSCRIBE_INTERIMS=watched`` the interest topic
too) and produces to the transcripts topic.

The agent stays thin: decode the record, let :class:`CallTracker` cut utterances, hand decode
jobs to the :class:`DecodePipeline` (whisper off the event loop). The stream acknowledges
manually: an audio record is acknowledged, and so its offset committed, only after the
transcript it contributed to was produced, and replaying from the first unacknowledged record
produces nothing twice (see :mod:`workers.transcribe.calls`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError

from workers import faust_app, logs, metrics
from workers.kafka import decode_or_skip, record_call
from workers.records import (
    AudioChunk,
    CallEnded,
    CallEvent,
    CallStarted,
    InterimInterest,
    Topics,
    call_event_from_json,
    dumps,
    loads,
)
from workers.settings import TranscribeSettings
from workers.transcribe.asr import Transcriber
from workers.transcribe.calls import CallTracker, now_ms
from workers.transcribe.channel import VadConfig
from workers.transcribe.pipeline import DecodePipeline
from workers.transcribe.produced import produced_until
from workers.transcribe.separation import SpeakerStage, load_encoder
from workers.transcribe.speakers import SeparationConfig

log = logging.getLogger(__name__)

#: Longest the transcripts topic is read at an assignment (it delays the rebalance).
PRODUCED_TIMEOUT_S = 5.0


def vad_config(settings: TranscribeSettings) -> VadConfig:
    """The endpointer and interim settings of :class:`CallTracker`."""
    return VadConfig(
        aggressiveness=settings.vad_aggressiveness, frame_ms=settings.vad_frame_ms,
        start_ms=settings.vad_start_ms, end_silence_ms=settings.vad_end_silence_ms,
        padding_ms=settings.vad_padding_ms, min_utterance_ms=settings.min_utterance_ms,
        max_utterance_ms=int(settings.max_utterance_s * 1000), interim_ms=settings.interim_ms,
        max_gain_db=settings.vad_max_gain_db, soft_after_ms=settings.vad_soft_after_ms,
        soft_silence_ms=settings.vad_soft_silence_ms,
        early=settings.early_finals, commit_at_pauses=settings.commit_at_pauses,
    )


def speaker_stage(settings: TranscribeSettings) -> tuple[SpeakerStage, SeparationConfig | None]:
    """The voice-print stage and the tracker's separation settings (None: off)."""
    if not settings.speakers:
        return SpeakerStage(None, unavailable="CALLSCRIBE_SPEAKERS is off"), None
    encoder, why = load_encoder()
    if encoder is not None:
        log.info("speakers of mixed calls are separated (voice prints: GE2E)")
    mixes = frozenset(m.strip() for m in settings.speakers_mixes.split(",") if m.strip())
    return SpeakerStage(encoder, unavailable=why), SeparationConfig(
        mixes=mixes, first=settings.speakers_first, new_below=settings.speakers_new_below,
        available=encoder is not None, unavailable=why)


class Transcription:
    """What the agent does with each event: decode it, let the tracker cut utterances, queue
    the work in the pipeline; and the pipeline's way out: send transcripts, acknowledge."""

    def __init__(self, app: faust.App, settings: TranscribeSettings,
                 transcriber: Transcriber) -> None:
        self._app = app
        self._settings = settings
        self.topics = topics = Topics(settings.topic_prefix)
        self.speakers, separation = speaker_stage(settings)
        probe = getattr(app, "broker_probe", None)
        watched = settings.interims == "watched"
        # The idle timeout does not count a broker outage (docs/reliability.md).
        self.tracker = CallTracker(vad_config(settings), separation=separation,
                                   clock=probe.answered_clock if probe is not None
                                   else time.monotonic, interims_watched_only=watched)
        sources = (topics.audio, topics.calls, *((topics.interest,) if watched else ()))
        self.source = app.topic(*sources, key_type=bytes, value_type=bytes,
                                key_serializer="raw", value_serializer="raw", internal=False)
        self._sink = app.topic(topics.transcripts, key_serializer="raw",
                               value_serializer="raw", internal=False)
        self._produce_seconds = metrics.KAFKA_PRODUCE_SECONDS.labels(topics.transcripts)
        self._stream: Any = None
        #: The partition each call's records come on (audio and calls are co-partitioned).
        self.partitions: dict[str, int] = {}
        #: The audio partitions this worker holds (from the last assignment).
        self.assigned: set[int] = set()
        #: Set while no assignment is being taken in: records of partitions new to this
        #: worker wait for what was transcribed of their calls (faust resumes the stream
        #: before it signals the assignment).
        self.settled = asyncio.Event()
        self.settled.set()
        self.pipeline = DecodePipeline(
            self.tracker, decode=self.speakers.wrap(transcriber.decode), send=self.send,
            ack=self.ack,
            max_jobs=settings.decode_queue, batch_max=settings.decode_batch,
            interim_budget_s=settings.interim_budget_ms / 1000,
            interim_share=settings.interim_share, lanes=transcriber.lanes)

    def _acked_since(self, started: float) -> Callable[[Any], None]:
        """A faust send callback (called once the broker acknowledged the record)."""
        return lambda _: self._produce_seconds.observe(time.monotonic() - started)

    async def send(self, call_id: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            await self._sink.send(key=call_id.encode(), value=dumps(record),
                                  callback=self._acked_since(time.monotonic()))

    async def ack(self, events: list[Any]) -> None:
        owned = self._app.consumer.assignment()
        for event in events:
            # Never for a partition that moved away since: its new owner commits it (an old
            # owner's commit could move the offset past audio the new owner still holds).
            if event.message.tp in owned:
                await self._stream.ack(event)

    async def run(self, stream: Any) -> None:
        """The agent's body: every event of the stream, acknowledged manually."""
        self._stream = stream = stream.noack()
        runner = asyncio.create_task(self.pipeline.run(), name="decode-pipeline")
        try:
            async for event in stream.events():
                await self.handle(event)
        finally:
            # Stopping (SIGTERM, rebalance): finish what is queued, under a deadline; what is
            # left stays unacknowledged and is transcribed by the next owner of the partition.
            self.pipeline.resume()
            self.settled.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.pipeline.wait_idle(), self._settings.drain_seconds)
            runner.cancel()

    def _observe_lag(self, tp: Any, offset: int) -> None:
        highwater = self._app.consumer.highwater(tp)
        if highwater is not None:
            metrics.KAFKA_CONSUMER_LAG.labels("transcribe", tp.topic, str(tp.partition)).set(
                max(0, highwater - offset - 1))

    async def handle(self, event: Any) -> None:
        message = event.message
        if not self.settled.is_set():
            await self.settled.wait()
        self._observe_lag(message.tp, message.offset)
        if message.key and message.topic != self.topics.interest:
            self.partitions[message.key.decode(errors="replace")] = message.partition
        with logs.call_context(record_call(message)):
            decoded = decode_or_skip(message, self._decode, logger=log)
            if decoded is None:
                await self.pipeline.submit_ack([event])
            elif isinstance(decoded, AudioChunk):
                await self._on_audio(decoded, event)
            elif isinstance(decoded, InterimInterest):
                self.tracker.on_interest(decoded)
                await self.pipeline.submit_ack([event])
            else:
                await self._on_call_event(decoded, event)

    def _decode(self, message: Any) -> AudioChunk | CallEvent | InterimInterest:
        if message.topic == self.topics.audio:
            return AudioChunk.from_kafka(message.key, message.value, message.headers)
        if message.topic == self.topics.interest:
            return InterimInterest.from_json(loads(message.value))
        return call_event_from_json(loads(message.value))

    async def _on_audio(self, chunk: AudioChunk, event: Any) -> None:
        metrics.TRANSCRIBE_AUDIO_SECONDS.labels(chunk.role).inc(chunk.samples / chunk.rate)
        jobs, release = self.tracker.on_audio(chunk, event)
        for work in jobs:
            await self.pipeline.submit_work(work)
        self.pipeline.poke()
        if self.tracker.finish_if_complete(chunk.call_id):
            await self.pipeline.submit_finish(chunk.call_id, release)
        else:
            await self.pipeline.submit_ack(release)

    async def _on_call_event(self, call_event: CallEvent, event: Any) -> None:
        if isinstance(call_event, CallStarted):
            self.tracker.on_vocabulary(call_event)
            self.tracker.on_mix(call_event)
            await self.pipeline.submit_start(call_event, [event])
            return
        if isinstance(call_event, CallEnded):
            self.tracker.on_ended(call_event)
            if self.tracker.finish_if_complete(call_event.call_id):
                await self.pipeline.submit_finish(call_event.call_id, [event])
                return
        await self.pipeline.submit_ack([event])

    async def expire_idle_calls(self) -> None:
        for call_id in self.tracker.idle_calls(self._settings.call_idle_timeout_s):
            await self.pipeline.submit_finish(call_id, [])
        for call_id in [c for c in self.partitions if self.tracker.finished(c)]:
            del self.partitions[call_id]
        self.tracker.interest.prune(now_ms())

    async def on_assigned(self, assigned: set[Any]) -> None:
        """After a rebalance: forget the calls whose partition went to another worker, and
        learn where the calls on partitions new to this one were transcribed up to."""
        ours = {tp.partition for tp in assigned if tp.topic == self.topics.audio}
        moved = {c for c, partition in self.partitions.items() if partition not in ours}
        if moved:
            log.info("%d calls moved to other workers: %s", len(moved), ",".join(sorted(moved)))
            self.pipeline.drop(moved)
            for call_id in moved:
                del self.partitions[call_id]
        new = ours - self.assigned
        self.assigned = ours
        try:
            if new:
                await self._learn_produced(new)
        finally:
            self.pipeline.resume()
            self.settled.set()

    def on_revoked(self) -> None:
        self.settled.clear()
        self.pipeline.pause()  # until the assignment says which calls stay here

    async def _learn_produced(self, new: set[int]) -> None:
        try:
            async with asyncio.timeout(PRODUCED_TIMEOUT_S):
                produced = await produced_until(
                    self._settings.bootstrap, self.topics.transcripts, new,
                    security=self._settings.kafka_security())
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("partitions %s: could not read what was transcribed before (%r); "
                        "a call taken over may repeat the tail of an utterance",
                        sorted(new), exc)
            return
        self.tracker.note_produced(produced)
        log.info("partitions %s assigned: %d calls started and %d call channels transcribed "
                 "before", sorted(new), len(produced.started), len(produced.ends))


def create_app(settings: TranscribeSettings, transcriber: Transcriber) -> faust.App:
    """Build the Faust app (:mod:`workers.faust_app`), its agent and timer."""
    app = faust_app.create_app(
        settings, group_id=settings.group_id, web_port=settings.web_port,
        datadir=settings.data_dir or os.path.join(tempfile.gettempdir(),
                                                  f"callscribe-{settings.group_id}"),
        topic_replication_factor=settings.topic_replication,
        # A rebalance must not wait for every record in hand to be acknowledged: the audio of
        # an open utterance stays unacknowledged until its final is produced, and the paused
        # stream brings no more audio, so faust's wait would last until the member was thrown
        # out of the group (bench.faults found rebalances stuck for minutes). What is not
        # acknowledged is replayed by the partition's next owner.
        stream_wait_empty=False,
    )
    work = Transcription(app, settings, transcriber)

    # The agent's and the timer's names are these functions' names (faust derives them).
    @app.agent(work.source)
    async def transcribe(stream: Any) -> None:
        await work.run(stream)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await work.on_assigned(args[0] if args else kwargs.get("assigned", set()))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        work.on_revoked()

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def expire_idle_calls() -> None:
        await work.expire_idle_calls()

    return app
