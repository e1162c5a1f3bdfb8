"""The soak: ``python -m bench.faults --soak 30m`` (``2m`` to try it; ``s``, ``m``, ``h``).

On the fault bench's stack (``bench.procs``: the broker and every worker its own process),
``--calls`` call slots (default 4) each play calls back to back, in real time, through the
provider simulators in turn (jambonz, Twilio, Plivo), each call with a liveCalls client
(``bench.watcher``), until ``--soak`` has passed (the calls then running finish). Every
``--sample-every`` seconds (10) it samples, for every worker process and the broker: resident
memory and open file descriptors (``bench.usage``: psutil, else ``/proc``), CPU seconds; and the
transcriber group's consumer lag on the audio topic: committed (``GroupLag``, what Kafka's tools
show) and read (the transcribers' own gauge, summed).
Afterwards: the final latency (from the end of the utterance's speech, i.e. the call's start
on the wall clock plus the final's ``voicedEndMs``, to the client's receipt) per sample window,
and the fault ledger (``bench.ledger``) over every call of the soak.

The verdict (``bench.usage``), after a warm-up of the first 20 % of the soak: every worker's
RSS grew by at most 10 %; the lag has no significant upward slope (more than
``LAG_TOLERANCE_PER_MIN`` records a minute); no worker's descriptors have one (more than
``FDS_TOLERANCE_PER_MIN``). The broker is reported, not judged: Tansu with memory storage
keeps every record it was sent, so it grows with the audio by design.

Before the soak, unless ``--per-call ''``: memory per open call. After one warm-up call, for
each count in ``--per-call`` (default ``0,4,8``) that many calls are started at once and every
process's RSS is sampled (the median of three) when they are 70 % through; the MB per call is
the slope over the counts. The warm-up plays two calls at a time until every transcriber has
decoded once (its model's buffers are allocated at the first decode, tens of MB that would
otherwise count as the first calls'). That phase comes first so that the soak's own calls
have not yet grown the processes' pools.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bench.bench_stack import scrape
from bench.capacity import DECODES, lag_total
from bench.latency import summary
from bench.ledger import ledger
from bench.playing import PROVIDERS, CallRun, evidence, play
from bench.usage import MB, per_call_mb, rss_verdict, slope_verdict, usage
from bench.watcher import Watcher
from workers.kafka import new_consumer, partitions_of

if TYPE_CHECKING:  # bench.faults runs the soak
    from bench.faults import Bench

log = logging.getLogger("bench.soak")

#: Records of lag a minute that count as growth (the audio topic carries about 20 records a
#: second per stereo call; the lag of a keeping-up group moves by hundreds between samples).
LAG_TOLERANCE_PER_MIN = 30.0
#: Descriptors a minute that count as a leak.
FDS_TOLERANCE_PER_MIN = 0.5
#: At most this many rounds of two warm-up calls before the per-call steps.
WARMUP_ROUNDS = 4
#: When, in a call, the per-call step samples memory.
PER_CALL_AT = 0.7


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``2m``, ``1.5h`` → seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip().lower()
    factor = units.get(text[-1:], None)
    number = text[:-1] if factor is not None else text
    try:
        value = float(number) * (factor or 1.0)
    except ValueError:
        raise ValueError(f"duration {text!r}: expected a number with s, m or h, "
                         "like 90s, 2m, 1h") from None
    if value <= 0:
        raise ValueError(f"duration {text!r}: must be positive")
    return value


def parse_counts(text: str) -> list[int]:
    """``0,4,8`` → ``[0, 4, 8]``; ``''`` → ``[]``."""
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"call counts {text!r}: expected numbers like 0,4,8") from None


# ------------------------------------------------------------------------------ sampling


def processes(bench: Bench) -> dict[str, int]:
    """Every running worker's pid by name, and the broker's."""
    found = {w.name: w.pid for w in bench.stack.workers if w.running and w.pid is not None}
    if bench.stack.broker_pid is not None:
        found["broker"] = bench.stack.broker_pid
    return found


def sample_usage(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, pid in pids.items():
        try:
            u = usage(pid)
        except ProcessLookupError:
            continue
        out[name] = {"rss": u.rss, "fds": u.fds, "cpuS": round(u.cpu_s, 2)}
    return out


def transcriber_metrics(bench: Bench) -> dict[str, dict[str, float]]:
    """Each running transcriber's metrics (one that does not answer is left out)."""
    out: dict[str, dict[str, float]] = {}
    for worker in bench.stack.of("transcribe"):
        try:
            out[worker.name] = scrape(f"{worker.http}/metrics")
        except OSError as exc:
            log.warning("could not scrape %s: %s", worker.name, exc)
    return out


