"""Precision and recall of the shipped playbook and knowledge base on the labelled example
calls (``tests/fixtures/assist/eval_calls.yaml``), per split: ``dev`` calls were used to tune
the examples, ``test`` calls only to score them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assist.helpers import engine, offsets, transcript
from tests.conftest import ARTIFACTS, FIXTURES

CALLS = yaml.safe_load((FIXTURES / "assist" / "eval_calls.yaml").read_text())["calls"]


def score(split: str) -> dict[str, dict[str, Any]]:
    """Per category (hints, articles, alerts): true/false positives, misses, and the list of
    mistakes, over the calls of ``split``."""
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("hints", "articles", "alerts")}
    mistakes: list[str] = []
    for call in (c for c in CALLS if c["split"] == split):
        assist = engine()
        for role, text, at, labels in offsets(call["said"]):
            out = assist.on_transcript(transcript(call["id"], role, text, at))
            got = {
                "hints": {m["ref"] for m in out.assist
                          if m["source"] in ("playbook", "disclosure")},
                "articles": {m["ref"] for m in out.assist if m["kind"] == "article"},
                "alerts": {m["ref"] for m in out.assist if m["source"] == "sentiment"},
            }
            want = {
                "hints": set(labels.get("hints") or ()),
                "articles": {labels["article"]} if labels.get("article") else set(),
                "alerts": set(labels.get("alerts") or ()),
            }
            for category in counts:
                tp, fp, fn = (got[category] & want[category], got[category] - want[category],
                              want[category] - got[category])
                counts[category].update(tp=len(tp), fp=len(fp), fn=len(fn))
                mistakes += [f"{call['id']} @{at:g}s {category}: extra {sorted(fp)} "
                             f"missing {sorted(fn)} ({text!r})" for _ in [0] if fp or fn]
    result: dict[str, dict[str, Any]] = {}
    for category, c in counts.items():
        predicted, relevant = c["tp"] + c["fp"], c["tp"] + c["fn"]
        result[category] = {
            "tp": c["tp"], "fp": c["fp"], "fn": c["fn"],
            "precision": round(c["tp"] / predicted, 3) if predicted else 1.0,
            "recall": round(c["tp"] / relevant, 3) if relevant else 1.0,
        }
    result["mistakes"] = {"list": mistakes}
    return result


#: Floors per split and category (precision, recall). Hints and articles interrupt the agent,
#: so precision matters most. dev: what the tuned examples reach. test (held out): the level
#: measured when the set was written (articles suffer from vocabulary the articles lack:
#: "close my account" finds nothing about cancelling); a regression guard, not a goal.
FLOORS = {
    "dev": {"hints": (1.0, 1.0), "articles": (1.0, 1.0), "alerts": (1.0, 0.7)},
    "test": {"hints": (1.0, 0.9), "articles": (0.6, 0.8), "alerts": (1.0, 0.6)},
}


@pytest.mark.parametrize("split", ["dev", "test"])
def test_precision_on_labelled_calls(split: str) -> None:
    result = score(split)
    ARTIFACTS.mkdir(exist_ok=True)
    Path(ARTIFACTS / f"assist-eval-{split}.json").write_text(json.dumps(result, indent=2))
    for category, (precision, recall) in FLOORS[split].items():
        assert result[category]["precision"] >= precision, (category, result)
        assert result[category]["recall"] >= recall, (category, result)
