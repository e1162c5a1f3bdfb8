"""Sentiment per utterance and speaker, a rolling per-call trend, and escalation alerts.

Scores are VADER's compound score (-1 very negative … +1 very positive; ``vaderSentiment``,
a lexicon and rules, local and fast: about 0.1 ms per utterance). Per speaker the rolling
score is the mean of the last ``window`` utterances. For the caller an alert fires when one
utterance scores ``strong`` or below ("I am really angry about my bill", -0.56), or when the
rolling score of at least ``min_utterances`` falls to ``threshold`` or below (a single
problem report, "my payment failed, I think my card expired", -0.51, does not). It is
re-armed once the rolling score recovers above ``threshold + recover``, so one bad stretch
gives one alert, not one per utterance. An escalation phrase ("speak to a manager") from the
caller fires an alert at once, at most once per ``escalation_cooldown_s`` of call audio.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from workers.assist.playbook import SentimentConfig
from workers.assist.text import contains_sequence, stems


class Scorer(Protocol):
    def score(self, text: str) -> float:
        """Sentiment of ``text``, -1 to +1."""
        ...


class VaderScorer:
    """VADER's compound score (the lexicon ships inside the ``vaderSentiment`` package)."""

    def __init__(self) -> None:
        # The lexicon file is read once here.
        from vaderSentiment.vaderSentiment import (  # type: ignore[import-untyped]  # no stubs
            SentimentIntensityAnalyzer,
        )

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"]) if text.strip() else 0.0


@dataclass(frozen=True, slots=True)
class SentimentPoint:
    """One utterance's score and its speaker's rolling score after it."""

    transcript_id: str
    role: str
    offset: float
    score: float
    rolling: float


@dataclass(frozen=True, slots=True)
class SentimentAlert:
    """Why the caller seems to be escalating; ``ref`` tells the two kinds apart."""

    ref: str
    title: str
    text: str
    reason: str


@dataclass(slots=True)
class CallSentiment:
    """One call's scores and alert state."""

    config: SentimentConfig
    caller_roles: frozenset[str]
    points: list[SentimentPoint] = field(default_factory=list)
    _recent: dict[str, deque[float]] = field(default_factory=dict, init=False)
    _armed: bool = field(default=True, init=False)
    _escalated_at: float | None = field(default=None, init=False)
    _phrases: list[tuple[str, list[str]]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._phrases = [(p, stems(p)) for p in self.config.escalation_phrases]

    def add(self, *, transcript_id: str, role: str, offset: float, text: str,
            score: float) -> list[SentimentAlert]:
        """Record one utterance's ``score``; return the alerts it causes."""
        recent = self._recent.setdefault(role, deque(maxlen=self.config.window))
        recent.append(score)
        rolling = round(sum(recent) / len(recent), 4)
        self.points.append(SentimentPoint(transcript_id, role, offset, round(score, 4),
                                          rolling))
        if role not in self.caller_roles:
            return []
        alerts = []
        said = stems(text)
        phrase = next((p for p, s in self._phrases if contains_sequence(said, s)), None)
        cooled = (self._escalated_at is None
                  or offset >= self._escalated_at + self.config.escalation_cooldown_s)
        if phrase is not None and cooled:
            self._escalated_at = offset
            alerts.append(SentimentAlert(
                "escalation", "Escalation risk",
                f'The caller said "{phrase}". Acknowledge it, stay calm, and offer the '
                "escalation path (supervisor or callback) before they ask again.",
                f"escalation phrase {phrase!r}"))
        config = self.config
        strong = score <= config.strong
        low = len(recent) >= config.min_utterances and rolling <= config.threshold
        if self._armed and (strong or low):
            self._armed = False
            reason = (f"utterance sentiment {score:+.2f} <= {config.strong:+.2f}" if strong
                      else f"rolling sentiment {rolling:+.2f} <= {config.threshold:+.2f} over "
                      f"{len(recent)} utterances")
            alerts.append(SentimentAlert(
                "caller-negative", "Caller is upset",
                f"Caller sentiment is {min(score, rolling):+.2f}. Slow down, acknowledge the "
                "problem and say what you will do next.", reason))
        elif not self._armed and rolling > config.threshold + config.recover:
            self._armed = True
        return alerts

    def trend(self) -> dict[str, dict[str, Any]]:
        """Per role: count, mean, min, max, first and last rolling score, direction, and
        every point (for the summary)."""
        out: dict[str, dict[str, Any]] = {}
        for role in sorted({p.role for p in self.points}):
            mine = [p for p in self.points if p.role == role]
            scores = [p.score for p in mine]
            change = mine[-1].rolling - mine[0].rolling
            out[role] = {
                "utterances": len(mine),
                "mean": round(sum(scores) / len(scores), 4),
                "min": min(scores),
                "max": max(scores),
                "first": mine[0].rolling,
                "last": mine[-1].rolling,
                "direction": ("improving" if change > 0.15 else
                              "worsening" if change < -0.15 else "steady"),
                "points": [{"transcriptId": p.transcript_id, "offset": p.offset,
                            "score": p.score, "rolling": p.rolling} for p in mine],
            }
        return out


__all__ = ["CallSentiment", "Scorer", "SentimentAlert", "SentimentPoint", "VaderScorer"]
