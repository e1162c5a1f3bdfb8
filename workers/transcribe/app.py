"""The transcription worker: a faust-streaming app whose one agent reads the audio and calls
topics (co-partitioned by call id) and produces to the transcripts topic.

The agent stays thin: decode the record, let :class:`CallTracker` cut utterances, run whisper off
the event loop, send the records it returns. Whisper runs inline in the agent, so an audio
record's offset is committed only after the records it led to were handed to the producer.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web import Request, Response, View

from workers import metrics
from workers.errors import RecordError
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

log = logging.getLogger(__name__)

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
        web_enabled=True, web_port=settings.web_port, web_bind="0.0.0.0",
        web_host="127.0.0.1",
        broker_session_timeout=6, broker_rebalance_timeout=6, broker_heartbeat_interval=1,
        broker_request_timeout=20,
        topic_disable_leader=True, topic_allow_declare=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1, producer_linger=0.0,
        broker_commit_every=50, broker_commit_interval=1.0,
        stream_buffer_maxsize=256,
    )
    tracker = CallTracker(VadConfig(
        aggressiveness=settings.vad_aggressiveness, frame_ms=settings.vad_frame_ms,
        start_ms=settings.vad_start_ms, end_silence_ms=settings.vad_end_silence_ms,
        padding_ms=settings.vad_padding_ms, min_utterance_ms=settings.min_utterance_ms,
        max_utterance_ms=int(settings.max_utterance_s * 1000),
    ))
    source = app.topic(topics.audio, topics.calls, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw", internal=False)
    sink = app.topic(topics.transcripts, key_serializer="raw", value_serializer="raw",
                     internal=False)
    state = {"ready": False}

    async def emit(call_id: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            await sink.send(key=call_id.encode(), value=dumps(record))

    async def on_audio(chunk: AudioChunk) -> None:
        for work in tracker.on_audio(chunk):
            result = await transcriber.transcribe_async(work.utterance.pcm)
            records = tracker.on_transcribed(work, result)
            await emit(chunk.call_id, records)
            if records:
                metrics.TRANSCRIBE_EOU_TO_PRODUCED.observe(
                    records[-1]["producedAtMs"] / 1000 - work.ready_at)
        await emit(chunk.call_id, tracker.finish_if_complete(chunk.call_id))

    @app.agent(source)
    async def transcribe(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                if message.topic == topics.audio:
                    await on_audio(AudioChunk.from_kafka(message.key, message.value,
                                                         message.headers))
                    continue
                call_event = call_event_from_json(loads(message.value))
            except RecordError as exc:
                metrics.RECORDS_SKIPPED.labels(message.topic, "malformed").inc()
                log.warning("skipped record %s[%d]@%d: %s", message.topic, message.partition,
                            message.offset, exc)
                continue
            if isinstance(call_event, CallStarted):
                await emit(call_event.call_id, tracker.on_started(call_event))
            elif isinstance(call_event, CallEnded):
                tracker.on_ended(call_event)
                await emit(call_event.call_id, tracker.finish_if_complete(call_event.call_id))

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def expire_idle_calls() -> None:
        for record in tracker.expire_idle(settings.call_idle_timeout_s):
            await sink.send(key=record["callId"].encode(), value=dumps(record))

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        state["ready"] = True

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.text("ok\n")

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            ready = state["ready"] and not app.should_stop
            return self.text("ready\n" if ready else "not ready\n", status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body, content_type = metrics.exposition()
            return self.bytes(body, content_type=content_type.split(";")[0])

    return app
