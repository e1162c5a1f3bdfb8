"""How many concurrent two-party calls one transcriber serves within its latency targets.

    .venv/bin/python -m bench.capacity [--steps 1,2,4,8,12,16,24,32] [--seconds 60] [--unwatched]
        [--continuous] [--tel8k] [--device cpu|cuda] [--model DIR] [--cpu-threads N]

One stack (``bench.bench_stack``: broker, ingest and bridge here, the transcriber as a child
process), started once and warmed up once; then for each N of ``--steps`` in turn, N real-time
calls (``bench.calls``; starts spread over ``--stagger`` s) measured as ``bench.latency`` does
(``bench.latency.collect``: a liveCalls client per call, a transcripts-topic reader and a CPU
meter per step). Per step:

* final latency: end of speech (``voicedEndMs`` sent) → final on the liveCalls client, p50/p95
  (and its p95 split, ``end/in``: finals that end a turn, and finals closed inside one, a
  committed sentence closed while the speaker goes on, whose words were committed before)
* per word (``bench.words``): end of word → first seen, and → committed, p50/p95
* whisper decodes per second: all (``callscribe_transcribe_decode_seconds`` count), and by kind
  where the transcriber counts ``callscribe_transcribe_decodes_total{kind}``
* igap: mean time between two interims of one call channel
  (``callscribe_transcribe_interim_interval_seconds``; the scheduler stretches it under load)
* interims shed: ``callscribe_transcribe_suppressed_total`` ``interim_shed`` and
  ``interim_superseded``, and ``callscribe_transcribe_interims_skipped_total`` where present
* transcriber CPU, % of one core
* backlog slope: how much final latency grows per minute of call (least squares of each final's
  latency against where it ends in its call, within calls), and the transcriber's consumer lag
  on the audio topic sampled every ``LAG_EVERY_S`` (its slope, records per minute)
* WER: per call and channel, the finals the client received joined in offset order against the
  turns' texts, normalised as ``bench.eval_wer`` does

A step fails when final p95 > 1.5 s, committed-word p50 > 1.5 s, or the backlog slope is above
0.25 s/min and more than two standard errors above zero. The run stops at the first failing
step; the capacity is the largest N that passed (0 if none). Results:
``bench/results/capacity-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from whisper_normalizer.english import (  # type: ignore[import-untyped]  # no stubs
    EnglishTextNormalizer,
)

from bench import speech
from bench.bench_stack import RESULTS, BenchStack, running_stack, save_result
from bench.calls import ROLES, CallPlan, Corpus, build_calls
from bench.eval_wer import score
from bench.latency import (
    Collected,
    collect,
    count_delta,
    metric_delta,
    summary,
    transcriber_stats,
    warm_up,
)
from bench.words import AlignCache, align

log = logging.getLogger("bench.capacity")

DEFAULT_STEPS = (1, 2, 4, 8, 12, 16, 24, 32)
#: A step passes with final p95 and committed-word p50 at most these (seconds) ...
FINAL_P95_MAX_S = 1.5
COMMITTED_P50_MAX_S = 1.5
#: ... and a backlog slope (s of final latency per minute of call) not above this while more
#: than ``SLOPE_SIGNIFICANCE`` standard errors above zero. A transcriber that falls behind adds
#: (load - 1) x 60 s per minute, so a real backlog is far steeper; the margin keeps the noise
#: of a few finals in a short call from failing a step.
SLOPE_MAX_S_PER_MIN = 0.25
SLOPE_SIGNIFICANCE = 2.0
#: How often the transcriber's consumer lag is sampled during a step (seconds).
LAG_EVERY_S = 2.0

DECODES = "callscribe_transcribe_decode_seconds"
DECODES_BY_KIND = "callscribe_transcribe_decodes_total"
SUPPRESSED = "callscribe_transcribe_suppressed_total"
INTERIMS_SKIPPED = "callscribe_transcribe_interims_skipped_total"
CONSUMER_LAG = "callscribe_kafka_consumer_lag_records"
SHED_REASONS = ("interim_shed", "interim_superseded")
#: How often each call channel got an interim (the transcriber's scheduler stretches it).
INTERIM_INTERVAL = "callscribe_transcribe_interim_interval_seconds"


# ------------------------------------------------------------------------------ pure parts


def fit_slope(points: Iterable[tuple[Any, float, float]]) -> dict[str, float | int | None]:
    """Least-squares slope of y on x within groups (each group's means removed first, so
    calls that started late or run slower do not tilt it): ``slope``, its standard error
    ``stderr`` (``None`` without enough points to tell) and the point count ``n``."""
    groups: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for group, x, y in points:
        groups[group].append((x, y))
    centred: list[tuple[float, float]] = []
    for pairs in groups.values():
        mx = sum(x for x, _ in pairs) / len(pairs)
        my = sum(y for _, y in pairs) / len(pairs)
        centred += [(x - mx, y - my) for x, y in pairs]
    n = len(centred)
    sxx = sum(x * x for x, _ in centred)
    if n < 2 or sxx <= 0:
        return {"slope": None, "stderr": None, "n": n}
    slope = sum(x * y for x, y in centred) / sxx
    dof = n - len(groups) - 1
    if dof <= 0:
        return {"slope": slope, "stderr": None, "n": n}
    residual = sum((y - slope * x) ** 2 for x, y in centred)
    return {"slope": slope, "stderr": math.sqrt(residual / dof / sxx), "n": n}


def backlog_slope(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """Seconds of final latency (``delivery_s``) gained per minute of call, from where each
    final's speech ended (``voicedEndMs``), fitted within each call."""
    return fit_slope((row["call"], row["voicedEndMs"] / 60_000, row["delivery_s"])
                     for row in rows)


