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

from workers import faust_app
from workers.assist import metrics as assist_metrics
from workers.assist.engine import AssistEngine, AssistOutput
from workers.assist.kb import KnowledgeBase
from workers.assist.playbook import Playbook
from workers.assist.sentiment import VaderScorer
from workers.kafka import decode_or_skip
from workers.records import Topics, call_event_from_json, dumps, loads
from workers.settings import AssistSettings

log = logging.getLogger(__name__)
#: Sources whose messages come from a playbook rule (bounded by the playbook's size).
RULE_SOURCES = frozenset({"playbook", "disclosure"})


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


class Assist:
    """What the agent does with each record: decode it, feed the engine, send its outputs
    (keyed by call id, in order) and count them."""

    def __init__(self, app: faust.App, engine: AssistEngine, topics: Topics) -> None:
        self._engine = engine
        self.topics = topics
        self.source = app.topic(topics.transcripts, topics.calls, key_type=bytes,
                                value_type=bytes, key_serializer="raw", value_serializer="raw",
                                internal=False)
        self._sinks = {name: app.topic(name, key_serializer="raw", value_serializer="raw",
                                       internal=False) for name in assist_topics(topics)}

    async def emit(self, call_id: str, out: AssistOutput) -> None:
        key = call_id.encode()
        topics = self.topics
        for topic, records in ((topics.transcripts_redacted, out.redacted),
                               (topics.assist, out.assist), (topics.summaries, out.summaries)):
            for record in records:
                await self._sinks[topic].send(key=key, value=dumps(record))
        self.count(out)

    def count(self, out: AssistOutput) -> None:
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
        assist_metrics.ACTIVE_CALLS.set(len(self._engine.calls))

    async def handle(self, message: Any) -> None:
        processed = decode_or_skip(message, self._process, logger=log)
        if processed is not None:
            await self.emit(*processed)

    def _process(self, message: Any) -> tuple[str, AssistOutput]:
        """The call id and the engine's output for a record; ``RecordError`` if malformed."""
        value = loads(message.value)
        if message.topic == self.topics.transcripts:
            started = time.perf_counter()
            out = self._engine.on_transcript(value)
            if value.get("type") == "transcript":
                assist_metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
            return str(value["callId"]), out
        event = call_event_from_json(value)
        return event.call_id, self._engine.on_call_event(event)

    async def summarise_due_calls(self, idle_timeout_s: float) -> None:
        out = self._engine.due(idle_timeout_s)
        for summary in out.summaries:
            await self._sinks[self.topics.summaries].send(key=summary["callId"].encode(),
                                                          value=dumps(summary))
        self.count(out)


def create_app(settings: AssistSettings, engine: AssistEngine) -> faust.App:
    """Build the Faust app (:mod:`workers.faust_app`), its agent and timer."""
    app = faust_app.create_app(settings, group_id=settings.group_id,
                               web_port=settings.web_port, topic_allow_declare=False)
    work = Assist(app, engine, Topics(settings.topic_prefix))

    # The agent's and the timer's names are these functions' names (faust derives them).
    @app.agent(work.source)
    async def assist(stream: Any) -> None:
        async for event in stream.events():
            await work.handle(event.message)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def summarise_due_calls() -> None:
        await work.summarise_due_calls(settings.idle_timeout_s)

    return app