def read_lag(bench: Bench) -> float | None:
    """Records on the audio topic after the last one the transcribers read (their own gauge,
    summed; ``None`` if one did not answer)."""
    scraped = transcriber_metrics(bench)
    if len(scraped) < len(bench.stack.of("transcribe")):
        return None
    return sum(lag_total(m, bench.stack.topics.audio) for m in scraped.values())


class GroupLag:
    """The transcriber group's lag as Kafka tools show it: end offset minus the committed
    offset, summed over the audio topic's partitions (a consumer of that group id that never
    joins it: it only fetches the group's offsets). Audio is committed only once its
    utterance's final is produced, so it moves with the utterances open; it must not grow."""

    def __init__(self, bench: Bench) -> None:
        stack = bench.stack
        self._topic = stack.topics.audio
        self._consumer = new_consumer(stack.bootstrap, group_id=f"{stack.topics.prefix}-transcribe",
                                      enable_auto_commit=False)
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self._consumer.start()
        found = await partitions_of(self._consumer, self._topic)
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(found)]

    async def lag(self) -> float | None:
        try:
            ends = await self._consumer.end_offsets(self._partitions)
            committed = [await self._consumer.committed(tp) for tp in self._partitions]
        except KafkaError as exc:
            log.warning("could not read the group's offsets: %s", exc)
            return None
        return float(sum(end - (c or 0) for end, c in zip(ends.values(), committed, strict=True)))

    async def stop(self) -> None:
        await self._consumer.stop()


class Sampler:
    """Every ``every_s``: usage of every process, the lag, and the calls open."""

    def __init__(self, bench: Bench, every_s: float, open_calls: Callable[[], int],
                 group: GroupLag) -> None:
        self._bench, self._every, self._open, self._group = bench, every_s, open_calls, group
        self.samples: list[dict[str, Any]] = []
        self.origin = time.time()

    async def run(self, done: asyncio.Event) -> None:
        while True:
            await self.take()
            try:
                await asyncio.wait_for(done.wait(), self._every)
            except TimeoutError:
                continue
            await self.take()
            return

    async def take(self) -> None:
        pids = processes(self._bench)
        used = await asyncio.to_thread(sample_usage, pids)
        read = await asyncio.to_thread(read_lag, self._bench)
        lag = await self._group.lag()
        self.samples.append({"t": round(time.time() - self.origin, 1), "calls": self._open(),
                             "lag": lag, "readLag": read, "workers": used})


# ------------------------------------------------------------------------------ calls


def new_call(bench: Bench, plan_index: int, call_id: str, slot: int) -> CallRun:
    plan = dataclasses.replace(bench.plans[plan_index % len(bench.plans)], call_id=call_id)
    stack = bench.stack
    watcher = Watcher(call_id, stack.bridge_urls(), stack.issuer.mint(call_id)[0],
                      stack.api_key, first_bridge=slot)
    return CallRun(plan=plan, provider=PROVIDERS[plan_index % len(PROVIDERS)], watcher=watcher)


async def call_slot(bench: Bench, slot: int, until: float, delay_s: float,
                    runs: list[CallRun], watching: list[asyncio.Task[None]],
                    playing: set[int]) -> None:
    """Calls one after another on ``slot`` until ``until`` (wall clock)."""
    await asyncio.sleep(delay_s)
    k = 0
    while time.time() < until:
        run = new_call(bench, slot + k, f"soak-{slot}-{k}-{int(time.time())}", slot)
        runs.append(run)
        watching.append(asyncio.create_task(run.watcher.run(run.plan.duration_s + 90)))
        playing.add(slot)
        try:
            await play(bench.stack, run, slot, 0.0)
        finally:
            playing.discard(slot)
        if run.error:
            await asyncio.sleep(1.0)  # do not spin on a refused connection
        k += 1


