"""The transcription worker: a faust-streaming app whose one agent reads the audio and calls
topics (co-partitioned by call id) and produces to the transcripts topic.

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
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web import Request, Response, View

from workers import metrics
from workers.errors import RecordError
from workers.kafka import BrokerProbe
from workers.kafka_security import faust_credentials
from workers.records import (
    AudioChunk,
    CallEnded,
    CallStarted,
    Topics,
    call_event_from_json,
    dumps,
    loads,
)
from workers.settings import TranscribeSettings
from workers.transcribe.asr import Transcriber
from workers.transcribe.calls import CallTracker, VadConfig
from workers.transcribe.pipeline import DecodePipeline
from workers.transcribe.produced import produced_until

log = logging.getLogger(__name__)

#: Longest the transcripts topic is read at an assignment (it delays the rebalance).
PRODUCED_TIMEOUT_S = 5.0
#: Longest a consumer fetch may wait for data. Faust hard-codes 1.5 s, which against a broker
#: that honours it (Tansu does) adds up to 1.5 s to every hop.
FETCH_MAX_WAIT_MS = 20


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        return consumer


class _LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _LowLatencyTransport(faust_aiokafka.Transport):
    Consumer = _LowLatencyConsumer


class _App(faust.App):
    def _new_transport(self) -> Any:
        return _LowLatencyTransport(self.conf.broker_consumer, self)


def create_app(settings: TranscribeSettings, transcriber: Transcriber) -> faust.App:
    """Build the Faust app, its topics, agent, timer and web pages."""
    global FETCH_MAX_WAIT_MS
    FETCH_MAX_WAIT_MS = settings.fetch_max_wait_ms
    topics = Topics(settings.topic_prefix)
    app = _App(
        settings.group_id,
        broker=f"kafka://{settings.bootstrap.split(',')[0]}",
        broker_consumer=[f"kafka://{b}" for b in settings.bootstrap.split(",")],
        broker_producer=[f"kafka://{b}" for b in settings.bootstrap.split(",")],
        store="memory://",
        # TLS/SASL of every client faust builds (consumer, producer, topic creation).
        broker_credentials=faust_credentials(settings.kafka_security()),
        datadir=settings.data_dir or os.path.join(tempfile.gettempdir(),
                                                  f"callscribe-{settings.group_id}"),
        web_enabled=True, web_port=settings.web_port, web_bind="0.0.0.0",
        web_host="127.0.0.1",
        broker_session_timeout=6, broker_rebalance_timeout=6, broker_heartbeat_interval=1,
        broker_request_timeout=20,
        topic_disable_leader=True, topic_replication_factor=settings.topic_replication,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1, producer_linger=0.0,
        broker_commit_every=50, broker_commit_interval=1.0,
        stream_buffer_maxsize=256,
        # A rebalance must not wait for every record in hand to be acknowledged: the audio of
        # an open utterance stays unacknowledged until its final is produced, and the paused
        # stream brings no more audio, so faust's wait would last until the member was thrown
        # out of the group (bench.faults found rebalances stuck for minutes). What is not
        # acknowledged is replayed by the partition's next owner.
        stream_wait_empty=False,
    )
    vad = VadConfig(
        aggressiveness=settings.vad_aggressiveness, frame_ms=settings.vad_frame_ms,
        start_ms=settings.vad_start_ms, end_silence_ms=settings.vad_end_silence_ms,
        padding_ms=settings.vad_padding_ms, min_utterance_ms=settings.min_utterance_ms,
        max_utterance_ms=int(settings.max_utterance_s * 1000), interim_ms=settings.interim_ms,
        max_gain_db=settings.vad_max_gain_db, soft_after_ms=settings.vad_soft_after_ms,
        soft_silence_ms=settings.vad_soft_silence_ms,
        early=settings.early_finals, commit_at_pauses=settings.commit_at_pauses,
    )
    tracker = CallTracker(vad)
    source = app.topic(topics.audio, topics.calls, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw", internal=False)
    sink = app.topic(topics.transcripts, key_serializer="raw", value_serializer="raw",
                     internal=False)
    state: dict[str, Any] = {"ready": False, "stream": None, "partitions": set()}
    #: Set while no assignment is being taken in: records of partitions new to this worker
    #: wait for what was transcribed of their calls (faust resumes the stream before it
    #: signals the assignment).
    settled = asyncio.Event()
    settled.set()

    produce_seconds = metrics.KAFKA_PRODUCE_SECONDS.labels(topics.transcripts)

    def acked_since(started: float) -> Callable[[Any], None]:
        """A faust send callback (called once the broker acknowledged the record)."""
        return lambda _: produce_seconds.observe(time.monotonic() - started)

    async def send(call_id: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            await sink.send(key=call_id.encode(), value=dumps(record),
                            callback=acked_since(time.monotonic()))

    async def ack(events: list[Any]) -> None:
        stream = state["stream"]
        owned = app.consumer.assignment()
        for event in events:
            # Never for a partition that moved away since: its new owner commits it (an old
            # owner's commit could move the offset past audio the new owner still holds).
            if event.message.tp in owned:
                await stream.ack(event)

    pipeline = DecodePipeline(tracker, decode=transcriber.decode, send=send, ack=ack,
                              max_jobs=settings.decode_queue, batch_max=settings.decode_batch,
                              interim_budget_s=settings.interim_budget_ms / 1000,
                              interim_share=settings.interim_share)

    def observe_lag(tp: Any, offset: int) -> None:
        highwater = app.consumer.highwater(tp)
        if highwater is not None:
            metrics.KAFKA_CONSUMER_LAG.labels("transcribe", tp.topic, str(tp.partition)).set(
                max(0, highwater - offset - 1))

    async def on_audio(chunk: AudioChunk, event: Any) -> None:
        metrics.TRANSCRIBE_AUDIO_SECONDS.labels(chunk.role).inc(chunk.samples / chunk.rate)
        jobs, release = tracker.on_audio(chunk, event)
        for work in jobs:
            await pipeline.submit_work(work)
        pipeline.poke()
        if tracker.finish_if_complete(chunk.call_id):
            await pipeline.submit_finish(chunk.call_id, release)
        else:
            await pipeline.submit_ack(release)

    @app.agent(source)
    async def transcribe(stream: Any) -> None:
        state["stream"] = stream = stream.noack()
        runner = asyncio.create_task(pipeline.run(), name="decode-pipeline")
        try:
            async for event in stream.events():
                await handle(event)
        finally:
            # Stopping (SIGTERM, rebalance): finish what is queued, under a deadline; what is
            # left stays unacknowledged and is transcribed by the next owner of the partition.
            pipeline.resume()
            settled.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(pipeline.wait_idle(), settings.drain_seconds)
            runner.cancel()

    #: The partition each call's records come on (audio and calls are co-partitioned).
    partitions: dict[str, int] = {}

    async def handle(event: Any) -> None:
        message = event.message
        if not settled.is_set():
            await settled.wait()
        observe_lag(message.tp, message.offset)
        if message.key:
            partitions[message.key.decode(errors="replace")] = message.partition
        try:
            if message.topic == topics.audio:
                await on_audio(AudioChunk.from_kafka(message.key, message.value,
                                                     message.headers), event)
                return
            call_event = call_event_from_json(loads(message.value))
        except RecordError as exc:
            metrics.RECORDS_SKIPPED.labels(message.topic, "malformed").inc()
            log.warning("skipped record %s[%d]@%d: %s", message.topic, message.partition,
                        message.offset, exc)
            await pipeline.submit_ack([event])
            return
        if isinstance(call_event, CallStarted):
            await pipeline.submit_start(call_event, [event])
            return
        if isinstance(call_event, CallEnded):
            tracker.on_ended(call_event)
            if tracker.finish_if_complete(call_event.call_id):
                await pipeline.submit_finish(call_event.call_id, [event])
                return
        await pipeline.submit_ack([event])

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def expire_idle_calls() -> None:
        for call_id in tracker.idle_calls(settings.call_idle_timeout_s):
            await pipeline.submit_finish(call_id, [])
        for call_id in [c for c in partitions if tracker.finished(c)]:
            del partitions[call_id]

    security = settings.kafka_security()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """After a rebalance: forget the calls whose partition went to another worker, and
        learn where the calls on partitions new to this one were transcribed up to."""
        assigned = args[0] if args else kwargs.get("assigned", set())
        ours = {tp.partition for tp in assigned if tp.topic == topics.audio}
        moved = {call for call, partition in partitions.items() if partition not in ours}
        if moved:
            log.info("%d calls moved to other workers: %s", len(moved), ",".join(sorted(moved)))
            pipeline.drop(moved)
            for call in moved:
                del partitions[call]
        new = ours - state["partitions"]
        state["partitions"] = ours
        try:
            if new:
                await learn_produced(new)
        finally:
            pipeline.resume()
            settled.set()
        state["ready"] = True

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        settled.clear()
        pipeline.pause()  # until the assignment says which calls stay here

    async def learn_produced(new: set[int]) -> None:
        try:
            async with asyncio.timeout(PRODUCED_TIMEOUT_S):
                produced = await produced_until(settings.bootstrap, topics.transcripts, new,
                                                security=security)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("partitions %s: could not read what was transcribed before (%r); "
                        "a call taken over may repeat the tail of an utterance",
                        sorted(new), exc)
            return
        tracker.note_produced(produced)
        log.info("partitions %s assigned: %d calls started and %d call channels transcribed "
                 "before", sorted(new), len(produced.started), len(produced.ends))

    probe = BrokerProbe(settings.bootstrap, security=settings.kafka_security(),
                        name="transcribe")

    @app.task  # type: ignore[untyped-decorator]  # faust's task is untyped
    async def probe_brokers() -> None:
        await probe.run()  # cancelled when the app stops

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.text("ok\n")

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            ready = state["ready"] and not app.should_stop and probe.reachable
            return self.text("ready\n" if ready else "not ready\n", status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body, content_type = metrics.exposition()
            return self.bytes(body, content_type=content_type.split(";")[0])

    return app
