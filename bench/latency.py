"""End-of-speech → liveCalls latency of callscribe under N concurrent real-time calls.

    .venv/bin/python -m bench.latency --calls 4 --seconds 40 [--tel8k] [--continuous]

Starts its own broker and workers (``bench.bench_stack``), plays N two-party calls built from the
recorded speech in ``../shared/eval/speech/`` (``bench.calls``) through the jambonz simulator in
real time, watches each on liveCalls (``interim=true``), and reads the transcripts topic to join
every final transcript (by ``id``) with its ``voicedEndMs`` and ``producedAtMs``.
``--continuous`` makes every turn 20-40 s of one speaker with no pause long enough for the VAD
to end the utterance (``bench.calls.lay_out``).

For each word the client received right (``bench.words``): end of the word in the audio → first
seen (in an interim or the final) and → committed (in the final, or in an interim's ``stable``
prefix, which never changes afterwards), the way streaming recognisers are compared.

For each final transcript:

* delivery  = client receipt - wall time the simulator sent the sample at ``voicedEndMs``
* produced  = ``producedAtMs`` - that same sent time (the pipeline: ingest, VAD, whisper)
* bridge    = client receipt - ``producedAtMs`` (Kafka hop + bridge fan-out)

Prints p50/p95/p99/max and writes everything to ``bench/results/latency-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer

from bench import speech
from bench.bench_stack import RESULTS, BenchStack, CpuMeter, running_stack, save_result
from bench.calls import CallPlan, Corpus, build_calls
from bench.words import AlignedWord, WordTiming, align, word_timings
from workers.bridge.client import messages, open_live_call
from workers.settings import TranscribeSettings
from workers.simulate.jambonz import SimulatedCall, simulate_jambonz
from workers.transcribe.asr import default_model_path

log = logging.getLogger("bench.latency")


# ------------------------------------------------------------------------------ collection


class TopicReader:
    """Reads the transcripts topic from the beginning (no group); final transcripts by ``id``
    and a count of every record type."""

    def __init__(self, bootstrap: str, topic: str, call_ids: set[str]) -> None:
        self._call_ids = call_ids
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                          auto_offset_reset="earliest", fetch_max_wait_ms=20)
        self.records: dict[str, dict[str, Any]] = {}
        self.seen_at: dict[str, float] = {}
        self.types: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="bench-topic-reader")

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.time()
            for batch in batches.values():
                for message in batch:
                    record = json.loads(message.value)
                    if record.get("callId") not in self._call_ids:
                        continue
                    kind = record.get("type", "")
                    self.types[kind] = self.types.get(kind, 0) + 1
                    if kind == "transcript":  # interims share the id of their final
                        self.records.setdefault(record["id"], record)
                        self.seen_at.setdefault(record["id"], now)
            if batches:
                self._arrived.set()

    async def wait_for(self, ids: set[str], timeout_s: float) -> None:
        """Until every id in ``ids`` was read, or ``timeout_s`` passed."""
        try:
            async with asyncio.timeout(timeout_s):
                while not ids <= self.records.keys():
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            return

    async def stop(self) -> None:
        if self._task is not None:
            if self._task.done() and self._task.exception() is not None:
                log.error("the transcripts reader failed", exc_info=self._task.exception())
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


@dataclass
class CallRun:
    plan: CallPlan
    sim: SimulatedCall | None = None
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


async def watch(stack: BenchStack, run: CallRun, wait_s: float, *, interim: bool = True,
                ) -> None:
    """Collect (receipt time, message) of one call on liveCalls until ``event:callEnd``."""
    token, _ = stack.issuer.mint(run.plan.call_id)
    ws = await open_live_call(stack.bridge_url, token, stack.api_key, interim=interim,
                              wait_s=wait_s)
    async for received_at, message in messages(ws):
        run.received.append((received_at, message))


async def play(stack: BenchStack, run: CallRun, *, delay_s: float, realtime: bool) -> None:
    await asyncio.sleep(delay_s)
    run.sim = await simulate_jambonz(stack.ingest_url, run.plan.wav, rate=run.plan.rate,
                                     mix="stereo", call_sid=run.plan.call_id, realtime=realtime)


async def run_calls(stack: BenchStack, plans: Sequence[CallPlan], *, stagger_s: float,
                    realtime: bool, seed: int, interim: bool = True) -> list[CallRun]:
    """Play every call concurrently (starts spread over ``stagger_s``) with one watcher each
    (``interim``: asking for interims)."""
    rng = random.Random(seed)
    runs = [CallRun(plan) for plan in plans]
    longest = max(plan.duration_s for plan in plans)
    watchers = [asyncio.create_task(watch(stack, run, wait_s=stagger_s + 60, interim=interim))
                for run in runs]
    players = [asyncio.create_task(play(stack, run, delay_s=rng.uniform(0, stagger_s),
                                        realtime=realtime)) for run in runs]
    async with asyncio.timeout(stagger_s + longest + 180):
        await asyncio.gather(*players)
        await asyncio.gather(*watchers)
    return runs


# ------------------------------------------------------------------------------ analysis


def join(runs: Sequence[CallRun], reader: TopicReader,
         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per final transcript a client received; and those that could not be joined."""
    rows: list[dict[str, Any]] = []
    unjoined: list[dict[str, Any]] = []
    for run in runs:
        assert run.sim is not None
        for received_at, message in run.received:
            if message.get("type") != "transcript":
                continue
            record = reader.records.get(message.get("id", ""))
            sent_at = (run.sim.wall_time_of(record["voicedEndMs"])
                       if record and "voicedEndMs" in record else None)
            if record is None or sent_at is None:
                unjoined.append({"call": run.plan.call_id, "message": message,
                                 "record": record, "receivedAt": received_at})
                continue
            produced_at = record["producedAtMs"] / 1000
            rows.append({
                "call": run.plan.call_id, "id": record["id"], "role": message["role"],
                "channel": record.get("channel"), "offset": message["offset"],
                "audioStartMs": record["audioStartMs"], "audioEndMs": record["audioEndMs"],
                "voicedEndMs": record["voicedEndMs"], "text": message["msg"],
                "delivery_s": received_at - sent_at, "produced_s": produced_at - sent_at,
                "bridge_s": received_at - produced_at,
                "topic_s": reader.seen_at[record["id"]] - produced_at,
            })
    return rows, unjoined


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    array = np.asarray(values)
    p50, p95, p99 = (float(np.percentile(array, q)) for q in (50, 95, 99))
    return {"p50": p50, "p95": p95, "p99": p99, "max": float(array.max()),
            "count": len(values)}