async def per_call_memory(bench: Bench, counts: Sequence[int]) -> dict[str, Any]:
    """RSS of every process with each of ``counts`` calls open (see the module docstring)."""
    async def calls(n: int, tag: str, sample_at: float | None) -> list[dict[str, Any]]:
        runs = [new_call(bench, i, f"percall-{tag}-{i}-{int(time.time())}", i)
                for i in range(n)]
        watching = [asyncio.create_task(r.watcher.run(r.plan.duration_s + 90)) for r in runs]
        players = [asyncio.create_task(play(bench.stack, r, i, 0.0))
                   for i, r in enumerate(runs)]
        taken: list[dict[str, Any]] = []
        if sample_at is not None:
            await asyncio.sleep(sample_at)
            for _ in range(3):
                taken.append(await asyncio.to_thread(sample_usage, processes(bench)))
                await asyncio.sleep(1.0)
        await asyncio.gather(*players)
        await asyncio.gather(*watching)
        return taken

    for attempt in range(WARMUP_ROUNDS):  # until every transcriber has decoded (model arenas)
        await calls(2, f"warmup{attempt}", None)
        scraped = await asyncio.to_thread(transcriber_metrics, bench)
        if all(m.get(f"{DECODES}_count", 0.0) > 0 for m in scraped.values()):
            break
    shortest = min(p.duration_s for p in bench.plans)
    steps: list[dict[str, Any]] = []
    for n in counts:
        taken = await calls(n, str(n), shortest * PER_CALL_AT)
        rss = {name: statistics.median(t[name]["rss"] for t in taken if name in t)
               for name in sorted({name for t in taken for name in t})}
        steps.append({"calls": n, "rss": rss})
        print(f"   per-call: {n} calls open: "
              + ", ".join(f"{k} {v / MB:.0f} MB" for k, v in rss.items()), flush=True)
    names = sorted({name for s in steps for name in s["rss"]})
    slopes = {name: per_call_mb([(s["calls"], s["rss"][name]) for s in steps
                                 if name in s["rss"]]) for name in names}
    return {"steps": steps, "mbPerCall": slopes}


# ------------------------------------------------------------------------------ analysis


def final_latencies(bench: Bench, runs: Sequence[CallRun]) -> list[tuple[float, float]]:
    """(receipt time, seconds from the end of speech) of every final a client received."""
    out: list[tuple[float, float]] = []
    for run in runs:
        produced = {r.get("id"): r for r in bench.tap.produced.get(run.plan.call_id, [])
                    if r.get("type") == "transcript"}
        for received in run.watcher.finals():
            record = produced.get(received.message.get("id"))
            if record is None or "voicedEndMs" not in record:
                continue
            spoken_end = run.started_at + record["voicedEndMs"] / 1000
            out.append((received.at, received.at - spoken_end))
    return out


def latency_windows(samples: list[dict[str, Any]], origin: float,
                    latencies: Sequence[tuple[float, float]]) -> None:
    """Adds ``latency`` (p50/p95/count) of the finals received since the previous sample to
    each sample."""
    previous = float("-inf")
    for s in samples:
        at = origin + s["t"]
        window = [lat for when, lat in latencies if previous < when <= at]
        s["latency"] = summary(window)
        previous = at


