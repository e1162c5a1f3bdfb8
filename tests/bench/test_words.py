"""Per-word latency (bench/words.py) on a hand-made call: which message first showed each word,
which one committed it, and words the final got wrong left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.calls import CallPlan, Turn
from bench.words import AlignedWord, tokens, word_timings


def test_tokens_ignore_case_and_punctuation() -> None:
    assert tokens("Hello, it's 4 o'clock.") == ["hello", "it's", "4", "o'clock"]


def test_seen_and_committed_per_word() -> None:
    plan = CallPlan(call_id="c", wav=Path("c.wav"), rate=16000, duration_s=10.0,
                    speakers=("a", "b"),
                    turns=[Turn(0, 1.0, 2.0, "u.wav", "a", "my internet is down")])
    # Words end 1.4, 1.8, 2.0 and 2.6 s into the call; the sender's clock is 100 + position.
    aligned = {("c", 0): [AlignedWord("my", 1400), AlignedWord("internet", 1800),
                          AlignedWord("is", 2000), AlignedWord("down", 2600)]}
    record_id = "c:0:1000"
    received: list[tuple[float, dict[str, Any]]] = [
        (102.0, {"type": "transcript:interim", "id": record_id, "msg": "My intern",
                 "stable": "", "revision": 0}),
        (102.5, {"type": "transcript:interim", "id": record_id, "msg": "My internet is",
                 "stable": "My internet", "revision": 1}),
        (103.2, {"type": "transcript", "id": record_id, "msg": "My internet is town."}),
    ]
    records = {record_id: {"id": record_id, "channel": 0, "audioStartMs": 1000}}
    timings = word_timings("c", plan, received, records, aligned,
                           wall_time_of=lambda ms: 100 + ms / 1000)
    by_word = {t.token: t for t in timings}
    assert set(by_word) == {"my", "internet", "is"}  # "town" is not what was said
    assert by_word["my"].seen_s == pytest.approx(102.0 - 101.4)
    assert by_word["my"].committed_s == pytest.approx(102.5 - 101.4)  # stable in revision 1
    assert by_word["internet"].seen_s == pytest.approx(102.5 - 101.8)  # "intern" is not it
    assert by_word["internet"].committed_s == pytest.approx(102.5 - 101.8)
    assert by_word["is"].seen_s == pytest.approx(102.5 - 102.0)
    assert by_word["is"].committed_s == pytest.approx(103.2 - 102.0)  # only the final


def test_a_turn_split_into_two_finals_is_matched_across_both() -> None:
    plan = CallPlan(call_id="c", wav=Path("c.wav"), rate=16000, duration_s=10.0,
                    speakers=("a", "b"),
                    turns=[Turn(1, 0.5, 3.0, "u.wav", "b", "yes please. thank you")])
    aligned = {("c", 0): [AlignedWord("yes", 900), AlignedWord("please", 1300),
                          AlignedWord("thank", 2800), AlignedWord("you", 3100)]}
    received = [(2.0, {"type": "transcript", "id": "c:1:500", "msg": "Yes, please."}),
                (4.0, {"type": "transcript", "id": "c:1:2500", "msg": "Thank you."})]
    records = {"c:1:500": {"id": "c:1:500", "channel": 1, "audioStartMs": 500},
               "c:1:2500": {"id": "c:1:2500", "channel": 1, "audioStartMs": 2500}}
    timings = word_timings("c", plan, received, records, aligned,
                           wall_time_of=lambda ms: ms / 1000)
    assert [(t.token, t.id, round(t.committed_s, 3)) for t in timings] == [
        ("yes", "c:1:500", 1.1), ("please", "c:1:500", 0.7),
        ("thank", "c:1:2500", 1.2), ("you", "c:1:2500", 0.9)]
