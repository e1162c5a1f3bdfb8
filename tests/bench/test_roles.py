"""bench.roles' scoring and call building (pure parts): words with the right role, turn
boundary errors, the table; mixed calls summed from two speakers on a tiny generated corpus."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.calls import Corpus, write_wav
from bench.roles import Run, boundary_errors, build_mixed, render_table, score, word_scores
from workers.records import Role

RATE = 16000
REFERENCE: list[tuple[int, int, Role]] = [(0, 2000, "assistant"), (2500, 4500, "other"),
                                          (4400, 6000, "assistant")]


def final(start: int, end: int, role: str, msg: str, record_id: str = "") -> dict[str, Any]:
    return {"type": "transcript", "id": record_id or f"c:0:{start}", "audioStartMs": start,
            "audioEndMs": end, "voicedEndMs": end, "role": role, "msg": msg}


def test_words_are_right_where_their_party_speaks() -> None:
    records = [final(0, 2000, "assistant", "one two three four"),
               final(2500, 4500, "assistant", "five six"),  # the caller's, labelled wrong
               final(4500, 6000, "assistant", "seven eight"),
               {"type": "transcript:interim", "msg": "ignored", "role": "other",
                "audioStartMs": 0, "audioEndMs": 1}]
    assert word_scores(REFERENCE, records) == (6, 8)


def test_a_word_in_an_overlap_counts_for_either_party() -> None:
    # 4400-4500 both speak: a word there is right with either role.
    assert word_scores(REFERENCE, [final(4400, 4500, "other", "overlap")]) == (1, 1)
    assert word_scores(REFERENCE, [final(4400, 4500, "assistant", "overlap")]) == (1, 1)


def test_boundary_errors_measure_each_change_of_party() -> None:
    records = [final(0, 2000, "assistant", "a"), final(2700, 4400, "other", "b"),
               final(4300, 6000, "assistant", "c")]
    errors, missed = boundary_errors(REFERENCE, records)
    assert (sorted(errors), missed) == ([100, 200], 0)
    # One role throughout: every change is missed.
    same = [final(0, 2000, "assistant", "a"), final(2700, 6000, "assistant", "b")]
    assert boundary_errors(REFERENCE, same) == ([], 2)


def test_score_and_table() -> None:
    class Call:
        call_id, rate, pcm = "c", RATE, bytes(RATE * 2 * 6)
        reference = REFERENCE

    run = Run()
    run.records["c"] = [final(0, 2000, "assistant", "a b"), final(2500, 4500, "other", "c d")]
    run.t0["c"] = 100.0
    run.arrived.update({"c:0:0": 102.3, "c:0:2500": 104.8})
    baseline = Run()
    baseline.records["c"] = run.records["c"]
    baseline.t0["c"] = 100.0
    baseline.arrived.update({"c:0:0": 102.2, "c:0:2500": 104.7})
    row = score([Call()], run, baseline, cpu_s=1.0, process_cpu_s=4.0)  # type: ignore[list-item]
    # The second change (4400 ms) is 1900 ms from the only change of role: found, late.
    assert row["words_right"] == 1.0 and row["boundaries_missed"] == 0.0
    assert row["boundary_error_p50_ms"] == 950
    assert row["final_latency_ms"]["separated"][50] == pytest.approx(300.0)
    assert row["final_latency_ms"]["not_separated"][50] == pytest.approx(200.0)
    table = render_table({"16 kHz": row})
    assert "| 16 kHz | 1 | 4 | 100.0 % |" in table and "+100 ms" in table
    assert "(not separated: - s; 6.0 s audio)" in table


def test_mixed_calls_sum_two_speakers_into_one_channel(tmp_path: Any) -> None:
    rng = np.random.default_rng(3)
    rows = ["file\tduration_s\treference_text\tspeaker"]
    for speaker in ("alice", "bob"):
        for index in range(2):
            samples = rng.normal(0, 2000, 2 * RATE).clip(-30000, 30000).astype(np.int16)
            write_wav(tmp_path / f"{speaker}-{index}.wav", samples[:, None], RATE)
            rows.append(f"{speaker}-{index}.wav\t2.000\tWORDS\t{speaker}")
    (tmp_path / "manifest.tsv").write_text("\n".join(rows) + "\n")
    corpus = Corpus(tel8k=False, max_turn_s=10, speech_dir=tmp_path)
    calls = build_mixed(corpus, count=2, seconds=12, seed=1, gap_s=(-0.3, 0.5), prefix="m")
    for call in calls:
        reference = call.reference
        assert {role for _, _, role in reference} == {"assistant", "other"}
        assert reference[0][2] == "assistant"  # the first voice
        assert len(call.pcm) // 2 >= reference[-1][1] * RATE // 1000
