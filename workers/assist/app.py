"""The assist worker: a faust-streaming app whose one agent reads the transcripts and calls
topics (co-partitioned by call id) and writes the redacted transcripts, assist and summaries
topics (``docs/assist.md``).

The agent stays thin: decode the record, hand it to :class:`~workers.assist.engine.AssistEngine`,
send what it returns, keyed by call id, in order. Faust acknowledges an event once the agent
has handled it (its sends awaited), so offsets are committed only after the outputs they caused
were handed to the producer, as in the transcriber. The engine's work per utterance is a few
milliseconds of pure Python (see ``callscribe_assist_process_seconds``), so it runs inline.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web import Request, Response, View

from workers import metrics
from workers.assist import metrics as assist_metrics
from workers.assist.engine import AssistEngine, AssistOutput
from workers.assist.kb import KnowledgeBase
from workers.assist.playbook import Playbook
from workers.assist.sentiment import VaderScorer
from workers.errors import RecordError
from workers.kafka import BrokerProbe
from workers.kafka_security import faust_credentials
from workers.records import Topics, call_event_from_json, dumps, loads
from workers.settings import AssistSettings

log = logging.getLogger(__name__)
#: Sources whose messages come from a playbook rule (bounded by the playbook's size).
RULE_SOURCES = frozenset({"playbook", "disclosure"})

#: Longest a consumer fetch may wait for data (Faust hard-codes 1.5 s; see transcribe.app).
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


def assist_topics(topics: Topics) -> tuple[str, ...]:
    """The topics the assist worker writes (it creates them at start)."""
    return (topics.transcripts_redacted, topics.assist, topics.summaries)


def example_path(name: str) -> Path:
    """A file or folder shipped in ``workers/assist/examples``."""
    return Path(str(resources.files("workers.assist").joinpath("examples", name)))


def build_engine(settings: AssistSettings) -> AssistEngine:
    """Load the playbook, knowledge base and VADER lexicon; raise ``AssistConfigError``."""
    playbook = Playbook.load(settings.playbook or example_path("playbook.yaml"))
    kb = KnowledgeBase.load(settings.kb_dir or example_path("kb")) if settings.kb_enabled \
        else None
    log.info("playbook %r: %d rules, %d disclosures; %d knowledge passages; redacting %s",
             playbook.name, len(playbook.rules), len(playbook.disclosures),
             len(kb.passages) if kb else 0, ",".join(sorted(settings.redact_entities)) or "none")
    return AssistEngine(playbook=playbook, kb=kb, scorer=VaderScorer(),
                        redact=settings.redact_entities,
                        redact_caller_id=settings.redact_caller_id,
                        key_sentences=settings.summary_sentences,
                        summary_grace_s=settings.summary_grace_s)


def create_app(settings: AssistSettings, engine: AssistEngine) -> faust.App:
    """Build the Faust app, its topics, agent, timer and web pages."""
    global FETCH_MAX_WAIT_MS
    FETCH_MAX_WAIT_MS = settings.fetch_max_wait_ms
    topics = Topics(settings.topic_prefix)
    servers = settings.bootstrap.split(",")
    app = _App(
        settings.group_id,
        broker=f"kafka://{servers[0]}",
        broker_consumer=[f"kafka://{b}" for b in servers],
        broker_producer=[f"kafka://{b}" for b in servers],
        store="memory://",
        # TLS/SASL of every client faust builds (consumer, producer, topic creation).
        broker_credentials=faust_credentials(settings.kafka_security()),
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
    source = app.topic(topics.transcripts, topics.calls, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw", internal=False)
    sinks = {name: app.topic(name, key_serializer="raw", value_serializer="raw",
                             internal=False) for name in assist_topics(topics)}
    state = {"ready": False}

    async def emit(call_id: str, out: AssistOutput) -> None:
        key = call_id.encode()
        for topic, records in ((topics.transcripts_redacted, out.redacted),
                               (topics.assist, out.assist), (topics.summaries, out.summaries)):
            for record in records:
                await sinks[topic].send(key=key, value=dumps(record))
        count(out)

    def count(out: AssistOutput) -> None:
        produced = {r.get("id"): r.get("producedAtMs") for r in out.redacted}
        for message in out.assist:
            rule = (message.get("ref") or "-") if message["source"] in RULE_SOURCES else "-"
            assist_metrics.MESSAGES.labels(message["kind"], message["source"], rule).inc()
            started = produced.get(message["transcriptId"])
            if isinstance(started, int):
                assist_metrics.TRANSCRIPT_TO_ASSIST.observe(
                    max(0, message["producedAtMs"] - started) / 1000)
        for entity, n in out.redacted_entities.items():
            assist_metrics.REDACTIONS.labels(entity).inc(n)
        assist_metrics.SUMMARIES.inc(len(out.summaries))
        assist_metrics.DROPPED.inc(out.dropped)
        assist_metrics.ACTIVE_CALLS.set(len(engine.calls))

    async def handle(message: Any) -> None:
        try:
            value = loads(message.value)
            if message.topic == topics.transcripts:
                started = time.perf_counter()
                out = engine.on_transcript(value)
                if value.get("type") == "transcript":
                    assist_metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
                call_id = str(value["callId"])
            else:
                event = call_event_from_json(value)
                out, call_id = engine.on_call_event(event), event.call_id
        except RecordError as exc:
            metrics.RECORDS_SKIPPED.labels(message.topic, "malformed").inc()
            log.warning("skipped record %s[%d]@%d: %s", message.topic, message.partition,
                        message.offset, exc)
            return
        await emit(call_id, out)

    @app.agent(source)
    async def assist(stream: Any) -> None:
        async for event in stream.events():
            await handle(event.message)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def summarise_due_calls() -> None:
        out = engine.due(settings.idle_timeout_s)
        for summary in out.summaries:
            await sinks[topics.summaries].send(key=summary["callId"].encode(),
                                               value=dumps(summary))
        count(out)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        state["ready"] = True

    probe = BrokerProbe(settings.bootstrap, security=settings.kafka_security(),
                        name="assist")

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
