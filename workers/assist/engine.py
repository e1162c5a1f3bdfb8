"""One place that holds every call's assist state and turns input records into output records.

Pure: transcripts-topic records and call events in; records for the redacted transcripts topic,
the assist topic and the summaries topic out (:class:`AssistOutput`). The Faust agent only
decodes and sends. For each final transcript, in this order:

1. redact it (per-call :class:`~workers.assist.redact.RedactionState`), the word timings too;
2. playbook hints and disclosure reminders, knowledge-base articles, sentiment alerts — all
   computed from the *unredacted* text in memory, none of which ever quotes it;
3. output: the redacted transcript, then its assist messages (so a consumer of the redacted
   topic sees each hint right after the words that caused it).

A call's summary is produced once its transcripts are complete (``event:callEnd``) and its
lifecycle is (``call.ended``, which carries the duration; both topics are read independently,
so either may come first), or ``summary_grace_s`` after ``event:callEnd`` if ``call.ended``
never comes. Records of unknown type are dropped (they might hold text that nobody redacts).
"""

from __future__ import annotations

import collections
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from workers.assist.kb import KbState, KnowledgeBase
from workers.assist.messages import AssistMessage, TranscriptText
from workers.assist.playbook import Playbook, PlaybookState
from workers.assist.redact import ENTITIES, RedactionState, Redactor, redact_words
from workers.assist.sentiment import CallSentiment, Scorer
from workers.assist.summary import CallRecord, build_summary
from workers.errors import RecordError
from workers.records import CallEnded, CallEvent, CallNotice, CallStarted, Dtmf

log = logging.getLogger(__name__)

#: Record types passed to the redacted topic unchanged (they hold no caller speech).
PASS_THROUGH = frozenset({"event:start", "event:end", "event:callEnd", "error"})
#: Finished calls remembered so that redelivered records do not open a phantom call.
FINISHED_REMEMBERED = 10_000
#: Longest knowledge-base passage quoted in an ``article`` message (characters).
ARTICLE_TEXT_CHARS = 480


@dataclass(slots=True)
class AssistOutput:
    """Records to send, per topic, in order; plus what was redacted (for metrics)."""

    redacted: list[dict[str, Any]] = field(default_factory=list)
    assist: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    redacted_entities: Counter[str] = field(default_factory=Counter)
    dropped: int = 0

    def extend(self, other: AssistOutput) -> None:
        self.redacted += other.redacted
        self.assist += other.assist
        self.summaries += other.summaries
        self.redacted_entities.update(other.redacted_entities)
        self.dropped += other.dropped


@dataclass(slots=True)
class _Call:
    record: CallRecord
    sentiment: CallSentiment
    redaction: RedactionState = field(default_factory=RedactionState)
    playbook: PlaybookState = field(default_factory=PlaybookState)
    kb: KbState = field(default_factory=KbState)
    touched: float = 0.0
    transcripts_done_at: float | None = None


