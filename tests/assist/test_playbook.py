"""Playbook rules: phrases, regexes, intents, vetoes, roles, priority, cooldowns, disclosure
reminders, and what a bad playbook file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.assist.helpers import playbook
from workers.assist.errors import PlaybookError
from workers.assist.messages import TranscriptText
from workers.assist.playbook import Playbook, PlaybookState

SMALL = """
version: 1
max_hints_per_utterance: 2
rules:
  - id: cancel
    title: Retention
    text: Offer KEEP50.
    priority: 80
    cooldown_s: 60
    match:
      phrases: [cancel my subscription]
      regexes: ['\\bclose (my|the) account\\b']
      intent:
        examples: [I want to leave for a competitor]
        threshold: 0.6
      unless: [don't want to cancel]
  - id: angry
    title: Calm down
    text: Acknowledge.
    priority: 90
    once: true
    match: {phrases: [this is ridiculous]}
  - id: agent-only
    title: Agent said price
    text: Check the price.
    role: agent
    priority: 10
    match: {phrases: [the price is]}
disclosures:
  - id: recording
    title: Recording
    text: Say it.
    within_s: 15
    priority: 50
    said: {phrases: [call may be recorded]}
"""


def say(book: Playbook, state: PlaybookState, text: str, *, at: float = 0.0,
        role: str = "other") -> list[str]:
    utterance = TranscriptText("c1", f"c1:{role}:{at}", role, text, at)
    return [m.ref for m in book.evaluate(utterance, state)]


@pytest.fixture
def book() -> Playbook:
    return Playbook.from_yaml(SMALL)


def test_phrases_match_after_stemming(book: Playbook) -> None:
    assert say(book, PlaybookState(), "I'm cancelling my subscriptions today") == ["cancel"]
    assert say(book, PlaybookState(), "I want to close the account") == ["cancel"]
    assert say(book, PlaybookState(), "I'd rather leave for your competitor") == ["cancel"]
    assert say(book, PlaybookState(), "the weather is nice") == []


def test_reasons_explain_the_match(book: Playbook) -> None:
    state = PlaybookState()
    (phrase,) = book.evaluate(TranscriptText("c", "t1", "other", "cancel my subscription", 0),
                              state)
    assert phrase.reason == "phrase 'cancel my subscription'"
    intent, _ = book.evaluate(TranscriptText("c", "t2", "other", "leaving for a competitor", 99),
                              state)
    assert intent.reason.startswith("intent 1.00 like")
    (regex,) = book.evaluate(TranscriptText("c", "t3", "other", "close my account 4539", 999),
                             state)
    assert regex.reason == r"pattern '\\bclose (my|the) account\\b'"
    assert "4539" not in regex.reason  # reasons never quote the caller


def test_unless_vetoes(book: Playbook) -> None:
    assert say(book, PlaybookState(), "I don't want to cancel my subscription") == []


def test_role_filter(book: Playbook) -> None:
    assert say(book, PlaybookState(), "the price is ten dollars", role="other") == []
    assert say(book, PlaybookState(), "the price is ten dollars", role="assistant") == \
        ["agent-only"]


def test_cooldown_and_once(book: Playbook) -> None:
    state = PlaybookState()
    assert say(book, state, "cancel my subscription", at=1) == ["cancel"]
    assert say(book, state, "cancel my subscription", at=30) == ["recording"]  # cooling down
    assert say(book, state, "cancel my subscription", at=61) == ["cancel"]
    assert say(book, state, "this is ridiculous", at=62) == ["angry"]
    assert say(book, state, "this is ridiculous", at=500) == []  # once per call
    assert say(book, PlaybookState(), "this is ridiculous", at=5) == ["angry"]  # per call


def test_priority_and_limit(book: Playbook) -> None:
    state = PlaybookState()
    # both rules match; the higher priority comes first; the disclosure is due too, but only
    # max_hints_per_utterance (2) are shown: the reminder waits for the next utterance
    assert say(book, state, "this is ridiculous, cancel my subscription", at=20) == \
        ["angry", "cancel"]
    assert say(book, state, "hello", at=24) == ["recording"]


def test_disclosure_reminder_only_when_not_said(book: Playbook) -> None:
    state = PlaybookState()
    assert say(book, state, "hello", at=5) == []
    assert say(book, state, "how can I help", at=16, role="assistant") == ["recording"]
    assert say(book, state, "anything", at=30) == []  # reminded once
    assert book.disclosure_status(state) == {"recording": "reminded"}

    said = PlaybookState()
    assert say(book, said, "this call may be recorded", at=2, role="assistant") == []
    assert say(book, said, "okay", at=40) == []
    assert book.disclosure_status(said) == {"recording": "said"}
    # only the agent can say it
    caller = PlaybookState()
    say(book, caller, "this call may be recorded", at=2, role="other")
    assert say(book, caller, "ok", at=20) == ["recording"]


def test_tags_are_collected_even_in_cooldown() -> None:
    state = PlaybookState()
    book = playbook()
    say(book, state, "I want to cancel my subscription", at=1)
    say(book, state, "cancel my subscription now", at=2)
    assert state.tags["cancellation-request"] == 2


def test_shipped_playbook_loads() -> None:
    book = playbook()
    assert {r.id for r in book.rules} >= {"retention-offer", "escalation-script",
                                          "duplicate-charge", "secure-payment"}
    assert {d.id for d in book.disclosures} == {"recording-disclosure", "identity-check"}
    assert book.caller_roles == {"other"} and "assistant" in book.agent_roles


@pytest.mark.parametrize(("text", "error"), [
    ("rules: 5", "rules: expected a list"),
    ("rules: [{id: a, title: t, text: x}]", r"rules\[0\].match: needs at least one"),
    ("rules: [{id: a, title: t, text: x, match: {phrases: [x]}, role: boss}]",
     r"rules\[0\].role: expected caller, agent or any"),
    ("rules: [{id: a, title: t, text: x, match: {regexes: ['(']}}]",
     r"rules\[0\].match.regexes\[0\]: invalid regex"),
    ("rules: [{id: a, title: t, text: x, match: {phrase: [x]}}]", "unknown keys"),
    ("rules: [{id: a, title: t, text: x, match: {phrases: [x]}, cooldown_s: -1}]",
     "at least 0"),
    ("rules: [{id: a, title: t, text: x, match: {phrases: [x]}},"
     " {id: a, title: t, text: x, match: {phrases: [y]}}]", "duplicate ids"),
    ("version: 2", "version: expected 1"),
    ("rules: [", "not valid YAML"),
])
def test_bad_playbooks_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(PlaybookError, match=error):
        Playbook.from_yaml(text, source="test.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="cannot read playbook"):
        Playbook.load(tmp_path / "nope.yaml")
