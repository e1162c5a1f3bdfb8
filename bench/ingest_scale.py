"""One ingest process, many provider streams: frame sent → audio record in Kafka, loss, CPU.

    python -m bench.ingest_scale --streams 1000 [--seconds 60] [--clients 2]
        [--tracks both|inbound] [--chunk-ms 100] [--partitions 8] [--warmup 5]

**The system**: the embedded Tansu broker and ONE ingest process (``python -m workers.cli
ingest``, ``bench.procs``); no transcriber: this bench reads the audio topic itself.

**The load**: ``--streams`` provider streams, jambonz, Twilio, Plivo and Telnyx in turn, from
``--clients`` load-generator processes (``bench.loadgen``: one clock per process, one 20 ms
frame per track per tick, 8 kHz, ``--tracks both`` by default: two channels per call as an
agent-assist deployment receives them). Every stream runs ``--seconds``, then stops and closes.

**Measured**, over the streams' time after ``--warmup`` seconds:

* latency of every audio record on the topic, from when the provider sent the frame that
  completed it (its last frame) to when this bench read it from Kafka ("readable": an upper
  bound of Kafka's acknowledgement, as the record is acknowledged before a consumer can fetch
  it); also from the record's oldest frame (adds the ingest's chunking, ``CALLSCRIBE_CHUNK_MS``,
  100 ms by default: a record holds 5 frames); and to the record's timestamp (set when the
  ingest handed it to its producer);
* the ingest's own ``callscribe_kafka_produce_seconds`` (producer → acknowledged) histogram;
* loss: samples sent minus samples on the topic per call and channel, ``seq`` gaps;
* the ingest's CPU (``bench.usage``) in % of one core, total and per stream; the load
  generators' CPU, and how late their ticks ran (a late tick delays frames: that is the
  client, not the ingest, and the latencies start at the actual send).

Writes ``bench/results/ingest-scale-<timestamp>.json`` and the ingest's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import pstats
import sys
import tempfile
import time
from array import array
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from bench.bench_stack import RESULTS, save_result, scrape
from bench.latency import summary
from bench.loadgen import PROVIDERS, TICK_S
from bench.procs import REPO, ProcessStack, Replicas
from bench.tap import read_to_end
from bench.usage import usage
from workers.kafka import new_consumer, partitions_of

log = logging.getLogger("bench.ingest_scale")

PRODUCE = "callscribe_kafka_produce_seconds"


@dataclass
class Channel:
    """The audio records of one call's channel, as read: when, where they end, their seq."""

    seen: array[float] = field(default_factory=lambda: array("d"))
    stamp: array[float] = field(default_factory=lambda: array("d"))
    start: array[int] = field(default_factory=lambda: array("q"))
    end: array[int] = field(default_factory=lambda: array("q"))
    seqs: array[int] = field(default_factory=lambda: array("q"))
    samples: int = 0