def verdicts(samples: Sequence[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    names = sorted({n for s in samples for n in s["workers"]})
    workers: dict[str, Any] = {}
    for name in names:
        series = [(s["t"], s["workers"][name]) for s in samples if name in s["workers"]]
        rss = rss_verdict([(t, w["rss"]) for t, w in series], duration_s)
        fds = slope_verdict([(t, w["fds"]) for t, w in series], duration_s,
                            FDS_TOLERANCE_PER_MIN)
        judged = name != "broker"
        workers[name] = {"rss": rss, "fds": fds, "judged": judged,
                         "ok": (rss["ok"] is not False and fds["ok"] is not False)
                         if judged else None}
    lag = slope_verdict([(s["t"], s["lag"]) for s in samples if s["lag"] is not None],
                        duration_s, LAG_TOLERANCE_PER_MIN)
    judged_ok = [w["ok"] for w in workers.values() if w["judged"]]
    ok = all(judged_ok) and lag["ok"] is not False
    return {"workers": workers, "lag": lag, "ok": ok}


async def run_soak(bench: Bench, duration_s: float, every_s: float,
                   per_call: Sequence[int]) -> dict[str, Any]:
    """The per-call phase, then the soak; the figures (see the module docstring)."""
    out: dict[str, Any] = {"durationS": duration_s, "sampleEveryS": every_s,
                           "calls": bench.args.calls}
    if per_call:
        print(f"-- per-call memory: {', '.join(map(str, per_call))} calls", flush=True)
        out["perCall"] = await per_call_memory(bench, per_call)
    print(f"-- soak: {bench.args.calls} calls for {duration_s:.0f} s", flush=True)
    runs: list[CallRun] = []
    watching: list[asyncio.Task[None]] = []
    playing: set[int] = set()
    group = GroupLag(bench)
    await group.start()
    sampler = Sampler(bench, every_s, lambda: len(playing), group)
    done = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(done))
    until = sampler.origin + duration_s
    spread = min(p.duration_s for p in bench.plans) / max(1, bench.args.calls)
    try:
        await asyncio.gather(*(call_slot(bench, i, until, i * spread, runs, watching, playing)
                               for i in range(bench.args.calls)))
        await asyncio.gather(*watching)
        done.set()
        await sampling
    finally:
        sampling.cancel()
        await group.stop()
    if not await bench.tap.caught_up():
        log.warning("the topic tap did not catch up")
    elapsed = time.time() - sampler.origin
    samples = sampler.samples
    latencies = final_latencies(bench, runs)
    latency_windows(samples, sampler.origin, latencies)
    figures = ledger(evidence(bench.tap, r) for r in runs)
    out.update({
        "elapsedS": round(elapsed, 1), "callsPlayed": len(runs),
        "callErrors": [r.error for r in runs if r.error],
        "latencyS": summary([lat for _, lat in latencies]),
        "latencyAfterWarmupS": summary([lat for at, lat in latencies
                                        if at - sampler.origin >= 0.2 * elapsed]),
        "ledger": {k: v for k, v in vars(figures).items() if k != "details"},
        "samples": samples, "verdict": verdicts(samples, elapsed)})
    return out


# ------------------------------------------------------------------------------ report


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _verdict(ok: bool | None) -> str:
    return {True: "flat", False: "GROWS", None: "too short"}[ok]


def render(soak: dict[str, Any]) -> str:
    samples = soak["samples"]
    names = sorted({n for s in samples for n in s["workers"]})
    lines = [f"soak: {soak['calls']} call slots, {soak['elapsedS']:.0f} s, "
             f"{soak['callsPlayed']} calls; RSS MB/fds per process", "",
             "| t s | calls | lag committed (read) | final p50 s | p95 s | "
             + " | ".join(names) + " |",
             "|" + "---|" * (5 + len(names))]
    for s in samples:
        cells = [f"{_mb(s['workers'][n]['rss'])}/{s['workers'][n]['fds']:.0f}"
                 if n in s["workers"] else "-" for n in names]
        lat = s.get("latency", {})
        lag = "-" if s["lag"] is None else f"{s['lag']:.0f}"
        if s.get("readLag") is not None:
            lag += f" ({s['readLag']:.0f})"
        lines.append(f"| {s['t']:.0f} | {s['calls']} | {lag} | {_s(lat.get('p50'))} | "
                     f"{_s(lat.get('p95'))} | " + " | ".join(cells) + " |")
    v = soak["verdict"]
    lines += ["", "| process | RSS after warm-up MB | max MB | growth | fds first → last | "
              "fds slope /min | verdict |", "|---|---|---|---|---|---|---|"]
    for name, w in v["workers"].items():
        rss, fds = w["rss"], w["fds"]
        growth = "-" if rss["growth"] is None else f"{100 * rss['growth']:+.1f} %"
        slope = "-" if fds["slope"] is None else f"{fds['slope']:+.2f}"
        verdict = _verdict(w["ok"]) if w["judged"] else "not judged (memory storage)"
        first = "-" if fds["first"] is None else f"{fds['first']:.0f} → {fds['last']:.0f}"
        lines.append(f"| {name} | {_mb(rss['start'])} | {_mb(rss['max'])} | {growth} | "
                     f"{first} | {slope} | {verdict} |")
    lag = v["lag"]
    lag_slope = "-" if lag["slope"] is None else f"{lag['slope']:+.1f} ± {lag['stderr'] or 0:.1f}"
    lat, late = soak["latencyS"], soak["latencyAfterWarmupS"]
    led = soak["ledger"]
    lines += ["", f"lag slope after warm-up: {lag_slope} records/min ({_verdict(lag['ok'])}); "
              f"final latency p50/p95/p99 {_s(lat['p50'])}/{_s(lat['p95'])}/{_s(lat['p99'])} s "
              f"(after warm-up {_s(late['p50'])}/{_s(late['p95'])}/{_s(late['p99'])} s, "
              f"{lat['count']} finals); ledger: {led['delivered']}/{led['utterances']} "
              f"utterances delivered, {led['missing']} missing, {led['dup_other_id']} dup other "
              f"id, {led['messages_missed']} msgs missed, {led['audio_samples_lost']} audio "
              f"samples lost; verdict: {'PASS' if v['ok'] else 'FAIL'}"]
    if soak.get("perCall"):
        per = soak["perCall"]
        counts = [s["calls"] for s in per["steps"]]
        lines += ["", "| process | " + " | ".join(f"{c} calls MB" for c in counts)
                  + " | MB per call |", "|" + "---|" * (2 + len(counts))]
        for name, slope in per["mbPerCall"].items():
            cells = [_mb(s["rss"].get(name)) for s in per["steps"]]
            lines.append(f"| {name} | " + " | ".join(cells) + " | "
                         + ("-" if slope is None else f"{slope:.2f}") + " |")
    return "\n".join(lines)


__all__ = ["parse_counts", "parse_duration", "render", "run_soak", "verdicts"]
