"""Sentiment: VADER per utterance, rolling trend per role, alerts with hysteresis and
escalation phrases, caller only."""

from __future__ import annotations

from tests.assist.helpers import scorer
from workers.assist.playbook import SentimentConfig
from workers.assist.sentiment import CallSentiment

CONFIG = SentimentConfig(threshold=-0.3, strong=-0.6, min_utterances=2, recover=0.2, window=3,
                         escalation_phrases=("speak to a manager", "this is ridiculous"),
                         escalation_cooldown_s=60)


def feed(call: CallSentiment, role: str, text: str, at: float) -> list[str]:
    score = scorer().score(text)
    return [a.ref for a in call.add(transcript_id=f"t{at}", role=role, offset=at, text=text,
                                    score=score)]


def test_vader_scores() -> None:
    assert scorer().score("I am really angry about this, it's terrible") < -0.6
    assert scorer().score("Thank you so much, that's great") > 0.6
    assert scorer().score("") == 0.0


def test_strong_utterance_alerts_once_until_recovered() -> None:
    call = CallSentiment(CONFIG, frozenset({"other"}))
    assert feed(call, "other", "I am really angry, this is terrible service", 1) == \
        ["caller-negative"]
    assert feed(call, "other", "I hate this, awful", 5) == []  # still disarmed
    for at in (9, 13, 17):
        feed(call, "other", "Thank you, that's great, wonderful", at)
    assert feed(call, "other", "Ugh, that's horrible and I'm furious", 21) == ["caller-negative"]


def test_mild_negative_needs_a_trend() -> None:
    call = CallSentiment(CONFIG, frozenset({"other"}))
    assert feed(call, "other", "My payment failed", 1) == []  # -0.51: a report, not a mood
    assert feed(call, "other", "and the app is broken too, so annoying", 5) == \
        ["caller-negative"]  # rolling mean of two


def test_escalation_phrases_with_cooldown_and_only_for_the_caller() -> None:
    call = CallSentiment(CONFIG, frozenset({"other"}))
    assert feed(call, "assistant", "you can speak to a manager", 1) == []
    assert "escalation" in feed(call, "other", "I want to speak to a manager", 5)
    assert "escalation" not in feed(call, "other", "This is ridiculous", 10)
    assert "escalation" in feed(call, "other", "This is ridiculous", 70)


def test_trend_per_role() -> None:
    call = CallSentiment(CONFIG, frozenset({"other"}))
    feed(call, "other", "This is awful, I'm so angry", 1)
    feed(call, "assistant", "I'm sorry, let me help", 3)
    feed(call, "other", "Okay that's better, thanks", 5)
    feed(call, "other", "Great, thank you so much!", 9)
    trend = call.trend()
    assert set(trend) == {"other", "assistant"}
    caller = trend["other"]
    assert caller["utterances"] == 3 and caller["direction"] == "improving"
    assert caller["min"] < 0 < caller["max"]
    assert [p["offset"] for p in caller["points"]] == [1, 5, 9]
    assert caller["points"][-1]["rolling"] == caller["last"]
