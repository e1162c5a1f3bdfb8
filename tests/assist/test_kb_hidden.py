"""The knowledge base skips hidden folders (kubelet's ``..data`` copies of a ConfigMap)."""

from __future__ import annotations

from pathlib import Path

from workers.assist.kb import KnowledgeBase


def test_hidden_copies_of_articles_are_not_indexed(tmp_path: Path) -> None:
    article = "# Refunds\n\nRefunds take five working days to reach your card.\n"
    (tmp_path / "refunds.md").write_text(article)
    hidden = tmp_path / "..2026_11_22_05_00_00.123"
    hidden.mkdir()
    (hidden / "refunds.md").write_text(article)
    kb = KnowledgeBase.load(tmp_path)
    assert list(kb.articles) == ["refunds"]
    assert len(kb.passages) == len(kb.articles["refunds"].passages)
