"""Shared by the assist tests: the shipped playbook and articles, and records shaped exactly
like the transcriber's (``workers.records.transcript_record``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from workers.assist.engine import AssistEngine
from workers.assist.kb import KnowledgeBase
from workers.assist.playbook import Playbook
from workers.assist.sentiment import VaderScorer
from workers.records import transcript_id, transcript_record

EXAMPLES = Path(__file__).resolve().parents[2] / "workers" / "assist" / "examples"
CHANNEL = {"other": 0, "assistant": 1, "user": 1}


@functools.cache
def playbook() -> Playbook:
    return Playbook.load(EXAMPLES / "playbook.yaml")


@functools.cache
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load(EXAMPLES / "kb")


@functools.cache
def scorer() -> VaderScorer:
    return VaderScorer()


def engine(**kwargs: Any) -> AssistEngine:
    kwargs.setdefault("playbook", playbook())
    kwargs.setdefault("kb", knowledge())
    kwargs.setdefault("scorer", scorer())
    return AssistEngine(**kwargs)


def transcript(call_id: str, role: str, text: str, offset: float, *,
               duration: float = 2.0, **extra: Any) -> dict[str, Any]:
    """A final transcript record as the transcriber produces it."""
    start_ms = int(offset * 1000)
    channel = CHANNEL[role]
    message = {"type": "transcript", "msg": text, "role": role, "offset": offset, **extra}
    return transcript_record(call_id, message, record_id=transcript_id(call_id, channel, start_ms),
                             channel=channel, audioStartMs=start_ms,
                             audioEndMs=start_ms + int(duration * 1000),
                             producedAtMs=1_768_473_003_400 + start_ms)


def offsets(said: list[Any]) -> list[tuple[str, str, float, dict[str, Any]]]:
    """Eval-set utterances (``[role, text]`` or a mapping with ``at`` and labels) with their
    offsets: 4 s apart from 0 unless ``at`` says otherwise."""
    out, at = [], -4.0
    for item in said:
        entry = dict(item) if isinstance(item, dict) else {"role": item[0], "text": item[1]}
        at = float(entry.pop("at", at + 4.0))
        out.append((entry.pop("role"), entry.pop("text"), at, entry))
    return out
