"""The end-of-call record (``schemas/summaries.schema.json``), built from what the assist
worker saw of the call: redacted transcript, assist messages, sentiment, DTMF, lifecycle.

The summary is extractive: the transcript's sentences are scored by how many of the call's
frequent content words they hold (Luhn's classic method, normalised by the square root of the
sentence length), sentences that triggered a hint or alert count half again, and the top ones
are returned in call order. It uses only the redacted text, so it never holds what redaction
removed. Keypad entries of four or more digits in a row (a PIN, a card or account number
typed on the keypad) are masked as ``*`` when redaction is on.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workers.assist.text import content_stems, sentences
from workers.records import SCHEMA_VERSION, CallEnded, CallStarted, Dtmf

_PLACEHOLDER = re.compile(r"\[[A-Z]+\]")
#: Keypad presses at most this far apart (ms) are one entry.
DTMF_ENTRY_GAP_MS = 3000
#: Entries of at least this many digits are masked.
DTMF_MASK_DIGITS = 4


@dataclass(frozen=True, slots=True)
class Line:
    """One redacted final utterance."""

    id: str
    role: str
    offset: float
    msg: str
    talk_ms: int


@dataclass(slots=True)
class CallRecord:
    """Everything about one call that the summary needs, gathered as it happens."""

    call_id: str
    started: CallStarted | None = None
    start_timestamp: str | None = None
    ended: CallEnded | None = None
    end_timestamp: str | None = None
    lines: list[Line] = field(default_factory=list)
    assist: list[dict[str, Any]] = field(default_factory=list)
    dtmf: list[Dtmf] = field(default_factory=list)
    redactions: Counter[str] = field(default_factory=Counter)
    last_audio_ms: int = 0

    def add_line(self, record: dict[str, Any], redacted_msg: str) -> None:
        start, end = record.get("audioStartMs"), record.get("audioEndMs")
        talk = int(end) - int(start) if isinstance(start, int) and isinstance(end, int) else 0
        if isinstance(end, int):
            self.last_audio_ms = max(self.last_audio_ms, end)
        self.lines.append(Line(str(record["id"]), str(record["role"]),
                               float(record["offset"]), redacted_msg, max(talk, 0)))


def key_sentences(lines: list[Line], *, count: int, boosted: set[str] | frozenset[str] = (
        frozenset()), labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The ``count`` most representative sentences, in call order."""
    candidates = [(line, sentence) for line in lines for sentence in sentences(line.msg)]
    tokens = [content_stems(_PLACEHOLDER.sub(" ", s)) for _, s in candidates]
    frequency: Counter[str] = Counter(t for ts in tokens for t in ts)
    scored = []
    for index, ((line, _), words) in enumerate(zip(candidates, tokens, strict=True)):
        if len(set(words)) < 2:
            continue
        score = sum(frequency[t] for t in set(words)) / len(words) ** 0.5
        if line.id in boosted:
            score *= 1.5
        scored.append((score, index))
    chosen = sorted(index for _, index in sorted(scored, key=lambda p: (-p[0], p[1]))[:count])
    labels = labels or {}
    return [{"transcriptId": candidates[i][0].id, "role": candidates[i][0].role,
             "offset": candidates[i][0].offset, "text": candidates[i][1],
             "speaker": labels.get(candidates[i][0].role, candidates[i][0].role)}
            for i in chosen]


def masked_dtmf(presses: list[Dtmf], *, mask: bool) -> list[dict[str, Any]]:
    """DTMF presses in order; runs of :data:`DTMF_MASK_DIGITS`+ digits masked when ``mask``."""
    ordered = sorted(presses, key=lambda d: d.t_ms)
    groups: list[list[Dtmf]] = []
    for press in ordered:
        if (groups and press.digit.isdigit() and groups[-1][-1].digit.isdigit()
                and press.t_ms - groups[-1][-1].t_ms <= DTMF_ENTRY_GAP_MS):
            groups[-1].append(press)
        else:
            groups.append([press])
    out = []
    for group in groups:
        hide = mask and len(group) >= DTMF_MASK_DIGITS
        out += [{"digit": "*" if hide else d.digit, "tMs": d.t_ms, "masked": hide}
                for d in group]
    return out


def build_summary(call: CallRecord, *, sentiment: dict[str, dict[str, Any]],
                  caller_roles: frozenset[str], agent_roles: frozenset[str],
                  outcome: dict[str, Any], key_sentence_count: int, mask_dtmf: bool,
                  produced_at_ms: int) -> dict[str, Any]:
    """The summaries-topic record of ``call``."""
    labels = {r: "caller" for r in caller_roles} | {r: "agent" for r in agent_roles}
    talk: Counter[str] = Counter()
    for line in call.lines:
        talk[line.role] += line.talk_ms
    boosted = {m["transcriptId"] for m in call.assist}
    key = key_sentences(call.lines, count=key_sentence_count, boosted=boosted, labels=labels)
    caller_last = [sentiment[r]["last"] for r in sorted(caller_roles) if r in sentiment]
    mood = "unknown"
    if caller_last:
        mood = ("negative" if caller_last[0] <= -0.05 else
                "positive" if caller_last[0] >= 0.05 else "neutral")
    duration = call.ended.duration_ms if call.ended else call.last_audio_ms
    return {
        "v": SCHEMA_VERSION,
        "type": "call.summary",
        "id": f"{call.call_id}:summary",
        "callId": call.call_id,
        "provider": call.started.provider if call.started else "",
        "startedAt": call.started.timestamp if call.started else call.start_timestamp,
        "endedAt": call.ended.timestamp if call.ended else call.end_timestamp,
        "durationMs": max(int(duration), 0),
        "endReason": call.ended.reason if call.ended else "",
        "talkTimeMs": dict(sorted(talk.items())),
        "utterances": len(call.lines),
        "transcript": [{"id": ln.id, "role": ln.role, "offset": ln.offset, "msg": ln.msg}
                       for ln in call.lines],
        "assist": [{k: m[k] for k in ("id", "kind", "title", "transcriptId", "source", "ref")}
                   for m in call.assist],
        "sentiment": sentiment,
        "dtmf": masked_dtmf(call.dtmf, mask=mask_dtmf),
        "keySentences": key,
        "summary": " ".join(f"{k['speaker'].capitalize()}: {k['text']}" for k in key),
        "outcome": {**outcome, "callerSentiment": mood},
        "redactions": dict(sorted(call.redactions.items())),
        "producedAtMs": produced_at_ms,
    }


__all__ = ["CallRecord", "Line", "build_summary", "key_sentences", "masked_dtmf"]