def lag_slope(samples: Sequence[tuple[float, float]]) -> float | None:
    """Records of consumer lag gained per minute, from (seconds, lag) samples."""
    return fit_slope(("lag", t / 60, lag) for t, lag in samples)["slope"]


def slope_is_backlog(fit: Mapping[str, float | int | None]) -> bool:
    """Above ``SLOPE_MAX_S_PER_MIN`` and significantly above zero (an estimate without a
    standard error — too few finals — does not fail a step)."""
    slope, stderr = fit["slope"], fit["stderr"]
    if slope is None or stderr is None:
        return False
    return slope > SLOPE_MAX_S_PER_MIN and slope > SLOPE_SIGNIFICANCE * stderr


def failures(final_p95: float | None, committed_p50: float | None,
             slope: Mapping[str, float | int | None]) -> list[str]:
    """Why a step fails; empty when it passes."""
    reasons = []
    if final_p95 is None:
        reasons.append("no final reached a client")
    elif final_p95 > FINAL_P95_MAX_S:
        reasons.append(f"final p95 {final_p95:.2f} s > {FINAL_P95_MAX_S} s")
    if committed_p50 is None:
        reasons.append("no word was committed right")
    elif committed_p50 > COMMITTED_P50_MAX_S:
        reasons.append(f"committed-word p50 {committed_p50:.2f} s > {COMMITTED_P50_MAX_S} s")
    if slope_is_backlog(slope):
        reasons.append(f"backlog grows {slope['slope']:.2f} s/min (> {SLOPE_MAX_S_PER_MIN}, "
                       f"stderr {slope['stderr']:.2f})")
    return reasons


def capacity(steps: Sequence[Mapping[str, Any]]) -> int:
    """The largest N of the passing steps before the first failure (0 if the first failed)."""
    best = 0
    for step in steps:
        if not step["passed"]:
            break
        best = max(best, step["calls"])
    return best


def channel_hypotheses(received: Sequence[tuple[float, Mapping[str, Any]]]) -> dict[int, str]:
    """Per channel, the final transcripts a liveCalls client received (one per id, the last
    if repeated), joined in ``offset`` order."""
    finals: dict[Any, Mapping[str, Any]] = {}
    for _, message in received:
        if message.get("type") == "transcript" and message.get("role") in ROLES:
            finals[message.get("id") or (message["role"], message["offset"])] = message
    by_channel: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for message in finals.values():
        by_channel[ROLES.index(message["role"])].append(message)
    return {channel: " ".join(m["msg"] for m in sorted(ms, key=lambda m: m["offset"]))
            for channel, ms in by_channel.items()}


