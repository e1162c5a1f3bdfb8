"""The pure parts of bench/capacity.py: the pass/fail rule of a step, the backlog slope, the
capacity of a ramp, reading the transcriber's counters, and WER of what clients received."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from whisper_normalizer.english import (  # type: ignore[import-untyped]  # no stubs
    EnglishTextNormalizer,
)

from bench.calls import CallPlan, Turn
from bench.capacity import (
    SLOPE_MAX_S_PER_MIN,
    backlog_slope,
    calls_wer,
    capacity,
    channel_hypotheses,
    decode_rates,
    failures,
    interims_shed,
    labelled_deltas,
    lag_slope,
    lag_total,
    parse_steps,
    render_row,
    slope_is_backlog,
    split_finals,
)

FLAT = {"slope": 0.0, "stderr": 0.01, "n": 20}


def final(call: str, at_min: float, latency_s: float) -> dict[str, Any]:
    return {"call": call, "voicedEndMs": at_min * 60_000, "delivery_s": latency_s}


# ------------------------------------------------------------------------------ pass / fail


def test_a_step_within_every_target_passes() -> None:
    assert failures(1.49, 1.2, FLAT) == []


def test_a_step_fails_on_final_p95_or_committed_p50() -> None:
    assert failures(1.51, 1.2, FLAT) == ["final p95 1.51 s > 1.5 s"]
    assert failures(1.0, 1.6, FLAT) == ["committed-word p50 1.60 s > 1.5 s"]
    assert len(failures(2.0, 2.0, FLAT)) == 2


def test_a_step_without_finals_or_words_fails() -> None:
    assert failures(None, None, FLAT) == ["no final reached a client",
                                          "no word was committed right"]


def test_a_step_fails_on_a_significant_backlog_only() -> None:
    steep = {"slope": 3.0, "stderr": 0.2, "n": 40}
    noisy = {"slope": 3.0, "stderr": 2.0, "n": 5}  # a few finals: could be chance
    gentle = {"slope": SLOPE_MAX_S_PER_MIN - 0.05, "stderr": 0.01, "n": 40}
    unknown = {"slope": 5.0, "stderr": None, "n": 2}
    assert slope_is_backlog(steep)
    assert not any(slope_is_backlog(s) for s in (noisy, gentle, unknown, FLAT))
    assert failures(1.0, 1.0, steep) == ["backlog grows 3.00 s/min (> 0.25, stderr 0.20)"]


def test_capacity_is_the_last_passing_step_before_the_first_failure() -> None:
    steps = [{"calls": 1, "passed": True}, {"calls": 2, "passed": True},
             {"calls": 4, "passed": False}, {"calls": 8, "passed": True}]
    assert capacity(steps) == 2
    assert capacity([{"calls": 1, "passed": False}]) == 0
    assert capacity([]) == 0


def test_steps_are_parsed_sorted_and_checked() -> None:
    assert parse_steps("4,1,2,2") == [1, 2, 4]
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        parse_steps("0,1")
    with pytest.raises(argparse.ArgumentTypeError, match="commas"):
        parse_steps("1;2")


# ------------------------------------------------------------------------------ backlog


def test_backlog_slope_of_latency_growing_in_every_call() -> None:
    # Two calls, 0.5 s more latency per minute in each, from different bases and positions:
    # pooled across calls the bases would tilt the fit; within calls it is exact.
    rows = [final("a", m, 1.0 + 0.5 * m) for m in (0.1, 0.4, 0.7, 1.0)]
    rows += [final("b", m, 3.0 + 0.5 * m) for m in (0.0, 0.2, 0.3)]
    fit = backlog_slope(rows)
    assert fit["slope"] == pytest.approx(0.5)
    assert fit["stderr"] == pytest.approx(0.0, abs=1e-9)
    assert fit["n"] == 7


def test_backlog_slope_of_steady_latency_is_flat() -> None:
    rows = [final("a", m, 1.2 + (0.1 if i % 2 else -0.1)) for i, m in
            enumerate((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))]
    fit = backlog_slope(rows)
    assert fit["slope"] is not None and abs(fit["slope"]) < 0.2
    assert not slope_is_backlog(fit)


def test_backlog_slope_needs_two_positions() -> None:
    assert backlog_slope([])["slope"] is None
    assert backlog_slope([final("a", 0.5, 1.0)])["slope"] is None
    # One final per call: nothing to compare within a call.
    assert backlog_slope([final("a", 0.5, 1.0), final("b", 0.9, 3.0)])["slope"] is None


def test_lag_slope_in_records_per_minute() -> None:
    assert lag_slope([(0.0, 0.0), (30.0, 50.0), (60.0, 100.0)]) == pytest.approx(100.0)
    assert lag_slope([(0.0, 3.0)]) is None


# ------------------------------------------------------------------------------ metrics


BEFORE = {
    "callscribe_transcribe_decode_seconds_count": 10.0,
    "callscribe_transcribe_suppressed_total{reason=interim_shed}": 1.0,
    "callscribe_transcribe_suppressed_total{reason=no_speech}": 4.0,
    "callscribe_transcribe_decodes_total{kind=final}": 4.0,
    "callscribe_transcribe_decodes_total{kind=interim}": 6.0,
}
AFTER = {
    "callscribe_transcribe_decode_seconds_count": 70.0,
    "callscribe_transcribe_suppressed_total{reason=interim_shed}": 6.0,
    "callscribe_transcribe_suppressed_total{reason=interim_superseded}": 2.0,
    "callscribe_transcribe_suppressed_total{reason=no_speech}": 5.0,
    "callscribe_transcribe_decodes_total{kind=final}": 24.0,
    "callscribe_transcribe_decodes_total{kind=interim}": 46.0,
}


def test_labelled_deltas_by_label() -> None:
    assert labelled_deltas(BEFORE, AFTER, "callscribe_transcribe_suppressed_total",
                           "reason") == {"interim_shed": 5.0, "interim_superseded": 2.0,
                                         "no_speech": 1.0}
    assert labelled_deltas(BEFORE, AFTER, "callscribe_absent_total", "reason") == {}


def test_decode_rates_by_kind_when_exported() -> None:
    assert decode_rates(BEFORE, AFTER, 20.0) == {"all": 3.0, "final": 1.0, "interim": 2.0}


def test_decode_rates_of_a_kind_not_decoded_yet_are_zero() -> None:
    finals_only = {k: v for k, v in AFTER.items() if "kind=interim" not in k}
    before = {k: v for k, v in BEFORE.items() if "kind=interim" not in k}
    assert decode_rates(before, finals_only, 20.0) == {"all": 3.0, "final": 1.0,
                                                       "interim": 0.0}


def test_decode_rates_without_the_kind_counter() -> None:
    keep = {k: v for k, v in AFTER.items() if "decodes_total" not in k}
    assert decode_rates({}, keep, 10.0) == {"all": 7.0, "final": None, "interim": None}
    assert decode_rates({}, keep, 0.0)["all"] is None


def test_interims_shed_and_skipped() -> None:
    assert interims_shed(BEFORE, AFTER) == {"interim_shed": 5, "interim_superseded": 2,
                                            "interims_skipped": None}
    skipping = {**AFTER, "callscribe_transcribe_interims_skipped_total{reason=busy}": 9.0}
    assert interims_shed(BEFORE, skipping)["interims_skipped"] == 9


def test_lag_total_sums_the_transcribers_partitions_of_one_topic() -> None:
    metrics = {
        "callscribe_kafka_consumer_lag_records{consumer=transcribe,partition=0,topic=x.audio}": 3,
        "callscribe_kafka_consumer_lag_records{consumer=transcribe,partition=1,topic=x.audio}": 4,
        "callscribe_kafka_consumer_lag_records{consumer=transcribe,partition=0,topic=x.audio2}": 9,
        "callscribe_kafka_consumer_lag_records{consumer=bridge,partition=0,topic=x.audio}": 9,
    }
    assert lag_total({k: float(v) for k, v in metrics.items()}, "x.audio") == 7.0


# ------------------------------------------------------------------------------ WER


def plan_of(turns: list[Turn]) -> CallPlan:
    return CallPlan(call_id="c", wav=Path("c.wav"), rate=16000, duration_s=30.0,
                    speakers=("a", "b"), turns=turns)


def message(kind: str, role: str, offset: float, msg: str,
            id_: str) -> tuple[float, dict[str, Any]]:
    return (offset + 1, {"type": kind, "role": role, "offset": offset, "msg": msg, "id": id_})


RECEIVED = [
    message("transcript", "other", 5.0, "how are you?", "c:0:5000"),
    message("transcript:interim", "other", 0.5, "hello thar", "c:0:500"),
    message("transcript", "other", 0.5, "Hello there.", "c:0:500"),
    message("transcript", "assistant", 2.0, "Fine, thanks.", "c:1:2000"),
    message("transcript", "other", 5.0, "how are you?", "c:0:5000"),  # delivered twice
]


def test_channel_hypotheses_join_finals_in_offset_order() -> None:
    assert channel_hypotheses(RECEIVED) == {0: "Hello there. how are you?",
                                            1: "Fine, thanks."}


def test_wer_of_the_calls_against_the_turn_texts() -> None:
    plan = plan_of([Turn(0, 0.5, 1.5, "x.wav", "a", "HELLO THERE"),
                    Turn(1, 2.0, 2.0, "y.wav", "b", "FINE THANK YOU"),
                    Turn(0, 5.0, 1.0, "z.wav", "a", "HOW ARE YOU")])
    result = calls_wer([(plan, RECEIVED)], EnglishTextNormalizer())
    # "fine thanks" for "fine thank you": one substitution and one deletion in 8 words.
    assert result["words"] == 8
    assert (result["sub"], result["del"], result["ins"]) == (1, 1, 0)
    assert result["wer"] == pytest.approx(2 / 8)


def test_wer_counts_a_silent_channel_as_deletions() -> None:
    plan = plan_of([Turn(1, 0.5, 1.5, "x.wav", "b", "GOOD MORNING")])
    result = calls_wer([(plan, RECEIVED[:3])], EnglishTextNormalizer())
    assert (result["words"], result["del"], result["wer"]) == (2, 2, 1.0)


def test_a_row_renders_for_passing_and_failed_steps() -> None:
    summary = {"p50": 0.9, "p95": 1.3, "p99": 1.4, "max": 1.5, "count": 10}
    step = {"calls": 4, "passed": True, "failures": [], "final_s": summary,
            "word_committed_s": summary, "word_seen_s": summary,
            "decodes_per_s": {"all": 3.0, "final": None, "interim": None},
            "interims_shed": {"interim_shed": 2, "interim_superseded": 1,
                              "interims_skipped": None},
            "cpu_percent_of_one_core": {"transcriber": 95.0},
            "backlog": {"slope_s_per_min": 0.01, "stderr_s_per_min": 0.02,
                        "lag_records_per_min": 1.0},
            "wer": {"wer": 0.05}}
    row = render_row(step)
    assert row.startswith("  4") and row.endswith("pass") and "-/-/3.0" in row
    assert " -/- " in row  # no split of the finals in this step
    assert "FAIL: timed out" in render_row({"calls": 8, "passed": False,
                                             "failures": ["timed out"]})


def test_finals_closed_inside_a_turn_are_told_from_those_that_end_one() -> None:
    """A committed sentence closed while the speaker goes on leaves the rest of the turn an
    utterance that starts exactly where it ends; a turn's last final has no such successor."""
    def row(channel: int, start: int, end: int) -> dict[str, Any]:
        return {"call": "c", "channel": channel, "audioStartMs": start, "audioEndMs": end}
    closed, rest, other, later = row(0, 0, 2000), row(0, 2000, 4000), row(1, 4500, 6000), \
        row(0, 6200, 8000)
    turn_end, inside = split_finals([closed, rest, other, later])
    assert inside == [closed] and turn_end == [rest, other, later]
