"""The soak's report (bench/soak.py): durations, the verdict over sampled processes, latency
per sample window, and the table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.soak import latency_windows, parse_counts, parse_duration, render, verdicts
from bench.usage import MB


def test_durations_and_call_counts_parse() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "2m", "1.5h", " 30M ")] == [
        90, 90, 120, 5400, 1800]
    for bad in ("", "m", "two minutes", "-1m", "0s"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert parse_counts("8,0,4") == [0, 4, 8]
    assert parse_counts("") == []
    with pytest.raises(ValueError, match="call counts"):
        parse_counts("0,four")


def sample(t: float, *, rss_mb: float, fds: int, lag: float | None,
           broker_mb: float) -> dict[str, Any]:
    return {"t": t, "calls": 4, "lag": lag, "readLag": 0.0, "workers": {
        "transcribe-0": {"rss": rss_mb * MB, "fds": fds, "cpuS": t / 2},
        "broker": {"rss": broker_mb * MB, "fds": 32, "cpuS": t / 10}}}


def test_a_flat_soak_passes_though_the_broker_grows() -> None:
    samples = [sample(10.0 * i, rss_mb=230 + (i % 3), fds=14 + i % 2, lag=300 + 50 * (i % 4),
                      broker_mb=30 + 5 * i) for i in range(31)]
    out = verdicts(samples, 300)
    assert out["ok"] is True
    assert out["workers"]["transcribe-0"]["ok"] is True
    assert out["workers"]["broker"]["judged"] is False  # memory storage keeps every record
    assert out["workers"]["broker"]["rss"]["growth"] > 1
    assert out["lag"]["ok"] is True


def test_a_leaking_worker_or_a_growing_lag_fails_the_soak() -> None:
    leaking = [sample(10.0 * i, rss_mb=230 + 2 * i, fds=14, lag=300, broker_mb=30)
               for i in range(31)]
    out = verdicts(leaking, 300)
    assert out["workers"]["transcribe-0"]["ok"] is False and out["ok"] is False
    backlog = [sample(10.0 * i, rss_mb=230, fds=14, lag=300 + 100 * i, broker_mb=30)
               for i in range(31)]
    out = verdicts(backlog, 300)
    assert out["lag"]["ok"] is False and out["ok"] is False
    assert out["workers"]["transcribe-0"]["ok"] is True


def test_samples_without_a_lag_leave_the_lag_unjudged() -> None:
    samples = [sample(10.0 * i, rss_mb=230, fds=14, lag=None, broker_mb=30) for i in range(31)]
    out = verdicts(samples, 300)
    assert out["lag"]["ok"] is None and out["ok"] is True


def test_latency_is_summarised_per_window_between_samples() -> None:
    samples = [sample(t, rss_mb=230, fds=14, lag=0, broker_mb=30) for t in (0.0, 10.0, 20.0)]
    origin = 1000.0
    latencies = [(1003.0, 0.5), (1009.0, 1.5), (1015.0, 0.8)]
    latency_windows(samples, origin, latencies)
    assert [s["latency"]["count"] for s in samples] == [0, 2, 1]
    assert samples[1]["latency"]["p50"] == pytest.approx(1.0)
    assert samples[2]["latency"]["max"] == pytest.approx(0.8)


def test_the_report_shows_every_process_the_verdict_and_memory_per_call() -> None:
    samples = [sample(10.0 * i, rss_mb=230, fds=14, lag=300, broker_mb=30) for i in range(11)]
    latency_windows(samples, 0.0, [(15.0, 0.7), (55.0, 0.9)])
    summary = {"p50": 0.8, "p95": 0.9, "p99": 0.9, "max": 0.9, "count": 2}
    soak = {"calls": 4, "elapsedS": 100.0, "callsPlayed": 9, "samples": samples,
            "verdict": verdicts(samples, 100), "latencyS": summary,
            "latencyAfterWarmupS": summary,
            "ledger": {"delivered": 40, "utterances": 40, "missing": 0, "dup_other_id": 0,
                       "messages_missed": 0, "audio_samples_lost": 0},
            "perCall": {"steps": [{"calls": 0, "rss": {"transcribe-0": 230 * MB}},
                                  {"calls": 4, "rss": {"transcribe-0": 234 * MB}}],
                        "mbPerCall": {"transcribe-0": 1.0}}}
    text = render(soak)
    assert "| 10 | 4 | 300 (0) | - | - | 30/32 | 230/14 |" in text  # broker, transcribe-0
    assert "| 20 | 4 | 300 (0) | 0.70 | 0.70 |" in text
    assert "| transcribe-0 | 230 | 230 | +0.0 % | 14 → 14 | +0.00 | flat |" in text
    assert "not judged (memory storage)" in text
    assert "40/40 utterances delivered" in text and "verdict: PASS" in text
    assert "| transcribe-0 | 230 | 234 | 1.00 |" in text
