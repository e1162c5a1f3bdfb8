"""What a process holds, and whether a series of it is flat: the pure half of the soak
(``bench.soak``).

:func:`usage` reads a process's resident memory, open file descriptors and CPU seconds (with
psutil when it is installed, else from ``/proc``). The verdicts take ``(seconds, value)``
series sampled over a run and ignore its warm-up (the first ``WARMUP_FRACTION``):

* :func:`rss_verdict`: memory grew by at most ``RSS_MAX_GROWTH`` (10 %) after the warm-up,
  from the first sample after it to the largest one;
* :func:`slope_verdict`: a least-squares slope per minute (``bench.capacity.fit_slope``) that
  fails only when it is above a tolerance and significantly above zero (``SIGNIFICANCE``
  standard errors): consumer lag, file descriptors;
* :func:`per_call_mb`: memory added per open call, from (calls open, bytes) points.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.capacity import fit_slope

try:
    import psutil  # type: ignore[import-untyped]  # no stubs installed
except ImportError:  # optional: /proc does the same on Linux
    psutil = None

MB = 1024 * 1024
#: The first part of a soak not judged (imports, the model, first calls, pools filling).
WARMUP_FRACTION = 0.2
#: Resident memory may grow this much after the warm-up.
RSS_MAX_GROWTH = 0.10
#: A slope counts only when it is this many standard errors above zero.
SIGNIFICANCE = 2.0


@dataclass(frozen=True)
class Usage:
    rss: int  # bytes resident
    fds: int  # open file descriptors
    cpu_s: float  # user + system CPU seconds so far


def usage(pid: int) -> Usage:
    """``pid``'s resident memory, open descriptors and CPU time now (raises
    ``ProcessLookupError`` when it is gone)."""
    if psutil is not None:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                times = process.cpu_times()
                return Usage(process.memory_info().rss, process.num_fds(),
                             times.user + times.system)
        except psutil.NoSuchProcess:
            raise ProcessLookupError(pid) from None
    return proc_usage(pid)


def proc_usage(pid: int) -> Usage:
    """:func:`usage` from ``/proc/<pid>`` (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    # After "pid (comm)": utime, stime are fields 14, 15; rss (pages) is field 24.
    ticks = os.sysconf("SC_CLK_TCK")
    return Usage(rss=int(fields[21]) * os.sysconf("SC_PAGE_SIZE"), fds=fds,
                 cpu_s=(int(fields[11]) + int(fields[12])) / ticks)


Series = Sequence[tuple[float, float]]


def after_warmup(series: Series, duration_s: float,
                 fraction: float = WARMUP_FRACTION) -> list[tuple[float, float]]:
    """The samples taken after the first ``fraction`` of ``duration_s``."""
    return [(t, v) for t, v in series if t >= duration_s * fraction]


def rss_verdict(series: Series, duration_s: float,
                max_growth: float = RSS_MAX_GROWTH) -> dict[str, Any]:
    """``start`` (the first sample after the warm-up), ``max`` (the largest after it, in
    bytes), ``growth`` (max / start - 1) and ``ok`` (growth ≤ ``max_growth``); ``ok`` is
    ``None`` without two samples after the warm-up."""
    judged = after_warmup(series, duration_s)
    if len(judged) < 2:
        return {"start": None, "max": None, "growth": None, "ok": None, "n": len(judged)}
    start = judged[0][1]
    top = max(v for _, v in judged)
    growth = top / start - 1 if start > 0 else 0.0
    return {"start": start, "max": top, "growth": growth, "ok": growth <= max_growth,
            "n": len(judged)}


def slope_verdict(series: Series, duration_s: float, tolerance_per_min: float,
                  ) -> dict[str, Any]:
    """The slope per minute of ``series`` after the warm-up, its standard error, and ``ok``:
    not both above ``tolerance_per_min`` and ``SIGNIFICANCE`` standard errors above zero
    (``None`` when too few samples to tell)."""
    judged = after_warmup(series, duration_s)
    fit = fit_slope(("s", t / 60, v) for t, v in judged)
    slope, stderr = fit["slope"], fit["stderr"]
    if slope is None or stderr is None:
        ok: bool | None = None
    else:
        ok = not (slope > tolerance_per_min and slope > SIGNIFICANCE * stderr)
    return {"slope": slope, "stderr": stderr, "ok": ok, "n": fit["n"],
            "first": judged[0][1] if judged else None, "last": judged[-1][1] if judged else None}


def per_call_mb(points: Sequence[tuple[int, float]]) -> float | None:
    """MB of resident memory per open call: the least-squares slope of bytes on calls open
    (``None`` with fewer than two call counts)."""
    if len({calls for calls, _ in points}) < 2:
        return None
    slope = fit_slope(("p", float(calls), rss / MB) for calls, rss in points)["slope"]
    return None if slope is None else float(slope)


__all__ = ["MB", "RSS_MAX_GROWTH", "WARMUP_FRACTION", "Usage", "after_warmup", "per_call_mb",
           "proc_usage", "rss_verdict", "slope_verdict", "usage"]
