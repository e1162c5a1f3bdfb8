"""The soak's measurements and verdicts (bench/usage.py): what a process holds, and whether a
series of it is flat after the warm-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.usage import MB, per_call_mb, proc_usage, rss_verdict, slope_verdict, usage

#: A child that holds 40 MB and 20 extra open descriptors until its stdin closes.
HOLDER = """
import os, sys
block = bytearray(40 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
files = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
print("ready", flush=True)
sys.stdin.read()
"""


def test_usage_sees_a_processes_memory_and_descriptors_by_psutil_and_by_proc() -> None:
    idle = subprocess.Popen([sys.executable, "-c", "import sys; print('ready', flush=True); "
                             "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        for child in (idle, holder):
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
        small, big = usage(idle.pid), usage(holder.pid)
        assert big.rss - small.rss >= 38 * MB
        assert big.fds - small.fds == 20
        assert big.cpu_s >= 0
        by_proc = proc_usage(holder.pid)
        assert by_proc.fds == big.fds
        assert abs(by_proc.rss - big.rss) < 2 * MB
    finally:
        for child in (idle, holder):
            child.communicate(b"")
    with pytest.raises(ProcessLookupError):
        usage(holder.pid)
    with pytest.raises(ProcessLookupError):
        proc_usage(holder.pid)


def test_rss_that_grows_during_the_warm_up_then_holds_is_flat() -> None:
    # 100 s: the warm-up is the first 20 s; 200 MB then, 215 MB at most afterwards (+7.5 %).
    series = [(0, 80 * MB), (10, 150 * MB), (20, 200 * MB), (40, 210 * MB), (60, 215 * MB),
              (80, 205 * MB), (100, 212 * MB)]
    out = rss_verdict(series, 100)
    assert out["start"] == 200 * MB and out["max"] == 215 * MB
    assert out["growth"] == pytest.approx(0.075)
    assert out["ok"] is True


def test_rss_that_keeps_growing_after_the_warm_up_fails() -> None:
    series = [(t, (200 + t / 4) * MB) for t in range(0, 601, 10)]  # +1.5 MB a minute
    out = rss_verdict(series, 600)
    assert out["start"] == 230 * MB  # at 120 s, the first sample after the warm-up
    assert out["growth"] == pytest.approx(120 / 230)
    assert out["ok"] is False


def test_rss_with_too_few_samples_after_the_warm_up_is_not_judged() -> None:
    assert rss_verdict([(0, 1.0), (5, 2.0), (30, 3.0)], 30)["ok"] is None


def test_a_noisy_but_level_lag_is_flat_and_a_growing_one_is_not() -> None:
    noise = [120, 340, 80, 400, 150, 260, 90, 380, 200, 110, 310, 170]
    level = [(10.0 * i, float(v)) for i, v in enumerate(noise * 3)]
    flat = slope_verdict(level, 360, tolerance_per_min=30)
    assert flat["ok"] is True
    growing = [(t, v + 20 * t) for t, v in level]  # +1,200 records a minute
    out = slope_verdict(growing, 360, tolerance_per_min=30)
    assert out["ok"] is False
    assert out["slope"] == pytest.approx(1200, rel=0.1)


def test_a_slope_below_the_tolerance_passes_even_when_significant() -> None:
    fds = [(10.0 * i, 30 + 0.001 * i) for i in range(60)]
    assert slope_verdict(fds, 600, tolerance_per_min=0.5)["ok"] is True


def test_a_descriptor_leak_of_one_a_call_fails() -> None:
    # a call every 20 s that leaves one socket behind: +3 a minute
    fds = [(10.0 * i, 30 + i // 2) for i in range(60)]
    out = slope_verdict(fds, 600, tolerance_per_min=0.5)
    assert out["ok"] is False
    assert (out["first"], out["last"]) == (36, 59)


def test_memory_per_call_is_the_slope_over_the_call_counts() -> None:
    points = [(0, 200 * MB), (4, 206 * MB), (8, 212 * MB)]
    assert per_call_mb(points) == pytest.approx(1.5)
    assert per_call_mb([(4, 200 * MB), (4, 210 * MB)]) is None