def channel_references(plan: CallPlan) -> dict[int, str]:
    """Per channel, the texts of the turns played on it, in order."""
    turns: dict[int, list[str]] = defaultdict(list)
    for turn in sorted(plan.turns, key=lambda t: t.start_s):
        turns[turn.channel].append(turn.text)
    return {channel: " ".join(texts) for channel, texts in turns.items()}


def calls_wer(calls: Iterable[tuple[CallPlan, Sequence[tuple[float, Mapping[str, Any]]]]],
              normalise: Callable[[str], str]) -> dict[str, Any]:
    """Corpus WER over every (call, channel) that had speech: ``bench.eval_wer.score`` of the
    normalised references and hypotheses. Words on a channel with no turn are not counted."""
    references, hypotheses = [], []
    for plan, received in calls:
        heard = channel_hypotheses(received)
        for channel, reference in sorted(channel_references(plan).items()):
            references.append(normalise(reference))
            hypotheses.append(normalise(heard.get(channel, "")))
    return score(references, hypotheses)


def samples_of(metrics: Mapping[str, float], name: str) -> list[tuple[str, dict[str, str]]]:
    """The keys of ``name``'s samples in a ``scrape`` result (``name`` or ``name{a=x,b=y}``),
    each with its labels."""
    out: list[tuple[str, dict[str, str]]] = []
    for key in metrics:
        if key == name:
            out.append((key, {}))
        elif key.startswith(name + "{") and key.endswith("}"):
            parts = key[len(name) + 1:-1].split(",")
            out.append((key, dict(part.split("=", 1) for part in parts if "=" in part)))
    return out


def labelled_deltas(before: Mapping[str, float], after: Mapping[str, float], name: str,
                    label: str) -> dict[str, float]:
    """``name``'s increase over a window by the value of ``label`` (``""`` for samples
    without it); empty when the transcriber does not export ``name``."""
    out: dict[str, float] = defaultdict(float)
    for key, labels in samples_of(after, name):
        out[labels.get(label, "")] += after[key] - before.get(key, 0.0)
    return dict(out)


def lag_total(metrics: Mapping[str, float], topic: str) -> float:
    """The transcriber's consumer lag summed over the partitions of ``topic``."""
    return sum(metrics[key] for key, labels in samples_of(metrics, CONSUMER_LAG)
               if labels.get("consumer") == "transcribe" and labels.get("topic") == topic)


def interims_shed(before: Mapping[str, float], after: Mapping[str, float],
                  ) -> dict[str, int | None]:
    """Interim decodes the transcriber dropped over a window: suppressed as shed or
    superseded, and skipped (``None`` when the transcriber does not count skips)."""
    suppressed = labelled_deltas(before, after, SUPPRESSED, "reason")
    skipped = labelled_deltas(before, after, INTERIMS_SKIPPED, "reason")
    out: dict[str, int | None] = {r: round(suppressed.get(r, 0.0)) for r in SHED_REASONS}
    out["interims_skipped"] = round(sum(skipped.values())) if skipped else None
    return out


def decode_rates(before: Mapping[str, float], after: Mapping[str, float],
                 wall_s: float) -> dict[str, float | None]:
    """Whisper decodes per second: ``all`` (the decode-time histogram's count), and ``final``,
    ``interim`` (and any other kind) from ``callscribe_transcribe_decodes_total{kind}``
    (``None`` where the transcriber does not export it)."""
    if wall_s <= 0:
        return {"all": None, "final": None, "interim": None}
    by_kind = labelled_deltas(before, after, DECODES_BY_KIND, "kind")
    rates: dict[str, float | None] = {"all": count_delta(dict(before), dict(after), DECODES)
                                      / wall_s, "final": None, "interim": None}
    if by_kind:  # exported: a kind without a sample yet has not been decoded
        rates.update({"final": 0.0, "interim": 0.0})
        rates.update({kind: n / wall_s for kind, n in by_kind.items()})
    return rates


# ------------------------------------------------------------------------------ measuring


