"""docs/settings.md is what the settings classes say."""

from __future__ import annotations

from pathlib import Path

from workers.settings_doc import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_settings_doc_is_up_to_date() -> None:
    assert DOC.read_text() == render(), "run: python -m workers.settings_doc > docs/settings.md"


def test_every_variable_is_documented_with_a_meaning() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `CALLSCRIBE_")]
    assert len(rows) > 40
    assert all(not row.rstrip().endswith("|  |") for row in rows)