class AssistEngine:
    """Per-call assist state for every live call of this worker's partitions."""

    def __init__(self, *, playbook: Playbook, kb: KnowledgeBase | None, scorer: Scorer,
                 redact: frozenset[str] = frozenset(ENTITIES), redact_caller_id: bool = False,
                 key_sentences: int = 3, summary_grace_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.playbook, self.kb, self.scorer = playbook, kb, scorer
        self.redactor = Redactor(redact)
        self.redact_caller_id = redact_caller_id and "PHONE" in redact
        self.key_sentences = key_sentences
        self.summary_grace_s = summary_grace_s
        self.clock = clock
        self.calls: dict[str, _Call] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _call(self, call_id: str) -> _Call:
        call = self.calls.get(call_id)
        if call is None:
            call = self.calls[call_id] = _Call(
                CallRecord(call_id), CallSentiment(self.playbook.sentiment,
                                                   self.playbook.caller_roles))
        call.touched = self.clock()
        return call

    # ---------------------------------------------------------------- transcripts topic

    def on_transcript(self, record: dict[str, Any]) -> AssistOutput:
        """One transcripts-topic record (parsed JSON); :class:`RecordError` if malformed."""
        out = AssistOutput()
        kind, call_id = record.get("type"), record.get("callId")
        if not isinstance(call_id, str) or not call_id:
            raise RecordError("transcripts record without a 'callId' string")
        if kind in ("transcript", "transcript:interim"):
            TranscriptText.from_record(record)  # raises RecordError unless msg, role, offset, id
        finished = call_id in self._finished
        if kind in ("transcript", "transcript:interim"):
            if finished:  # a redelivery: redact on fresh state, nothing else
                out.redacted.append(self._redacted(record, RedactionState(), out)[0])
            elif kind == "transcript":
                self._final(record, self._call(call_id), out)
            else:
                call = self._call(call_id)
                out.redacted.append(self._redacted(record, call.redaction, out)[0])
        elif kind in PASS_THROUGH:
            passed = dict(record)
            if kind == "event:start" and self.redact_caller_id:
                passed["phone"] = ""
            out.redacted.append(passed)
            if not finished and kind == "event:start":
                self._call(call_id).record.start_timestamp = record.get("timestamp")
            elif not finished and kind == "event:callEnd":
                call = self._call(call_id)
                call.record.end_timestamp = record.get("timestamp")
                call.transcripts_done_at = self.clock()
                if call.record.ended is not None:
                    out.summaries.append(self._finish(call_id))
        else:
            out.dropped += 1
            log.warning("call %s: dropped a transcripts record of unknown type %r", call_id,
                        kind)
        return out

    def _redacted(self, record: dict[str, Any], state: RedactionState,
                  out: AssistOutput) -> tuple[dict[str, Any], tuple[str, ...]]:
        interim = record.get("type") == "transcript:interim"
        text = str(record.get("msg", ""))
        role = str(record.get("role", ""))
        offset = record.get("offset")
        redaction = self.redactor.redact(text, role=role, state=state, interim=interim,
                                         offset=float(offset) if offset is not None else None)
        redacted = dict(record, msg=redaction.text)
        out.redacted_entities.update(redaction.entities)
        if "stable" in record:
            stable = self.redactor.redact(str(record["stable"]), role=role, state=state,
                                          interim=True).text
            redacted["stable"] = _common_prefix(stable, redaction.text)
        if "words" in record:
            words = redact_words(record["words"], text, redaction)
            if words is None:
                del redacted["words"]
            else:
                redacted["words"] = words
        return redacted, redaction.entities

    def _final(self, record: dict[str, Any], call: _Call, out: AssistOutput) -> None:
        redacted, entities = self._redacted(record, call.redaction, out)
        out.redacted.append(redacted)
        call.record.add_line(record, redacted["msg"])
        call.record.redactions.update(entities)
        utterance = TranscriptText.from_record(record)
        messages = self._alerts(utterance, call)
        messages += self.playbook.evaluate(utterance, call.playbook)
        messages += self._articles(utterance, call)
        now = self._now_ms()
        for message in messages:
            value = replace(message, produced_at_ms=now).to_json()
            out.redacted.append(value)
            out.assist.append(value)
            call.record.assist.append(value)

    def _alerts(self, utterance: TranscriptText, call: _Call) -> list[AssistMessage]:
        score = self.scorer.score(utterance.text)
        alerts = call.sentiment.add(transcript_id=utterance.transcript_id, role=utterance.role,
                                    offset=utterance.offset, text=utterance.text, score=score)
        return [AssistMessage(call_id=utterance.call_id, transcript_id=utterance.transcript_id,
                              kind="alert", title=a.title, text=a.text, source="sentiment",
                              ref=a.ref, reason=a.reason, priority=100,
                              offset=utterance.offset) for a in alerts]

    def _articles(self, utterance: TranscriptText, call: _Call) -> list[AssistMessage]:
        config = self.playbook.kb
        roles = self.playbook.roles_of(config.audience)
        if self.kb is None or config.max_per_utterance == 0 or (
                roles is not None and utterance.role not in roles):
            return []
        found = self.kb.suggest(utterance.text, call.kb, min_score=config.min_score,
                                min_terms=config.min_terms, limit=config.max_per_utterance)
        return [AssistMessage(
            call_id=utterance.call_id, transcript_id=utterance.transcript_id, kind="article",
            title=s.title, text=_clip(s.passage, ARTICLE_TEXT_CHARS), source="kb",
            ref=s.article_id, priority=40, offset=utterance.offset,
            reason=(f"section {s.heading!r}, " if s.heading else "")
            + f"matched {', '.join(s.matched)} (BM25 {s.score:.1f})") for s in found]

    # ---------------------------------------------------------------- calls topic

    def on_call_event(self, event: CallEvent) -> AssistOutput:
        """One calls-topic record: lifecycle and DTMF for the summary."""
        out = AssistOutput()
        if event.call_id in self._finished or isinstance(event, CallNotice):
            return out  # notices (joined, control failed) do not start or change a summary
        call = self._call(event.call_id)
        if isinstance(event, CallStarted):
            call.record.started = event
        elif isinstance(event, Dtmf):
            call.record.dtmf.append(event)
        elif isinstance(event, CallEnded):
            call.record.ended = event
            if call.transcripts_done_at is not None:
                out.summaries.append(self._finish(event.call_id))
        return out

    # ---------------------------------------------------------------- time

    def due(self, idle_s: float) -> AssistOutput:
        """Summaries of calls whose ``call.ended`` did not come within the grace period, and
        of calls with no record for ``idle_s`` (their transcriber died)."""
        out = AssistOutput()
        now = self.clock()
        for call_id, call in list(self.calls.items()):
            waited = call.transcripts_done_at is not None and \
                now - call.transcripts_done_at >= self.summary_grace_s
            if waited or now - call.touched >= idle_s:
                if not waited:
                    log.warning("call %s: no record for %.0fs; summarising it", call_id, idle_s)
                out.summaries.append(self._finish(call_id))
        return out

    def _finish(self, call_id: str) -> dict[str, Any]:
        call = self.calls.pop(call_id)
        self._finished[call_id] = None
        while len(self._finished) > FINISHED_REMEMBERED:
            self._finished.popitem(last=False)
        state = call.playbook
        outcome = {
            "tags": sorted(state.tags),
            "escalated": any(m["source"] == "sentiment" and m["ref"] == "escalation"
                             for m in call.record.assist),
            "disclosures": self.playbook.disclosure_status(state),
            "articles": list(call.kb.suggested),
            "hints": sum(1 for m in call.record.assist if m["kind"] == "hint"),
            "alerts": sum(1 for m in call.record.assist if m["kind"] == "alert"),
        }
        return build_summary(call.record, sentiment=call.sentiment.trend(),
                             caller_roles=self.playbook.caller_roles,
                             agent_roles=self.playbook.agent_roles, outcome=outcome,
                             key_sentence_count=self.key_sentences,
                             mask_dtmf=bool(self.redactor.entities),
                             produced_at_ms=self._now_ms())


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " …"


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


__all__ = ["PASS_THROUGH", "AssistEngine", "AssistOutput"]
