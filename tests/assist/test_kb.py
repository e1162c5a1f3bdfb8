"""Knowledge base: parsing Markdown into passages, BM25 ranking on the shipped articles, no
repeats per call."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.assist.helpers import knowledge
from workers.assist.errors import KnowledgeBaseError
from workers.assist.kb import KbState, KnowledgeBase, parse_article


@pytest.mark.parametrize(("query", "article", "heading"), [
    ("I want to cancel my subscription and get a refund", "cancellation-and-refunds", None),
    ("You charged me twice this month", "duplicate-charges", "Charged twice for the same month"),
    ("my internet is not working and the router light is red", "internet-outage",
     "Restart the router"),
    ("the wifi is so slow upstairs", "slow-wifi", None),
    ("how do I reset my password for the app", "account-access", None),
    ("we are moving house, can I take the service to the new address", "moving-home", None),
    ("I'd like to upgrade to a faster plan", "plan-changes", "Upgrades"),
    ("my payment failed, how do I update the card", "payment-methods", "Failed payments"),
    ("I want to make a formal complaint", "complaints", "Formal complaints"),
])
def test_ranking_on_shipped_articles(query: str, article: str, heading: str | None) -> None:
    best = knowledge().search(query, limit=3)
    assert best, query
    assert best[0].article_id == article, [(s.article_id, s.score) for s in best]
    if heading:
        assert best[0].heading == heading
    assert best[0].passage and best[0].matched
    assert [s.score for s in best] == sorted((s.score for s in best), reverse=True)
    assert len({s.article_id for s in best}) == len(best)  # one passage per article


def test_thresholds_and_chit_chat() -> None:
    kb = knowledge()
    assert kb.search("okay thank you so much, that's great") == []
    assert kb.search("the router", min_terms=2) == []
    # negated intent: "don't want to cancel" is not a cancellation query
    assert all(s.article_id != "cancellation-and-refunds"
               for s in kb.search("I don't want to cancel", min_score=1))


def test_no_repeats_per_call() -> None:
    kb, state = knowledge(), KbState()
    first = kb.suggest("I want to cancel and get a refund", state, min_score=4, min_terms=2)
    second = kb.suggest("cancel my account refund please", state, min_score=4, min_terms=2)
    assert [s.article_id for s in first] == ["cancellation-and-refunds"]
    assert "cancellation-and-refunds" not in [s.article_id for s in second]
    assert state.suggested[0] == "cancellation-and-refunds"


def test_markdown_is_split_into_passages() -> None:
    article = parse_article("returns", """---
title: Returning equipment
keywords: [router, box]
---
Intro paragraph with a [link](http://example.com) and *emphasis*.

## Labels
- print the **label**
- drop it off

## Deadline
Within 30 days.
""")
    assert article.title == "Returning equipment" and article.keywords == ("router", "box")
    assert [(p.heading, p.text) for p in article.passages] == [
        ("", "Intro paragraph with a link and emphasis."),
        ("Labels", "print the label drop it off"),
        ("Deadline", "Within 30 days."),
    ]
    assert parse_article("plain-file", "# Title here\ntext").title == "Title here"
    assert parse_article("no-title", "text").title == "No Title"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="does not exist"):
        KnowledgeBase.load(tmp_path / "missing")
    with pytest.raises(KnowledgeBaseError, match=r"no \*\.md"):
        KnowledgeBase.load(tmp_path)