def count_delta(before: dict[str, float], after: dict[str, float], name: str) -> int:
    return round(after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0))


def metric_delta(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    """Mean of a Prometheus histogram over the measured window (``_sum``/``_count`` deltas)."""
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return total / count if count else None


TABLE_ROWS = (
    ("delivery", "end of speech -> liveCalls client"),
    ("produced", "end of speech -> transcript produced"),
    ("bridge", "produced -> liveCalls client"),
    ("topic", "produced -> visible on topic"),
)


WORD_ROWS = (
    ("word_seen", "end of word -> first seen (interim/final)"),
    ("word_committed", "end of word -> committed (stable/final)"),
)


def render_table(result: dict[str, Any]) -> str:
    args, stats, cpu = result["args"], result["latency_s"], result["cpu_percent_of_one_core"]
    rate = "8 kHz mu-law tel" if args["tel8k"] else "16 kHz"
    if args.get("continuous"):
        rate += " continuous turns"
    lines = [
        f"callscribe latency: {args['calls']} call(s) x ~{args['seconds']:.0f} s, {rate} stereo, "
        f"real time; whisper device={result['transcriber']['device']} "
        f"cpu_threads={args['cpu_threads']} on {os.cpu_count()} CPUs"
        + "".join(f"; {k}={v}" for k, v in result["transcriber"]["env"].items()),
        f"{'seconds':<40}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'count':>7}",
    ]
    for key, label in (*WORD_ROWS, *TABLE_ROWS):
        s = stats[key]
        cells = "".join(f"{s[q]:8.3f}" if s[q] is not None else f"{'-':>8}"
                        for q in ("p50", "p95", "p99", "max"))
        lines.append(f"{label:<40}{cells}{s['count']:7d}")
    t = result["transcriber"]
    counts = result["counts"]
    lines += [
        f"transcripts {counts['transcripts']} (turns played {counts['turns']}, unjoined "
        f"{counts['unjoined']}), audio {counts['audio_s']:.1f} s over {cpu['wall_s']:.1f} s",
        f"CPU (% of one core): transcriber {cpu.get('transcriber', 0):.1f}, "
        f"bench process (ingest+bridge+simulators+clients) {cpu.get('bench', 0):.1f}, "
        f"broker {cpu.get('broker', 0):.1f}; host load avg (1 min) "
        f"{result['host']['loadavg_1m_before']:.2f} before, "
        f"{result['host']['loadavg_1m_after']:.2f} after",
        f"transcriber: {t['decodes']} whisper decodes, mean {_fmt(t['decode_mean_s'])} s, "
        f"real-time factor {_fmt(t['rtf_mean'])}, queue wait {_fmt(t['queue_wait_mean_s'])} s, "
        f"last audio processed -> final produced {_fmt(t['ready_to_produced_mean_s'])} s",
        "transcripts topic records: " + ", ".join(
            f"{k} {v}" for k, v in sorted(result["transcripts_topic_records"].items())),
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# ------------------------------------------------------------------------------ main


async def warm_up(stack: BenchStack, corpus: Corpus, tmp: Path, prefix: str) -> None:
    """One short call, not real time: loads whisper's kernels and the bridge's path."""
    plans = build_calls(corpus, count=1, seconds=8, seed=0, out_dir=tmp, prefix=f"{prefix}-warm")
    await run_calls(stack, plans, stagger_s=0, realtime=False, seed=0)


@dataclass
class Collected:
    """What one batch of concurrent calls produced, joined: per final (``rows``), per word
    (``words``), CPU over the calls, the transcriber's metrics before and after, and the
    transcripts-topic reader (stopped; its records and counts stay)."""

    plans: list[CallPlan]
    runs: list[CallRun]
    reader: TopicReader
    rows: list[dict[str, Any]]
    unjoined: list[dict[str, Any]]
    words: list[WordTiming]
    meter: CpuMeter
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    load_before: float
    load_after: float


async def collect(stack: BenchStack, plans: list[CallPlan],
                  aligned: dict[tuple[str, int], list[AlignedWord]], *, stagger_s: float,
                  seed: int, interim: bool = True) -> Collected:
    """Play ``plans`` at once in real time (starts spread over ``stagger_s``), each watched on
    liveCalls, with a transcripts-topic reader and CPU meter of its own."""
    reader = TopicReader(stack.bootstrap, stack.topics.transcripts,
                         {plan.call_id for plan in plans})
    await reader.start()
    meter = CpuMeter({"transcriber": stack.transcriber_pids, "bench": "self",
                      "broker": stack.broker_pid})
    metrics_before = stack.scrape_transcribers()
    load_before = os.getloadavg()[0]
    meter.start()
    try:
        runs = await run_calls(stack, plans, stagger_s=stagger_s, realtime=True, seed=seed,
                               interim=interim)
        meter.stop()
        metrics_after = stack.scrape_transcribers()
        client_ids = {m["id"] for run in runs for _, m in run.received
                      if m.get("type") == "transcript"}
        await reader.wait_for(client_ids, timeout_s=15)
    finally:
        await reader.stop()
    rows, unjoined = join(runs, reader)
    words = [w for run in runs if run.sim is not None
             for w in word_timings(run.plan.call_id, run.plan, run.received, reader.records,
                                   aligned, run.sim.wall_time_of)]
    return Collected(plans=list(plans), runs=runs, reader=reader, rows=rows,
                     unjoined=unjoined, words=words, meter=meter,
                     metrics_before=metrics_before, metrics_after=metrics_after,
                     load_before=load_before, load_after=os.getloadavg()[0])


def transcriber_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The transcriber's setting and its metrics over a window (deltas of two scrapes)."""
    return {
        "device": os.environ.get("CALLSCRIBE_DEVICE", "cpu"),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("CALLSCRIBE_")},
        "decodes": count_delta(before, after, "callscribe_transcribe_decode_seconds"),
        "decode_mean_s": metric_delta(before, after, "callscribe_transcribe_decode_seconds"),
        "rtf_mean": metric_delta(before, after, "callscribe_transcribe_real_time_factor"),
        "queue_wait_mean_s": metric_delta(before, after,
                                          "callscribe_transcribe_queue_wait_seconds"),
        "ready_to_produced_mean_s": metric_delta(
            before, after, "callscribe_transcribe_eou_to_produced_seconds"),
    }


async def measure(args: argparse.Namespace, stack: BenchStack, corpus: Corpus,
                  tmp: Path) -> dict[str, Any]:
    prefix = f"bench-{secrets.token_hex(2)}"
    if not args.no_warmup:
        await warm_up(stack, corpus, tmp, prefix)
    plans = build_calls(corpus, count=args.calls, seconds=args.seconds, seed=args.seed,
                        out_dir=tmp, prefix=prefix, continuous=args.continuous)
    # Where each played word ends: the same model with word timestamps, offline, before the
    # calls start (the stack is idle meanwhile).
    settings = TranscribeSettings()
    aligned = await asyncio.to_thread(
        align, corpus, plans, model_path=settings.whisper_model or default_model_path(),
        cpu_threads=args.cpu_threads)
    c = await collect(stack, plans, aligned, stagger_s=args.stagger, seed=args.seed)
    rows, words = c.rows, c.words
    return {
        "args": vars(args),
        "latency_s": {**{key: summary([r[f"{key}_s"] for r in rows]) for key, _ in TABLE_ROWS},
                      "word_seen": summary([w.seen_s for w in words]),
                      "word_committed": summary([w.committed_s for w in words])},
        "words": [{"call": w.call, "id": w.id, "word": w.token, "seen_s": round(w.seen_s, 3),
                   "committed_s": round(w.committed_s, 3)} for w in words],
        "cpu_percent_of_one_core": {**c.meter.percent, "wall_s": c.meter.wall_s},
        "host": {"cpus": os.cpu_count(), "loadavg_1m_before": c.load_before,
                 "loadavg_1m_after": c.load_after},
        "counts": {"transcripts": len(rows), "unjoined": len(c.unjoined),
                   "turns": sum(len(p.turns) for p in plans),
                   "audio_s": sum(p.duration_s for p in plans)},
        "transcriber": transcriber_stats(c.metrics_before, c.metrics_after),
        "calls": [p.to_json() for p in plans],
        "transcripts": rows,
        "unjoined": c.unjoined,
        "transcripts_topic_records": c.reader.types,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    corpus = Corpus(tel8k=args.tel8k, max_turn_s=args.max_turn, speech_dir=args.speech)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / f"logs-{stamp}"
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="callscribe-bench-") as tmp:
        async with running_stack(log_dir, cpu_threads=args.cpu_threads) as st:
            result = await measure(args, st, corpus, Path(tmp))
    result["timestamp"] = stamp
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1, help="concurrent calls (default 1)")
    speech.add_argument(parser)
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="approximate length of each call (default 40)")
    parser.add_argument("--tel8k", action="store_true",
                        help="use the 8 kHz G.711 mu-law phone-channel copies, sent at 8 kHz")
    parser.add_argument("--seed", type=int, default=1, help="speaker/turn/gap choice seed")
    parser.add_argument("--stagger", type=float, default=2.0,
                        help="calls start at random times within this many seconds")
    parser.add_argument("--continuous", action="store_true",
                        help="long turns (20-40 s) of one speaker's utterances joined by "
                        "0.15-0.3 s pauses, shorter than the VAD's end-of-speech wait")
    parser.add_argument("--max-turn", type=float, default=10.0,
                        help="longest utterance used as one turn, in seconds (default 10)")
    parser.add_argument("--cpu-threads", type=int, default=0,
                        help="CALLSCRIBE_CPU_THREADS of the transcriber (0 = all cores)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the short warm-up call before measuring")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.seconds <= 0:
        parser.error("--calls must be at least 1 and --seconds positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if (missing := speech.missing(args.speech, tel8k=args.tel8k)) is not None:
        return missing
    result = asyncio.run(main_async(args))
    shown = save_result("latency", result)
    print(render_table(result))
    print(f"\nwrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
