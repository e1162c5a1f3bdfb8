"""Assist domain records and their one wire codec: the transcript text the assist modules
look at (:class:`TranscriptText`; an utterance's audio is
:class:`workers.transcribe.vad.Utterance`), and the assist message they produce
(``schemas/assist.schema.json``).

An assist message is a liveCalls server message of type ``assist`` plus the record fields
(``v``, ``callId``, ``producedAtMs``) that the bridge strips for clients, exactly like a
transcripts-topic record. Its ``id`` is deterministic — the triggering transcript's id, the
source and the rule or article — so consumers drop duplicates after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from workers.errors import RecordError
from workers.records import SCHEMA_VERSION

AssistKind = Literal["hint", "article", "alert"]
ASSIST_KINDS: tuple[AssistKind, ...] = get_args(AssistKind)
#: Which module produced a message: a playbook rule, a disclosure reminder, the knowledge
#: base, or the sentiment tracker.
AssistSource = Literal["playbook", "disclosure", "kb", "sentiment"]


@dataclass(frozen=True, slots=True)
class TranscriptText:
    """A final (or interim) transcript as the assist modules see it."""

    call_id: str
    transcript_id: str
    role: str
    text: str
    offset: float
    end: float | None = None
    produced_at_ms: int | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TranscriptText:
        """A ``transcript`` / ``transcript:interim`` record of the transcripts topic."""
        missing = [k for k in ("callId", "id", "role", "msg", "offset") if k not in record]
        if missing:
            raise RecordError(f"transcript record without {missing[0]!r}")
        msg, role, offset, end_ms = (record["msg"], record["role"], record["offset"],
                                     record.get("audioEndMs"))
        if not isinstance(msg, str) or not isinstance(role, str) or isinstance(offset, bool) \
                or not isinstance(offset, int | float) or not isinstance(end_ms, int | None):
            raise RecordError("transcript record with a malformed msg, role, offset or "
                              "audioEndMs; expected strings and numbers")
        produced = record.get("producedAtMs")
        return cls(call_id=str(record["callId"]), transcript_id=str(record["id"]), role=role,
                   text=msg, offset=float(offset),
                   end=None if end_ms is None else end_ms / 1000,
                   produced_at_ms=produced if isinstance(produced, int) else None)


@dataclass(frozen=True, slots=True)
class AssistMessage:
    """A hint, knowledge article or alert for the agent, caused by one transcript."""

    call_id: str
    transcript_id: str
    kind: AssistKind
    title: str
    text: str
    source: AssistSource
    ref: str
    reason: str = ""
    priority: int = 0
    offset: float = 0.0
    produced_at_ms: int = 0

    @property
    def id(self) -> str:
        return f"{self.transcript_id}:assist:{self.source}:{self.ref}"

    def to_json(self) -> dict[str, Any]:
        """The record value (``schemas/assist.schema.json``)."""
        return {
            "type": "assist",
            "kind": self.kind,
            "title": self.title,
            "text": self.text,
            "transcriptId": self.transcript_id,
            "source": self.source,
            "ref": self.ref,
            "reason": self.reason,
            "priority": self.priority,
            "offset": round(self.offset, 3),
            "v": SCHEMA_VERSION,
            "callId": self.call_id,
            "id": self.id,
            "producedAtMs": self.produced_at_ms,
        }


__all__ = [
    "ASSIST_KINDS", "AssistKind", "AssistMessage", "AssistSource", "TranscriptText",
]