class AudioReader:
    """Reads the audio topic from the start, keeping only positions and times."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self.channels: dict[tuple[str, int], Channel] = defaultdict(Channel)
        self.records = 0
        self._consumer = new_consumer(bootstrap, group_id=None, enable_auto_commit=False,
                                      fetch_max_wait_ms=10, auto_offset_reset="earliest",
                                      max_partition_fetch_bytes=8 * 1024 * 1024)
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        found = await partitions_of(self._consumer, self._topic)
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(found)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._run(), name="ingest-scale-reader")

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=20000)
            now = time.time()
            for messages in batches.values():
                for m in messages:
                    headers = dict(m.headers or ())
                    channel = self.channels[(m.key.decode(), int(headers["channel"]))]
                    samples = len(m.value or b"") // 2
                    channel.seen.append(now)
                    channel.stamp.append(m.timestamp / 1000)
                    channel.start.append(channel.samples)
                    channel.samples += samples
                    channel.end.append(channel.samples)
                    channel.seqs.append(int(headers["seq"]))
                    self.records += 1

    async def caught_up(self, timeout_s: float = 60.0) -> bool:
        return await read_to_end(self._consumer, self._partitions, timeout_s, self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


# ------------------------------------------------------------------------------ analysis


def sent_times(client: dict[str, Any], stream: dict[str, Any]) -> np.ndarray[Any, Any]:
    """When each frame of ``stream`` went out (wall clock), from its client's ticks: frame k
    on tick ``startTick + k``, at the stream's place in that tick's order."""
    ticks = np.asarray(client["ticks"], dtype=float)
    place = (stream["order"] + 1) / max(1, client["live"])
    at = ticks[:, 0] + place * (ticks[:, 1] - ticks[:, 0])
    first = stream["startTick"]
    out: np.ndarray[Any, Any] = at[first:first + stream["frames"]]
    return out


def stream_figures(channel: Channel, sent: np.ndarray[Any, Any], spf: int,
                   after: float) -> dict[str, Any]:
    """Latencies of one channel's records whose last frame went out after ``after``."""
    end, start = np.asarray(channel.end), np.asarray(channel.start)
    seen, stamp = np.asarray(channel.seen), np.asarray(channel.stamp)
    if end.size == 0 or sent.size == 0:
        return {"last": [], "first": [], "stamp": []}
    last = np.minimum((end - 1) // spf, sent.size - 1)
    first = np.minimum(start // spf, sent.size - 1)
    keep = sent[last] >= after
    return {"last": (seen - sent[last])[keep].tolist(),
            "first": (seen - sent[first])[keep].tolist(),
            "stamp": (stamp - sent[last])[keep].tolist()}


def seq_gaps(seqs: Sequence[int]) -> int:
    unique = sorted(set(seqs))
    return (unique[-1] - unique[0] + 1 - len(unique)) if unique else 0


def analyse(clients: list[dict[str, Any]], reader: AudioReader, warmup_s: float,
            ) -> dict[str, Any]:
    last: list[float] = []
    first: list[float] = []
    stamp: list[float] = []
    lost = gaps = errors = 0
    per_provider: dict[str, list[float]] = defaultdict(list)
    for client in clients:
        ticks = client["ticks"]
        after = ticks[0][0] + warmup_s if ticks else 0.0
        for stream in client["streams"]:
            if stream["error"]:
                errors += 1
            if stream["order"] is None:
                continue
            sent = sent_times(client, stream)
            for ch in range(stream["channels"]):
                channel = reader.channels.get((stream["callId"], ch), Channel())
                lost += stream["frames"] * stream["spf"] - channel.samples
                gaps += seq_gaps(channel.seqs)
                figures = stream_figures(channel, sent, stream["spf"], after)
                last += figures["last"]
                first += figures["first"]
                stamp += figures["stamp"]
                per_provider[stream["provider"]] += figures["last"]
    return {"lastFrameToReadableS": summary(last), "firstFrameToReadableS": summary(first),
            "lastFrameToProducerS": summary(stamp),
            "byProvider": {p: summary(v) for p, v in per_provider.items()},
            "samplesLost": lost, "seqGaps": gaps, "streamErrors": errors}


def histogram_quantiles(before: dict[str, float], after: dict[str, float], name: str,
                        topic: str) -> dict[str, float | None]:
    """p50/p99 upper bucket bounds of a Prometheus histogram's increase (label ``topic``)."""
    buckets: list[tuple[float, float]] = []
    for key, value in after.items():
        if key.startswith(f"{name}_bucket{{") and f"topic={topic}" in key:
            le = key.split("le=", 1)[1].split(",", 1)[0].rstrip("}")
            buckets.append((math.inf if le == "+Inf" else float(le), value - before.get(key, 0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out: dict[str, float | None] = {"count": total}
    for q in (0.5, 0.99):
        out[f"p{round(q * 100)}"] = next((le for le, n in buckets if total and n >= q * total),
                                         None)
    return out


# ------------------------------------------------------------------------------ running


def stream_specs(args: argparse.Namespace) -> list[list[dict[str, str]]]:
    """The streams of each client: providers in turn, the clients dealt round robin."""
    tag = time.strftime("%H%M%S")
    streams = [{"callId": f"scale-{tag}-{i}", "provider": PROVIDERS[i % len(PROVIDERS)]}
               for i in range(args.streams)]
    return [streams[c::args.clients] for c in range(args.clients)]


async def run(args: argparse.Namespace, tmp: Path, log_dir: Path) -> dict[str, Any]:
    env = {"CALLSCRIBE_INGEST_MAX_CONNECTIONS_PER_ADDRESS": "0",
           "CALLSCRIBE_CHUNK_MS": str(args.chunk_ms)}
    replicas = Replicas(ingest=1, transcribe=0, assist=0, bridge=0)
    profile = log_dir / "ingest.prof"
    python_args = {"ingest": ("-m", "cProfile", "-o", str(profile))} if args.profile else None
    stack = ProcessStack(log_dir, replicas=replicas, partitions=args.partitions, env=env,
                         python_args=python_args)
    async with stack:
        ingest = stack.of("ingest")[0]
        assert ingest.pid is not None
        reader = AudioReader(stack.bootstrap, stack.topics.audio)
        await reader.start()
        ramp_s = 3 + args.streams / 150
        start_at = time.time() + ramp_s
        procs: list[tuple[asyncio.subprocess.Process, Path]] = []
        for c, streams in enumerate(stream_specs(args)):
            spec, out = tmp / f"spec-{c}.json", tmp / f"out-{c}.json"
            spec.write_text(json.dumps({"url": ingest.ws, "streams": streams,
                                        "startAt": start_at, "seconds": args.seconds,
                                        "tracks": args.tracks}))
            procs.append((await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.loadgen", str(spec), str(out), cwd=REPO), out))
        await asyncio.sleep(max(0.0, start_at + args.warmup - time.time()))
        metrics_before = await asyncio.to_thread(scrape, f"{ingest.http}/metrics")
        broker_pid = stack.broker_pid or os.getpid()
        cpu_before, wall_before = usage(ingest.pid).cpu_s, time.monotonic()
        others_before = (usage(broker_pid).cpu_s, usage(os.getpid()).cpu_s)
        await asyncio.sleep(max(1.0, args.seconds - args.warmup - 1))
        cpu_after, wall_after = usage(ingest.pid).cpu_s, time.monotonic()
        others_after = (usage(broker_pid).cpu_s, usage(os.getpid()).cpu_s)
        metrics_after = await asyncio.to_thread(scrape, f"{ingest.http}/metrics")
        rss = usage(ingest.pid).rss
        for proc, _ in procs:
            await asyncio.wait_for(proc.wait(), args.seconds + 300)
        await asyncio.sleep(1.0)  # the last records of the closed calls
        caught = await reader.caught_up()
        await reader.stop()
    clients = [json.loads(out.read_text()) for _, out in procs]
    figures = analyse(clients, reader, args.warmup)
    ingest_cpu = 100 * (cpu_after - cpu_before) / (wall_after - wall_before)
    tick_late = [b - (c["ticks"][0][0] + i * TICK_S) for c in clients
                 for i, (b, _) in enumerate(c["ticks"])]
    hot = profile_top(profile, 25) if args.profile and profile.exists() else None
    return {
        **figures, "readerCaughtUp": caught, "records": reader.records, "profile": hot,
        "ingestProduceS": histogram_quantiles(metrics_before, metrics_after, PRODUCE,
                                              stack.topics.audio),
        "ingestCpuPercent": round(ingest_cpu, 1),
        "ingestCpuPercentPerStream": round(ingest_cpu / args.streams, 3),
        "ingestRssMb": round(rss / 2**20, 1),
        "brokerCpuPercent": round(100 * (others_after[0] - others_before[0])
                                  / (wall_after - wall_before), 1),
        "readerCpuPercent": round(100 * (others_after[1] - others_before[1])
                                  / (wall_after - wall_before), 1),
        "loadavg1m": os.getloadavg()[0],
        "clientCpuPercent": [round(100 * c["cpuS"] / max(1e-9, c["ticks"][-1][1]
                                                         - c["ticks"][0][0]), 1)
                             for c in clients if c["ticks"]],
        "clientOpenS": [c["openedS"] for c in clients],
        "clientTickLateS": summary(tick_late),
        "streamsLive": sum(c["live"] for c in clients),
    }


def profile_top(path: Path, count: int) -> list[dict[str, Any]]:
    """The ``count`` functions of a cProfile dump with the most time spent in themselves."""
    stats = pstats.Stats(str(path))
    rows = [(func, tt, ct, nc) for func, (_, nc, tt, ct, _) in stats.stats.items()]  # type: ignore[attr-defined]  # pstats keeps them untyped
    rows.sort(key=lambda row: row[1], reverse=True)
    total = sum(row[1] for row in rows) or 1.0
    return [{"function": f"{Path(f[0]).name}:{f[1]}({f[2]})", "ownS": round(tt, 2),
             "ownShare": round(tt / total, 3), "cumS": round(ct, 2), "calls": nc}
            for f, tt, ct, nc in rows[:count]]


def render(result: dict[str, Any]) -> str:
    a, r = result["args"], result["result"]

    def ms(s: dict[str, Any], key: str) -> str:
        return "-" if s.get(key) is None else f"{1000 * s[key]:.0f}"

    last, first, stamp = (r["lastFrameToReadableS"], r["firstFrameToReadableS"],
                          r["lastFrameToProducerS"])
    produce = r["ingestProduceS"]
    late = r["clientTickLateS"]
    lines = [
        f"ingest at scale: {r['streamsLive']}/{a['streams']} streams live "
        f"({', '.join(PROVIDERS)} in turn, {a['tracks']} tracks, 20 ms frames, 8 kHz), "
        f"{a['seconds']:.0f} s, {a['clients']} load-generator processes, chunk "
        f"{a['chunk_ms']} ms, {a['partitions']} partitions", "",
        "| measure | p50 ms | p99 ms | max ms | records |", "|---|---|---|---|---|",
        f"| last frame sent → readable in Kafka | {ms(last, 'p50')} | {ms(last, 'p99')} | "
        f"{ms(last, 'max')} | {last['count']} |",
        f"| oldest frame of the record → readable | {ms(first, 'p50')} | {ms(first, 'p99')} | "
        f"{ms(first, 'max')} | {first['count']} |",
        f"| last frame sent → handed to the producer | {ms(stamp, 'p50')} | "
        f"{ms(stamp, 'p99')} | {ms(stamp, 'max')} | {stamp['count']} |",
        f"| ingest producer → acknowledged (its histogram, bucket bounds) | "
        f"{ms(produce, 'p50')} | {ms(produce, 'p99')} | - | {produce['count']:.0f} |",
    ]
    for provider, s in sorted(r["byProvider"].items()):
        lines.append(f"| … {provider}: last frame → readable | {ms(s, 'p50')} | "
                     f"{ms(s, 'p99')} | {ms(s, 'max')} | {s['count']} |")
    lines += ["", f"loss: {r['samplesLost']} samples, {r['seqGaps']} seq gaps, "
              f"{r['streamErrors']} stream errors; ingest CPU {r['ingestCpuPercent']:.0f} % of "
              f"a core ({r['ingestCpuPercentPerStream']:.3f} % per stream), RSS "
              f"{r['ingestRssMb']:.0f} MB; broker CPU {r.get('brokerCpuPercent', 0):.0f} %, "
              f"this bench's topic reader {r.get('readerCpuPercent', 0):.0f} %, "
              f"load average {r.get('loadavg1m', 0):.1f}; load generators CPU "
              f"{', '.join(f'{c:.0f} %' for c in r['clientCpuPercent'])}, ticks late p50/p99 "
              f"{ms(late, 'p50')}/{ms(late, 'p99')} ms, streams opened in "
              f"{', '.join(f'{s:.1f}' for s in r['clientOpenS'])} s"]
    if r.get("profile"):
        lines += ["", "ingest profile (cProfile, own time; it slows the ingest):", "",
                  "| function | own s | share | cumulative s | calls |", "|---|---|---|---|---|"]
        lines += [f"| {p['function']} | {p['ownS']} | {100 * p['ownShare']:.1f} % | "
                  f"{p['cumS']} | {p['calls']} |" for p in r["profile"]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=2,
                        help="load-generator processes (default 2)")
    parser.add_argument("--tracks", choices=("both", "inbound"), default="both")
    parser.add_argument("--chunk-ms", type=int, default=100,
                        help="CALLSCRIBE_CHUNK_MS of the ingest (default 100, its default)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--profile", action="store_true",
                        help="run the ingest under cProfile and print where its time went")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of the streams not measured (default 5)")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.clients < 1 or args.seconds <= args.warmup + 2:
        parser.error("--streams and --clients at least 1, --seconds > --warmup + 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / f"logs-ingest-scale-{stamp}"
    with tempfile.TemporaryDirectory(prefix="callscribe-scale-") as tmp:
        result = {"timestamp": stamp, "args": vars(args),
                  "result": asyncio.run(run(args, Path(tmp), log_dir))}
    shown = save_result("ingest-scale", result)
    print(render(result))
    print(f"\nwrote {shown}; the ingest's log in {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