class LagSampler:
    """Scrapes the transcribers' consumer lag on one topic every ``LAG_EVERY_S``."""

    def __init__(self, stack: BenchStack, topic: str) -> None:
        self._stack, self._topic = stack, topic
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-lag-sampler")

    async def _run(self) -> None:
        started = time.monotonic()
        while True:
            try:
                metrics = await asyncio.to_thread(self._stack.scrape_transcribers)
            except OSError as exc:  # a missed sample is not worth failing the step
                log.warning("could not scrape the transcribers: %s", exc)
            else:
                self.samples.append((time.monotonic() - started,
                                     lag_total(metrics, self._topic)))
            await asyncio.sleep(LAG_EVERY_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def split_finals(rows: Sequence[Mapping[str, Any]],
                 ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Finals that end a turn (closed by the speaker's silence), and finals closed inside one
    (a committed sentence closed while the speaker goes on, or a cut at the longest
    utterance): those are the ones whose call channel has a final starting exactly where they
    end. A final closed inside a turn is measured from its last word's end like any other,
    but its words were committed in interims before it (``word_committed_s``)."""
    starts = {(r["call"], r["channel"], r["audioStartMs"]) for r in rows}
    inside = [r for r in rows if (r["call"], r["channel"], r["audioEndMs"]) in starts]
    ids = {id(r) for r in inside}
    return [r for r in rows if id(r) not in ids], inside


def step_result(calls: int, c: Collected, lag: Sequence[tuple[float, float]],
                normalise: Callable[[str], str]) -> dict[str, Any]:
    """One row of the capacity table, and what it was computed from."""
    before, after, wall = c.metrics_before, c.metrics_after, c.meter.wall_s
    final = summary([r["delivery_s"] for r in c.rows])
    turn_end, inside = split_finals(c.rows)
    committed = summary([w.committed_s for w in c.words])
    seen = summary([w.seen_s for w in c.words])
    slope = backlog_slope(c.rows)
    reasons = failures(final["p95"], committed["p50"], slope)
    return {
        "calls": calls, "passed": not reasons, "failures": reasons,
        "final_s": final, "word_committed_s": committed, "word_seen_s": seen,
        "final_turn_end_s": summary([r["delivery_s"] for r in turn_end]),
        "final_in_turn_s": summary([r["delivery_s"] for r in inside]),
        "decodes_per_s": decode_rates(before, after, wall),
        "interims_shed": interims_shed(before, after),
        "interim_interval_mean_s": metric_delta(before, after, INTERIM_INTERVAL),
        "cpu_percent_of_one_core": {**c.meter.percent, "wall_s": wall},
        "backlog": {"slope_s_per_min": slope["slope"], "stderr_s_per_min": slope["stderr"],
                    "finals": slope["n"], "lag_records_per_min": lag_slope(lag),
                    "lag_max_records": max((v for _, v in lag), default=None),
                    "lag_samples": [(round(t, 1), v) for t, v in lag]},
        "wer": calls_wer(((run.plan, run.received) for run in c.runs), normalise),
        "counts": {"finals": len(c.rows), "unjoined": len(c.unjoined), "words": len(c.words),
                   "turns": sum(len(p.turns) for p in c.plans),
                   "audio_s": sum(p.duration_s for p in c.plans)},
        "host": {"loadavg_1m_before": c.load_before, "loadavg_1m_after": c.load_after},
        "transcriber": transcriber_stats(before, after),
        "calls_played": [p.to_json() for p in c.plans],
        "transcripts": c.rows,
    }


async def run_step(args: argparse.Namespace, stack: BenchStack, corpus: Corpus, tmp: Path,
                   calls: int, cache: AlignCache,
                   normalise: Callable[[str], str]) -> dict[str, Any]:
    out_dir = tmp / f"step-{calls}"
    out_dir.mkdir()
    plans = build_calls(corpus, count=calls, seconds=args.seconds, seed=args.seed + calls,
                        out_dir=out_dir, prefix=f"cap{calls}-{secrets.token_hex(2)}",
                        continuous=args.continuous)
    aligned = await asyncio.to_thread(align, corpus, plans, model_path=args.align_model,
                                      cpu_threads=args.cpu_threads, cache=cache)
    sampler = LagSampler(stack, stack.topics.audio)
    sampler.start()
    try:
        collected = await collect(stack, plans, aligned, stagger_s=args.stagger,
                                  seed=args.seed + calls, interim=not args.unwatched)
    except TimeoutError:
        return {"calls": calls, "passed": False,
                "failures": ["the calls did not all end in time (transcriber overloaded)"]}
    finally:
        await sampler.stop()
    return step_result(calls, collected, sampler.samples, normalise)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    corpus = Corpus(tel8k=args.tel8k, max_turn_s=args.max_turn, speech_dir=args.speech)
    normalise: Callable[[str], str] = EnglishTextNormalizer()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / f"logs-{stamp}"
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    steps: list[dict[str, Any]] = []
    cache: AlignCache = {}
    with tempfile.TemporaryDirectory(prefix="callscribe-capacity-") as tmp:
        async with running_stack(log_dir, cpu_threads=args.cpu_threads,
                                 transcribers=args.transcribers) as stack:
            if not args.no_warmup:
                await warm_up(stack, corpus, Path(tmp), f"cap-{secrets.token_hex(2)}")
            for calls in args.steps:
                step = await run_step(args, stack, corpus, Path(tmp), calls, cache, normalise)
                steps.append(step)
                print(render_row(step), flush=True)
                if not step["passed"] and not args.keep_going:
                    break
                await asyncio.sleep(args.settle)
    return {"timestamp": stamp, "args": vars(args), "capacity": capacity(steps),
            "thresholds": {"final_p95_max_s": FINAL_P95_MAX_S,
                           "committed_p50_max_s": COMMITTED_P50_MAX_S,
                           "slope_max_s_per_min": SLOPE_MAX_S_PER_MIN,
                           "slope_significance_stderr": SLOPE_SIGNIFICANCE},
            "host": {"cpus": os.cpu_count()},
            "transcriber": {"device": os.environ.get("CALLSCRIBE_DEVICE", "cpu"),
                            "model": os.environ.get("CALLSCRIBE_WHISPER_MODEL", "tiny.en"),
                            "env": {k: v for k, v in sorted(os.environ.items())
                                    if k.startswith("CALLSCRIBE_")}},
            "steps": steps}


# ------------------------------------------------------------------------------ output


HEADER = (f"{'N':>3} {'final p50/p95':>13} {'end/in p95':>10} {'commit p50/p95':>15} "
          f"{'seen p50/p95':>13} {'dec/s fin/int/all':>18} {'shed':>5} {'igap':>5} {'CPU%':>5} "
          f"{'slope s/min':>12} {'lag/min':>8} {'WER%':>5}  result")


def render_row(step: Mapping[str, Any]) -> str:
    if "final_s" not in step:
        return f"{step['calls']:>3}  FAIL: {'; '.join(step['failures'])}"
    rate = step["decodes_per_s"]
    rates = "/".join(_num(rate[k], 1) for k in ("final", "interim", "all"))
    shed = sum(v for v in step["interims_shed"].values() if v is not None)
    backlog = step["backlog"]
    slope = f"{_num(backlog['slope_s_per_min'], 2)}±{_num(backlog['stderr_s_per_min'], 2)}"
    wer = step["wer"]["wer"]
    split = "/".join(_num(step.get(k, {}).get("p95"), 2)
                     for k in ("final_turn_end_s", "final_in_turn_s"))
    return (f"{step['calls']:>3} {_pair(step['final_s']):>13} {split:>10} "
            f"{_pair(step['word_committed_s']):>15} {_pair(step['word_seen_s']):>13} "
            f"{rates:>18} {shed:>5d} {_num(step.get('interim_interval_mean_s'), 2):>5} "
            f"{step['cpu_percent_of_one_core'].get('transcriber', 0):>5.0f} {slope:>12} "
            f"{_num(backlog['lag_records_per_min'], 0):>8} "
            f"{_num(None if wer is None else 100 * wer, 1):>5}  "
            + ("pass" if step["passed"] else "FAIL: " + "; ".join(step["failures"])))


def render_table(result: Mapping[str, Any]) -> str:
    args = result["args"]
    audio = "8 kHz mu-law tel" if args["tel8k"] else "16 kHz"
    if args["continuous"]:
        audio += ", continuous 20-40 s turns"
    env = result["transcriber"]["env"]
    lines = [
        f"callscribe capacity: two-party calls x ~{args['seconds']:.0f} s, {audio}, real time; "
        f"whisper device={result['transcriber']['device']} cpu_threads={args['cpu_threads']} "
        f"x {args.get('transcribers', 1)} transcriber(s) on {os.cpu_count()} CPUs"
        + "".join(f"; {k}={v}" for k, v in env.items()),
        f"pass: final p95 <= {FINAL_P95_MAX_S} s, committed-word p50 <= {COMMITTED_P50_MAX_S} s, "
        f"backlog slope <= {SLOPE_MAX_S_PER_MIN} s/min (or within {SLOPE_SIGNIFICANCE:.0f} "
        "stderr of 0)",
        HEADER,
        *(render_row(step) for step in result["steps"]),
        f"capacity: {result['capacity']} concurrent call(s)",
    ]
    return "\n".join(lines)


def _pair(s: Mapping[str, Any]) -> str:
    return f"{_num(s['p50'], 2)}/{_num(s['p95'], 2)}"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ------------------------------------------------------------------------------ main


def parse_steps(text: str) -> list[int]:
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--steps {text!r}; expected call counts separated by commas, e.g. 1,2,4") from None
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError(f"--steps {text!r}; expected counts of at least 1")
    return steps


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=parse_steps, default=list(DEFAULT_STEPS),
                        help="concurrent calls per step (default 1,2,4,8,12,16,24,32)")
    speech.add_argument(parser)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="approximate length of each call (default 60)")
    parser.add_argument("--continuous", action="store_true",
                        help="long turns (20-40 s) of one speaker's utterances joined by "
                        "0.15-0.3 s pauses, shorter than the VAD's end-of-speech wait")
    parser.add_argument("--tel8k", action="store_true",
                        help="use the 8 kHz G.711 mu-law phone-channel copies, sent at 8 kHz")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="CALLSCRIBE_DEVICE of the transcriber (default: the environment's, "
                        "else cpu)")
    parser.add_argument("--model", default=None,
                        help="CALLSCRIBE_WHISPER_MODEL of the transcriber: a faster-whisper "
                        "model directory or name (default: the bundled tiny.en)")
    parser.add_argument("--align-model", default=None,
                        help="model that finds where each played word ends, on CPU "
                        "(default: the bundled tiny.en)")
    parser.add_argument("--cpu-threads", type=int, default=0,
                        help="CALLSCRIBE_CPU_THREADS of the transcriber (0 = all cores)")
    parser.add_argument("--transcribers", type=int, default=1,
                        help="transcriber processes sharing the consumer group (each with "
                        "--cpu-threads whisper threads; the bench's topics have "
                        "4 partitions, so at most 4 do work)")
    parser.add_argument("--seed", type=int, default=1, help="speaker/turn/gap choice seed")
    parser.add_argument("--stagger", type=float, default=5.0,
                        help="a step's calls start at random times within this many seconds")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="pause between steps, in seconds")
    parser.add_argument("--max-turn", type=float, default=10.0,
                        help="longest utterance used, in seconds (default 10)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the short warm-up call before the first step")
    parser.add_argument("--unwatched", action="store_true",
                        help="the liveCalls clients do not ask for interims and the transcriber "
                        "decodes interims only for watched calls (CALLSCRIBE_INTERIMS=watched): "
                        "what calls nobody watches live cost (committed-word latency is then "
                        "that of the finals)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every step even after one failed (to compare curves); "
                        "the capacity is still the last passing N before the first failure")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return args


def apply_transcriber_options(args: argparse.Namespace) -> None:
    """``--device`` and ``--model`` reach the transcriber (a child process) through the
    environment, as any other ``CALLSCRIBE_*`` setting does."""
    if args.device is not None:
        os.environ["CALLSCRIBE_DEVICE"] = args.device
    if args.unwatched:
        os.environ["CALLSCRIBE_INTERIMS"] = "watched"
    if args.model is not None:
        os.environ["CALLSCRIBE_WHISPER_MODEL"] = args.model
    if args.align_model is None:
        from workers.transcribe.asr import default_model_path

        args.align_model = default_model_path()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if (missing := speech.missing(args.speech, tel8k=args.tel8k)) is not None:
        return missing
    apply_transcriber_options(args)
    print(HEADER, flush=True)
    result = asyncio.run(main_async(args))
    shown = save_result("capacity", result)
    print()
    print(render_table(result))
    print(f"\nwrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
