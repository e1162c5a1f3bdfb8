"""The fault bench: inject faults into the running system and count what clients lost.

    python -m bench.faults [--calls 3] [--seconds 40] [--scenario NAME ...] [--kills 3]
        [--pause 10] [--transcribers 2] [--bridges 2] [--ingest 1] [--idle-timeout 20]
        [--seed 1] [--speech DIR]
    python -m bench.faults --soak 30m [--calls 4] [--per-call 0,4,8] [--sample-every 10]

``--soak`` runs no scenario: it loops calls on the same stack for that long and samples every
process's memory, descriptors, the consumer lag and the final latency (``bench.soak``).

**The system** runs as a deployment runs it, every part its own process (``bench.procs``):
the embedded Tansu broker, ``--ingest`` ingest replicas, ``--transcribers`` transcribers in one
consumer group (``--cpu-threads`` whisper threads each), one assist worker, and ``--bridges``
bridge replicas serving the redacted transcripts (the whole path: provider → ingest → audio →
transcribe → transcripts → assist → redacted → bridge → client), 4 partitions per topic.

**The calls**: ``--calls`` two-party calls of about ``--seconds`` s built from the recorded
speech (``bench.calls``, ``--seed``; read in place from ``--speech``, never copied), played in
real time by the provider simulators in turn: jambonz (16 kHz L16 stereo), Twilio (8 kHz
mu-law, both tracks), Plivo (16 kHz L16, both tracks), to the ingest replicas in turn. Every
scenario plays the same calls (same seed) under new call ids. Each call has one liveCalls
client (``bench.watcher``: ``interim=true``, the bridges in turn; on any disconnect it goes
to the next bridge with ``resumeAfter``).

**Expected**: the script, not a second run. A fault-free run of the same calls is not a
fixed point (interims and sentence closes depend on decode timing, so ids move between runs),
so the ledger (``bench.ledger``) checks three layers against each other: every scripted
utterance must be covered by a final the client received (joined by id with the transcripts
topic for its audio span); every final the transcribers produced must reach every client;
every message on the served topic must reach every client (across reconnects); and the audio
topic must hold every sample each provider sent, ``seq`` without gaps. The ``baseline`` row
(no fault) measures the floor: what the pipeline misses with nothing injected. The ledgers
are drawn up after the last scenario and a wait of ``--idle-timeout`` + 12 s, so that what a
worker sends late (a stale call state's idle timeout: ``CALLSCRIBE_CALL_IDLE_TIMEOUT_S`` is
set to ``--idle-timeout``, 20 s instead of 120, so that it fires within these short calls)
counts against the scenario that caused it.

**Scenarios** (``--scenario``, repeatable; default all, in this order; ``stop-frozen`` last,
as it stops the stack):

* ``baseline``: no fault.
* ``kill-transcriber``: SIGKILL a transcriber chosen at random at ``--kills`` random moments
  (one in each equal slice of the call), restarting it at once as Kubernetes would.
* ``kill-assist``, ``kill-bridge``: SIGKILL the assist worker / the first bridge replica
  mid-call, restarted at once (the bridge's clients reconnect to the other replica).
* ``broker-pause``: SIGSTOP the broker for ``--pause`` s, then SIGCONT; every worker's
  ``/readyz`` is polled every 0.5 s throughout (notes: who went not ready, and when all were
  ready again); no worker is restarted.
* ``scale-transcribers``: one transcriber stopped (SIGTERM) before the calls, one added at a
  third of the call, one stopped (SIGTERM) at two thirds: 1 → 2 → 1 while calls run.
* ``scale-transcribers-3``: 1 → 2 → 3 → 1 (one added at a quarter and at half of the call,
  two stopped at once with SIGTERM at three quarters).
* ``scale-assist``: a second assist worker added at a third of the call, the first stopped
  (SIGTERM) at two thirds: 1 → 2 → 1.
* ``kill-ingest``: a second ingest replica first (the calls alternate between them), then
  SIGKILL the first mid-call, restarted at once. Its calls' provider sockets drop; they are
  judged on what the audio topic holds ("cut": every utterance whose audio is stored in full
  must be delivered, and the call must end for its client, by the transcriber's idle
  timeout); the audio sent but not stored is in the notes; the other calls lose nothing.
* ``broker-outage``: as ``broker-pause``, for ``--outage`` s (60: past the ingest producer's
  30 s request timeout; ingest holds the calls' audio and retries it for 180 s,
  ``CALLSCRIBE_INGEST_DELIVERY_TIMEOUT_S``, then closes a call's socket 1011). Run it with
  ``--idle-timeout 120`` (the default of ``CALLSCRIBE_CALL_IDLE_TIMEOUT_S``), as the figures
  in bench/README.md were (the transcribers' idle clock stops during an outage).
* ``stop-frozen``: calls running, the broker frozen (SIGSTOP), then SIGTERM to every worker at
  once: the seconds each took to exit against its documented deadline
  (``bench.procs.STOP_DEADLINES_S``, from ``workers.deadline``), and the close code each
  provider's socket got.

**Figures** per scenario (``bench.ledger.Figures``): utterances spoken / delivered / missing
(of which no final was produced: "pipeline"), finals produced / missed by a client, duplicates
a client received under the same id, finals duplicated under another id, served messages a
client missed, audio samples lost and ``seq`` gaps, time to recover (after each fault, the
longest wait over the running calls until their client received a message again; the
baseline's longest silence is the reference), reconnects, WER of what the clients received.

Prints a Markdown table; writes ``bench/results/faults-<timestamp>.json`` and the workers'
logs to ``bench/results/logs-faults-<timestamp>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisper_normalizer.english import (  # type: ignore[import-untyped]  # no stubs
    EnglishTextNormalizer,
)

from bench import speech
from bench.bench_stack import RESULTS, save_result
from bench.calls import CallPlan, Corpus, build_calls
from bench.capacity import calls_wer
from bench.ledger import (
    Figures,
    brief,
    ledger,
    longest_silence_s,
    recovery_s,
)
from bench.playing import PROVIDERS, CallRun, cut_loss_ms, evidence, play
from bench.procs import STOP_DEADLINES_S, ProcessStack, Replicas, Worker
from bench.soak import parse_counts, parse_duration, render, run_soak
from bench.tap import TopicTap
from bench.watcher import Watcher

log = logging.getLogger("bench.faults")

SCENARIOS = ("baseline", "kill-transcriber", "kill-assist", "kill-bridge", "broker-pause",
             "scale-transcribers", "scale-transcribers-3", "scale-assist", "kill-ingest",
             "broker-outage", "stop-frozen")
#: How often readiness is polled while the broker is frozen.
READY_POLL_S = 0.5


@dataclass
class Fault:
    """One injected fault: ``at`` when it began, ``until`` when it ended (wall clock)."""

    kind: str
    target: str
    at: float
    until: float

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "at": self.at,
                "durationS": round(self.until - self.at, 3)}


@dataclass
class ScenarioRun:
    name: str
    calls: list[CallRun]
    origin: float = 0.0  # time.monotonic() when the calls started
    faults: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    args: argparse.Namespace
    stack: ProcessStack
    tap: TopicTap
    plans: list[CallPlan]
    rng: random.Random

    async def at(self, run: ScenarioRun, seconds: float) -> None:
        """Sleep until ``seconds`` after the calls of ``run`` started."""
        await asyncio.sleep(max(0.0, run.origin + seconds - time.monotonic()))


Inject = Callable[[Bench, ScenarioRun], Awaitable[None]]


async def run_scenario(bench: Bench, name: str, inject: Inject) -> ScenarioRun:
    """Play every call with a watcher each while ``inject`` runs; return once every watcher
    saw ``event:callEnd`` (or gave up) and the tap has read everything."""
    args, stack = bench.args, bench.stack
    tag = f"{name}-{secrets.token_hex(2)}"
    plans = [dataclasses.replace(p, call_id=f"{tag}-{i}") for i, p in enumerate(bench.plans)]
    bridges = stack.bridge_urls()
    runs = [CallRun(plan=p, provider=PROVIDERS[i % len(PROVIDERS)],
                    watcher=Watcher(p.call_id, bridges, stack.issuer.mint(p.call_id)[0],
                                    stack.api_key, first_bridge=i))
            for i, p in enumerate(plans)]
    run = ScenarioRun(name, runs, origin=time.monotonic())
    longest = max(p.duration_s for p in plans)
    # A broker frozen past the calls' end holds their transcripts back as long: wait that too.
    frozen = {"broker-pause": args.pause, "broker-outage": args.outage}.get(name, 0.0)
    watchers = [asyncio.create_task(r.watcher.run(args.stagger + longest + 120 + frozen))
                for r in runs]
    players = [asyncio.create_task(play(stack, r, i, bench.rng.uniform(0, args.stagger)))
               for i, r in enumerate(runs)]
    await inject(bench, run)
    await asyncio.gather(*players)
    await asyncio.gather(*watchers)
    if not await bench.tap.caught_up():
        run.notes.append("the topic tap did not catch up")
    run.extra["loadavg1m"] = os.getloadavg()[0]  # at the scenario's end
    return run


# ------------------------------------------------------------------------------ scenarios


async def no_fault(bench: Bench, run: ScenarioRun) -> None:
    return


async def kill_transcriber(bench: Bench, run: ScenarioRun) -> None:
    """``--kills`` SIGKILLs of a random transcriber, one in each slice of the call."""
    first, last = 4.0, bench.args.seconds - 6.0
    width = (last - first) / bench.args.kills
    for k in range(bench.args.kills):
        await bench.at(run, first + width * k + bench.rng.uniform(0, width))
        victim = bench.rng.choice(bench.stack.of("transcribe"))
        killed = await bench.stack.kill(victim, restart=True)
        run.faults.append(Fault("kill -9", victim.name, killed, killed))


def kill_one(kind: str) -> Inject:
    async def inject(bench: Bench, run: ScenarioRun) -> None:
        await bench.at(run, bench.args.seconds * 0.4)
        victim = bench.stack.of(kind)[0]
        killed = await bench.stack.kill(victim, restart=True)
        run.faults.append(Fault("kill -9", victim.name, killed, killed))
    return inject


async def broker_pause(bench: Bench, run: ScenarioRun) -> None:
    """SIGSTOP the broker for ``--pause`` s."""
    await freeze_broker_for(bench, run, bench.args.pause)


async def broker_outage(bench: Bench, run: ScenarioRun) -> None:
    """SIGSTOP the broker for ``--outage`` s (60: past the ingest producer's 30 s request
    timeout)."""
    await freeze_broker_for(bench, run, bench.args.outage)
    closes = sorted({f"{c.provider} {c.close_code or c.error or '-'}" for c in run.calls
                     if c.close_code not in (None, 1000) or c.error})
    if closes:
        run.notes.append("providers saw: " + ", ".join(closes))


async def freeze_broker_for(bench: Bench, run: ScenarioRun, seconds: float) -> None:
    """SIGSTOP the broker for ``seconds``; poll readiness from before until all are ready."""
    stack = bench.stack
    await bench.at(run, bench.args.seconds * 0.3)
    timeline: list[tuple[float, dict[str, bool]]] = [(time.time(), await stack.readiness())]
    frozen = stack.freeze_broker()
    while time.time() < frozen + seconds:
        timeline.append((time.time(), await stack.readiness()))
        await asyncio.sleep(READY_POLL_S)
    thawed = stack.thaw_broker()
    run.faults.append(Fault(f"SIGSTOP {seconds:.0f} s", "broker", frozen, thawed))
    while time.time() < thawed + 60:
        states = await stack.readiness()
        timeline.append((time.time(), states))
        if all(states.values()):
            break
        await asyncio.sleep(READY_POLL_S)
    run.extra["readiness"] = [{"at": round(at - frozen, 2), **s} for at, s in timeline]
    unready = sorted({name for at, s in timeline if frozen <= at <= thawed
                      for name, ok in s.items() if not ok})
    again = next((at for at, s in timeline if at > thawed and all(s.values())), None)
    if again is None:
        back = "not again"
    elif again - thawed < READY_POLL_S:
        back = "at the first poll after SIGCONT"
    else:
        back = f"{again - thawed:.1f} s after SIGCONT"
    run.notes.append(f"not ready while frozen: {', '.join(unready) or 'none'}; all ready {back}")


async def one_transcriber(bench: Bench) -> None:
    """Before ``scale-transcribers``: all transcribers but one stopped (SIGTERM)."""
    for extra in bench.stack.of("transcribe")[1:]:
        await bench.stack.stop(extra, 60)
    await bench.stack.wait_ready(*bench.stack.of("transcribe"))


def _scaled_in(run: ScenarioRun, worker: Worker, started: float, took: float | None) -> None:
    """Record a worker stopped with SIGTERM to scale in, and how long it took to leave."""
    run.faults.append(Fault("scale in (SIGTERM)", worker.name, started, started))
    run.notes.append(f"{worker.name} left in {took:.1f} s" if took is not None
                     else f"{worker.name} still running 60 s after SIGTERM")


async def _scale_out_and_in(bench: Bench, run: ScenarioRun, kind: str) -> None:
    """1 → 2 → 1 workers of ``kind`` while the calls run (the first one stopped with
    SIGTERM)."""
    stack = bench.stack
    await bench.at(run, bench.args.seconds / 3)
    added = stack.add(kind)
    run.faults.append(Fault("scale out", added.name, time.time(), time.time()))
    await bench.at(run, bench.args.seconds * 2 / 3)
    leaving = stack.of(kind)[0]
    started = time.time()
    _scaled_in(run, leaving, started, await stack.stop(leaving, 60))


async def scale_transcribers(bench: Bench, run: ScenarioRun) -> None:
    """1 → 2 → 1 transcribers while the calls run (the one leaving stopped with SIGTERM)."""
    await _scale_out_and_in(bench, run, "transcribe")


async def scale_transcribers_3(bench: Bench, run: ScenarioRun) -> None:
    """1 → 2 → 3 → 1 transcribers while the calls run (two leave at once, with SIGTERM)."""
    stack = bench.stack
    seconds = bench.args.seconds
    for step in (1, 2):
        await bench.at(run, seconds * step / 4)
        added = stack.add("transcribe")
        started = time.time()
        run.faults.append(Fault("scale out", added.name, started, started))
        try:  # each step settles (the new member has its partitions) before the next
            await stack.wait_ready(added, timeout_s=60)
            run.notes.append(f"{added.name} ready in {time.time() - started:.1f} s")
        except RuntimeError:
            run.notes.append(f"{added.name} not ready 60 s after it started")
    await bench.at(run, seconds * 3 / 4)
    leaving = stack.of("transcribe")[:2]
    started = time.time()
    took = await asyncio.gather(*(stack.stop(w, 60) for w in leaving))
    for worker, t in zip(leaving, took, strict=True):
        _scaled_in(run, worker, started, t)


async def scale_assist(bench: Bench, run: ScenarioRun) -> None:
    """Assist 1 → 2 while the calls run, and 2 → 1 (the first one stopped with SIGTERM)."""
    await _scale_out_and_in(bench, run, "assist")


async def two_ingest(bench: Bench) -> None:
    """Before ``kill-ingest``: at least two ingest replicas (the calls alternate)."""
    while len(bench.stack.of("ingest")) < 2:
        bench.stack.add("ingest")
    await bench.stack.wait_ready(*bench.stack.of("ingest"))


async def kill_ingest(bench: Bench, run: ScenarioRun) -> None:
    """SIGKILL the first ingest replica mid-call (restarted at once): its calls' provider
    sockets drop; they are judged on the audio the topic holds (``cut``)."""
    stack = bench.stack
    replicas = stack.of("ingest")
    victim = replicas[0]
    run.extra["cutCalls"] = [c.plan.call_id for i, c in enumerate(run.calls)
                             if replicas[i % len(replicas)] is victim]
    await bench.at(run, bench.args.seconds * 0.4)
    killed = await stack.kill(victim, restart=True)
    run.faults.append(Fault("kill -9", victim.name, killed, killed))


async def restore(bench: Bench) -> None:
    """Back to the starting topology, every worker ready (between scenarios)."""
    stack = bench.stack
    for kind in ("transcribe", "assist", "bridge", "ingest"):
        while len(stack.of(kind)) < stack.replicas.of(kind):
            stack.add(kind)
    await stack.wait_ready(*[w for w in stack.workers if w.running])


async def stop_frozen(bench: Bench) -> dict[str, Any]:
    """Calls running, the broker frozen, then SIGTERM to every worker at once."""
    stack = bench.stack
    run = ScenarioRun("stop-frozen", [], origin=time.monotonic())
    plans = [dataclasses.replace(p, call_id=f"stop-{secrets.token_hex(2)}-{i}")
             for i, p in enumerate(bench.plans)]
    runs = [CallRun(plan=p, provider=PROVIDERS[i % len(PROVIDERS)],
                    watcher=Watcher(p.call_id, [], "", "")) for i, p in enumerate(plans)]
    players = [asyncio.create_task(play(stack, r, i, 0.0)) for i, r in enumerate(runs)]
    await bench.at(run, 8.0)
    frozen = stack.freeze_broker()
    workers = [w for w in stack.workers if w.running]
    took = await asyncio.gather(*(stack.stop(w, STOP_DEADLINES_S[w.kind] + 15)
                                  for w in workers))
    stack.thaw_broker()
    for w in workers:
        if w.running:
            await stack.kill(w)
    await asyncio.gather(*players)
    return {
        "frozenAt": frozen,
        "workers": [{"name": w.name, "kind": w.kind, "exitS": None if t is None else round(t, 2),
                     "deadlineS": STOP_DEADLINES_S[w.kind],
                     "withinDeadline": t is not None and t <= STOP_DEADLINES_S[w.kind],
                     "exitCode": w.process.returncode if w.process else None}
                    for w, t in zip(workers, took, strict=True)],
        "providers": [{"call": r.plan.call_id, "provider": r.provider, "closeCode": r.close_code,
                       "error": r.error} for r in runs],
    }


INJECTORS: dict[str, Inject] = {
    "baseline": no_fault, "kill-transcriber": kill_transcriber,
    "kill-assist": kill_one("assist"), "kill-bridge": kill_one("bridge"),
    "broker-pause": broker_pause, "scale-transcribers": scale_transcribers,
    "scale-transcribers-3": scale_transcribers_3, "scale-assist": scale_assist,
    "kill-ingest": kill_ingest, "broker-outage": broker_outage,
}
#: What runs before a scenario's calls start.
PREPARE: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "scale-transcribers": one_transcriber, "scale-transcribers-3": one_transcriber,
    "kill-ingest": two_ingest,
}


# ------------------------------------------------------------------------------ ledger


def summarise(tap: TopicTap, run: ScenarioRun, normalise: Callable[[str], str]) -> dict[str, Any]:
    cut = set(run.extra.get("cutCalls", []))
    calls = [evidence(tap, c, cut=c.plan.call_id in cut) for c in run.calls]
    figures: Figures = ledger(calls)
    if cut:
        lost = [cut_loss_ms(tap, c) for c in run.calls if c.plan.call_id in cut]
        ends = [r.at for c in run.calls if c.plan.call_id in cut for r in c.watcher.received
                if r.message.get("type") == "event:callEnd"]
        killed = run.faults[0].at if run.faults else 0.0
        run.notes.append(f"{len(cut)} calls cut: up to {max(lost, default=0):.0f} ms sent but "
                         f"not stored; callEnd {max(ends, default=killed) - killed:.0f} s "
                         f"after the kill")
    recoveries = [recovery_s(f.until, calls) for f in run.faults]
    outages = [b - a for c in run.calls for a, b in c.watcher.outages]
    wer = calls_wer(((c.plan, [(r.at, r.message) for r in c.watcher.received])
                     for c in run.calls), normalise)
    for c in run.calls:
        if c.error:
            run.notes.append(f"{c.plan.call_id}: {c.error}")
        elif c.close_code not in (None, 1000):
            run.notes.append(f"{c.provider} socket closed {c.close_code}")
    stalls = [c.longest_send_stall_s for c in run.calls if c.longest_send_stall_s is not None]
    return {
        "scenario": run.name, "faults": [f.to_json() for f in run.faults],
        "figures": {k: v for k, v in vars(figures).items() if k != "details"},
        "details": figures.details,
        "recoveryS": [None if r is None else round(r, 2) for r in recoveries],
        "longestSilenceS": round(longest_silence_s(calls), 2),
        "reconnects": len(outages), "reconnectS": [round(o, 2) for o in outages],
        "providerSendStallS": round(max(stalls), 2) if stalls else None,
        "wer": wer, "notes": run.notes, **run.extra,
        "calls": [{"call": c.plan.call_id, "provider": c.provider, "error": c.error,
                   "connections": [dataclasses.asdict(x) for x in c.watcher.connections],
                   "finals": [brief(r) for r in tap.produced.get(c.plan.call_id, [])
                              if r.get("type") == "transcript"]}
                  for c in run.calls],
    }


# ------------------------------------------------------------------------------ report


COLUMNS = ("scenario", "faults", "spoken", "delivered", "missing (pipeline)", "finals",
           "finals missed", "dup same id", "dup other id", "msgs missed", "audio lost",
           "recover s", "WER", "notes")


def fault_label(faults: Sequence[dict[str, Any]]) -> str:
    if not faults:
        return "-"
    kinds: dict[str, int] = {}
    for f in faults:
        label = f"{f['kind']} {f['target'].rsplit('-', 1)[0]}"
        kinds[label] = kinds.get(label, 0) + 1
    return ", ".join(f"{n}x {k}" if n > 1 else k for k, n in kinds.items())


def table_row(s: dict[str, Any]) -> list[str]:
    f = s["figures"]
    recover = [r for r in s["recoveryS"] if r is not None]
    lost_recovery = len(s["recoveryS"]) - len(recover)
    recovered = f"{max(recover):.1f}" if recover else "-"
    if lost_recovery:
        recovered += f" ({lost_recovery} never)"
    wer = s["wer"].get("wer")
    notes = list(s["notes"])
    if s["reconnects"]:
        notes.append(f"{s['reconnects']} reconnects, longest {max(s['reconnectS']):.1f} s")
    if s["scenario"] == "baseline":
        notes.append(f"longest silence {s['longestSilenceS']:.1f} s")
    if s.get("providerSendStallS") and s["providerSendStallS"] > 0.5:
        notes.append(f"provider send stalled up to {s['providerSendStallS']:.1f} s")
    if f["clients_ended"] < f["clients"]:
        notes.append(f"{f['clients'] - f['clients_ended']} clients without callEnd")
    if f["redelivered"]:
        notes.append(f"{f['redelivered']} finals produced again under their id")
    return [s["scenario"], fault_label(s["faults"]), str(f["utterances"]), str(f["delivered"]),
            f"{f['missing']} ({f['missing_pipeline']})", str(f["finals"]),
            str(f["finals_missed"]), str(f["dup_same_id"]), str(f["dup_other_id"]),
            str(f["messages_missed"]),
            f"{f['audio_samples_lost']} ({f['audio_seq_gaps']} gaps)", recovered,
            "-" if wer is None else f"{100 * wer:.1f} %", "; ".join(notes)]


def stop_row(stop: dict[str, Any]) -> list[str]:
    late = [w for w in stop["workers"] if not w["withinDeadline"]]
    exits = ", ".join(f"{w['name']} {w['exitS'] if w['exitS'] is not None else 'never'}/"
                      f"{w['deadlineS']:.0f}" for w in stop["workers"])
    closes = ", ".join(f"{p['provider']} {p['closeCode'] or p['error'] or '-'}"
                       for p in stop["providers"])
    return ["stop-frozen", "SIGTERM all, broker frozen", *["-"] * 10, "-",
            f"exit s/deadline: {exits}; {len(late)} late; providers saw: {closes}"]


def render_table(result: dict[str, Any]) -> str:
    rows = [table_row(s) for s in result["scenarios"]]
    if result.get("stop"):
        rows.append(stop_row(result["stop"]))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / f"logs-faults-{stamp}"
    corpus = Corpus(tel8k=False, max_turn_s=args.max_turn, speech_dir=args.speech)
    replicas = Replicas(ingest=args.ingest, transcribe=args.transcribers, assist=1,
                        bridge=args.bridges)
    result: dict[str, Any] = {"timestamp": stamp, "args": {k: str(v) if isinstance(v, Path)
                                                           else v for k, v in vars(args).items()},
                              "host": {"cpus": os.cpu_count(),
                                       "loadavg1mBefore": os.getloadavg()[0]},
                              "replicas": dataclasses.asdict(replicas), "scenarios": []}
    normalise: Callable[[str], str] = EnglishTextNormalizer()
    with tempfile.TemporaryDirectory(prefix="callscribe-faults-") as tmp:
        count = max([args.calls, *args.per_call]) if args.soak else args.calls
        plans = build_calls(corpus, count=count, seconds=args.seconds, seed=args.seed,
                            out_dir=Path(tmp), prefix="faults")
        result["calls"] = [p.to_json() for p in plans]
        stack = ProcessStack(log_dir, replicas=replicas, cpu_threads=args.cpu_threads,
                             env={"CALLSCRIBE_CALL_IDLE_TIMEOUT_S": str(args.idle_timeout)})
        async with stack:
            tap = TopicTap(stack.bootstrap, stack.topics)
            await tap.start()
            bench = Bench(args, stack, tap, plans, random.Random(args.seed))
            runs: list[ScenarioRun] = []
            try:
                if args.soak is not None:
                    result["soak"] = await run_soak(bench, args.soak, args.sample_every,
                                                    args.per_call)
                    args.scenario = []
                for name in (s for s in SCENARIOS if s in args.scenario and s in INJECTORS):
                    print(f"-- {name}", file=sys.stderr, flush=True)
                    if name in PREPARE:
                        await PREPARE[name](bench)
                    runs.append(await run_scenario(bench, name, INJECTORS[name]))
                    try:
                        await restore(bench)
                    except RuntimeError as exc:  # a worker not ready again: report, stop here
                        runs[-1].notes.append(f"not restored after the scenario: {exc}")
                        print(f"-- {exc}; no further scenario", file=sys.stderr, flush=True)
                        args.scenario = []
                        break
                if runs:  # what a stale owner sends after its idle timeout counts too
                    await asyncio.sleep(args.idle_timeout + 12)
                    await tap.caught_up()
                result["scenarios"] = [summarise(tap, run, normalise) for run in runs]
                if "stop-frozen" in args.scenario:
                    print("-- stop-frozen", file=sys.stderr, flush=True)
                    result["stop"] = await stop_frozen(bench)
            finally:
                await tap.stop()
    result["host"]["loadavg1mAfter"] = os.getloadavg()[0]
    result["logs"] = str(log_dir)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="a scenario to run (repeatable; default: all)")
    parser.add_argument("--calls", type=int, default=None,
                        help="concurrent calls (default 3; with --soak 4)")
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="approximate length of each call (default 40)")
    parser.add_argument("--kills", type=int, default=3,
                        help="transcriber kills in kill-transcriber (default 3)")
    parser.add_argument("--pause", type=float, default=10.0,
                        help="seconds the broker is frozen in broker-pause (default 10)")
    parser.add_argument("--outage", type=float, default=60.0,
                        help="seconds the broker is frozen in broker-outage (default 60)")
    parser.add_argument("--transcribers", type=int, default=2)
    parser.add_argument("--bridges", type=int, default=2)
    parser.add_argument("--ingest", type=int, default=1)
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="whisper threads per transcriber (default 1)")
    parser.add_argument("--idle-timeout", type=float, default=20.0,
                        help="CALLSCRIBE_CALL_IDLE_TIMEOUT_S of the transcribers (default 20, "
                        "not 120: the bench's calls are short, and what the timeout does "
                        "after a partition moved must happen within them)")
    parser.add_argument("--seed", type=int, default=1, help="speaker/turn/gap choice seed")
    parser.add_argument("--stagger", type=float, default=2.0,
                        help="calls start at random times within this many seconds")
    parser.add_argument("--max-turn", type=float, default=10.0,
                        help="longest utterance used as one turn, in seconds (default 10)")
    parser.add_argument("--soak", type=str, default=None, metavar="DURATION",
                        help="no scenarios: loop --calls calls for DURATION (30m, 2m, 90s) and "
                        "sample memory, descriptors, lag and latency (bench.soak)")
    parser.add_argument("--per-call", type=str, default="0,4,8", metavar="COUNTS",
                        help="with --soak, first: RSS with these many calls open (default "
                        "0,4,8; '' to skip)")
    parser.add_argument("--sample-every", type=float, default=10.0,
                        help="with --soak: seconds between samples (default 10)")
    speech.add_argument(parser)
    args = parser.parse_args(argv)
    args.scenario = args.scenario or list(SCENARIOS)
    try:
        args.soak = None if args.soak is None else parse_duration(args.soak)
        args.per_call = parse_counts(args.per_call) if args.soak is not None else []
    except ValueError as exc:
        parser.error(str(exc))
    if args.calls is None:
        args.calls = 4 if args.soak is not None else 3
    if args.calls < 1 or args.seconds < 20 or args.kills < 1:
        parser.error("--calls and --kills must be at least 1, --seconds at least 20")
    if min(args.transcribers, args.bridges, args.ingest) < 1:
        parser.error("at least one replica of each worker")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if (missing := speech.missing(args.speech)) is not None:
        return missing
    result = asyncio.run(main_async(args))
    shown = save_result("soak" if "soak" in result else "faults", result)
    print(render(result["soak"]) if "soak" in result else render_table(result))
    print(f"\nwrote {shown}; worker logs in {result['logs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
