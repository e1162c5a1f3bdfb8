"""``python -m bench.roles``: who said what on one-channel (mixed) calls.

Two-party calls are built from the shared speech set (``bench.calls``: two different speakers,
alternating turns, gaps of ``--gap`` seconds, a negative lower bound giving a little overlap),
summed to one channel, at 16 kHz and at 8 kHz mu-law (``tel8k/``). Each call is played, in
real time by default and several at once, through the transcriber's own logic in this
process: :class:`~workers.transcribe.calls.CallTracker`, the
:class:`~workers.transcribe.pipeline.DecodePipeline`, the real whisper ``tiny.en`` and the
:class:`~workers.transcribe.separation.SpeakerStage` (no Kafka: what is measured is the
transcriber's, not the broker's). The call starts as a Bland call does (``mix: mixed``, one
``other`` channel); the first voice of each built call is the reference ``assistant``.

Reported per rate:

* **words right**: the share of transcribed words whose role is the role of the party
  speaking where the word falls (each final's words spread evenly over its voiced audio; in
  an overlap either party counts);
* **turn boundary error**: for each change of party in the call, the distance to the nearest
  change of role in the transcripts (p50, ms), and the share of changes with none within 2 s;
* **final latency**: end of each final's speech to its record (p50, p95), with the calls
  separated and, played again, not separated: the difference at p50 is what separation adds
  (the voice prints, and the word alignment a mixed call's finals get); also how long each
  batch with a mixed call's final or early decode waited for its voice prints after whisper;
* **CPU per call**: the voice-print thread's CPU seconds per call, and the whole process's.

The result JSON goes to ``bench/results/roles-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import speech
from bench.bench_stack import save_result
from bench.calls import Corpus, Turn, lay_out, render
from workers.records import AudioChunk, CallStarted, Role
from workers.settings import TranscribeSettings
from workers.transcribe.app import vad_config
from workers.transcribe.asr import AsrResult, DecodeRequest, Transcriber
from workers.transcribe.calls import CallTracker
from workers.transcribe.pipeline import DecodePipeline
from workers.transcribe.separation import SpeakerStage, load_encoder
from workers.transcribe.speakers import NEW_SPEAKER_BELOW, SeparationConfig

#: The first voice of a built call (channel 0 of bench.calls) is the assistant.
REFERENCE_ROLES: tuple[Role, Role] = ("assistant", "other")
#: A change of party with no change of role within this is missed.
MISSED_AFTER_MS = 2000
CHUNK_MS = 100


@dataclass
class MixedCall:
    call_id: str
    rate: int
    pcm: bytes  # PCM16 LE mono, both parties summed
    turns: list[Turn]

    @property
    def reference(self) -> list[tuple[int, int, Role]]:
        """(start, end, role) of each turn in ms."""
        return [(round(t.start_s * 1000), round((t.start_s + t.duration_s) * 1000),
                 REFERENCE_ROLES[t.channel]) for t in self.turns]


def build_mixed(corpus: Corpus, *, count: int, seconds: float, seed: int,
                gap_s: tuple[float, float], prefix: str) -> list[MixedCall]:
    """``count`` two-party calls of about ``seconds``, each summed to one channel."""
    rng = random.Random(seed)
    calls = []
    for index in range(count):
        _, turns = lay_out(corpus, seconds=seconds, rng=rng, gap_s=gap_s)
        stereo = render(corpus, turns).astype(np.int32)
        mono = np.clip(stereo.sum(axis=1), -32768, 32767).astype("<i2")
        calls.append(MixedCall(f"{prefix}-{index}", corpus.rate, mono.tobytes(), turns))
    return calls


# ---- scoring (pure) -----------------------------------------------------------------------

def finals(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in records if r.get("type") == "transcript"),
                  key=lambda r: r["audioStartMs"])


def roles_at(reference: Sequence[tuple[int, int, Role]], ms: float) -> set[Role]:
    """The roles speaking at ``ms`` (the nearest turn's when none is)."""
    inside = {role for start, end, role in reference if start <= ms <= end}
    if inside:
        return inside
    nearest = min(reference, key=lambda t: min(abs(t[0] - ms), abs(t[1] - ms)))
    return {nearest[2]}


def word_scores(reference: Sequence[tuple[int, int, Role]],
                records: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(words with the right role, words) over the finals of one call."""
    right = total = 0
    for record in finals(records):
        words = record["msg"].split()
        start = record["audioStartMs"]
        end = max(start + 1, record.get("voicedEndMs") or record["audioEndMs"])
        for i in range(len(words)):
            at = start + (i + 0.5) * (end - start) / len(words)
            total += 1
            right += record["role"] in roles_at(reference, at)
    return right, total


def boundary_errors(reference: Sequence[tuple[int, int, Role]],
                    records: Sequence[dict[str, Any]]) -> tuple[list[int], int]:
    """(distance in ms from each change of party to the nearest change of role, changes with
    none within :data:`MISSED_AFTER_MS`)."""
    changes = [start for (start, _, role), (_, _, before) in zip(reference[1:], reference,
                                                                 strict=False)
               if role != before]
    found = finals(records)
    hyp = sorted(r["audioStartMs"] for r, before in zip(found[1:], found, strict=False)
                 if r["role"] != before["role"])
    errors, missed = [], 0
    for change in changes:
        at = bisect.bisect_left(hyp, change)
        near = [abs(hyp[i] - change) for i in (at - 1, at) if 0 <= i < len(hyp)]
        if near and min(near) <= MISSED_AFTER_MS:
            errors.append(min(near))
        else:
            missed += 1
    return errors, missed


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# ---- running the calls through the transcriber ---------------------------------------------

@dataclass
class Run:
    records: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: collections.defaultdict(list))
    waits_s: list[float] = field(default_factory=list)
    #: Wall clock (monotonic) of each call's first chunk, and of each record's arrival.
    t0: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)

    def latencies(self) -> list[float]:
        """Per final: end of its speech (played in real time) to its record."""
        return [self.arrived[r["id"]] - self.t0[call] - r["voicedEndMs"] / 1000
                for call, records in self.records.items() for r in finals(records)
                if r["id"] in self.arrived and "voicedEndMs" in r]


def timed_decode(transcriber: Transcriber, stage: SpeakerStage, run: Run) -> Any:
    """The pipeline's decode: whisper with voice prints beside it, and for each batch with a
    mixed call's final or early decode, how long it waited for them after whisper."""
    done: dict[str, float] = {}

    async def whisper(requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        results = await transcriber.decode(requests)
        done["at"] = time.monotonic()
        return results

    both = stage.wrap(whisper)

    async def decode(requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        results = await both(requests)
        if any(r.speakers for r in requests):
            run.waits_s.append(time.monotonic() - done["at"])
        return results

    return decode


async def play(call: MixedCall, tracker: CallTracker, pipeline: DecodePipeline, run: Run, *,
               realtime: bool, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    started = CallStarted(call_id=call.call_id, provider="bland", from_="", to="",
                          direction="inbound", rate=call.rate, channels=1, mix="mixed",
                          roles=("other",))
    tracker.on_vocabulary(started)
    tracker.on_mix(started)
    await pipeline.submit_start(started, [])
    step = call.rate * CHUNK_MS // 1000 * 2
    chunks = [call.pcm[i:i + step] for i in range(0, len(call.pcm), step)]
    t0 = time.monotonic()
    run.t0[call.call_id] = t0
    for seq, pcm in enumerate(chunks):
        chunk = AudioChunk(call.call_id, 0, seq, call.rate, "other", seq * CHUNK_MS, pcm,
                           channels=1, last=seq == len(chunks) - 1)
        jobs, _ = tracker.on_audio(chunk, None)
        for work in jobs:
            await pipeline.submit_work(work)
        pipeline.poke()
        if tracker.finish_if_complete(call.call_id):
            await pipeline.submit_finish(call.call_id, [])
        if realtime:
            await asyncio.sleep(max(0.0, t0 + (seq + 1) * CHUNK_MS / 1000 - time.monotonic()))
        else:
            await asyncio.sleep(0)


async def run_calls(calls: Sequence[MixedCall], transcriber: Transcriber, stage: SpeakerStage,
                    separation: SeparationConfig | None, settings: TranscribeSettings, *,
                    realtime: bool, stagger_s: float) -> Run:
    run = Run()
    tracker = CallTracker(vad_config(settings), separation=separation)

    async def send(call_id: str, records: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        run.records[call_id].extend(records)
        for record in records:  # a final has the id of its interims: finals only
            if record.get("type") == "transcript":
                run.arrived.setdefault(record["id"], now)

    async def ack(tokens: list[Any]) -> None:
        return None

    pipeline = DecodePipeline(
        tracker, decode=timed_decode(transcriber, stage, run), send=send, ack=ack,
        max_jobs=settings.decode_queue, batch_max=settings.decode_batch,
        interim_budget_s=settings.interim_budget_ms / 1000,
        interim_share=settings.interim_share)
    runner = asyncio.create_task(pipeline.run())
    try:
        await asyncio.gather(*(play(c, tracker, pipeline, run, realtime=realtime,
                                    delay_s=i * stagger_s) for i, c in enumerate(calls)))
        await pipeline.wait_idle()
    finally:
        runner.cancel()
    return run


def score(calls: Sequence[MixedCall], run: Run, baseline: Run | None, *, cpu_s: float,
          process_cpu_s: float) -> dict[str, Any]:
    right = total = missed = changes = 0
    errors: list[int] = []
    per_call = []
    for call in calls:
        records = run.records.get(call.call_id, [])
        r, t = word_scores(call.reference, records)
        e, m = boundary_errors(call.reference, records)
        right, total, missed = right + r, total + t, missed + m
        errors += e
        changes += len(e) + m
        per_call.append({"call": call.call_id, "words": t,
                         "words_right": round(r / t, 4) if t else None,
                         "finals": len(finals(records))})
    return {
        "calls": len(calls), "words": total,
        "words_right": round(right / total, 4) if total else None,
        "boundary_error_p50_ms": percentile(errors, 50),
        "boundaries_missed": round(missed / changes, 4) if changes else None,
        "voice_wait_p50_ms": _ms(percentile(run.waits_s, 50)),
        "voice_wait_p95_ms": _ms(percentile(run.waits_s, 95)),
        "final_latency_ms": {
            "separated": {q: _ms(percentile(run.latencies(), q)) for q in (50, 95)},
            "not_separated": None if baseline is None else {
                q: _ms(percentile(baseline.latencies(), q)) for q in (50, 95)}},
        "voice_cpu_s_per_call": round(cpu_s / max(1, len(calls)), 3),
        "process_cpu_s_per_call": round(process_cpu_s / max(1, len(calls)), 3),
        "audio_s_per_call": round(statistics.mean(
            len(c.pcm) / 2 / c.rate for c in calls), 1) if calls else 0,
        "per_call": per_call,
    }


def _pair(latency: dict[int, float | None] | None) -> str:
    if latency is None or latency[50] is None:
        return "-"
    return f"{latency[50]} / {latency[95]} ms"


def _added(on: dict[int, float | None], off: dict[int, float | None] | None) -> str:
    if off is None or on[50] is None or off[50] is None:
        return "-"
    return f"{on[50] - off[50]:+.0f} ms"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def render_table(rows: dict[str, dict[str, Any]]) -> str:
    head = ("| audio | calls | words | words right | turn boundary error p50 | boundaries "
            "missed | final latency p50 / p95, separated | not separated | added p50 | "
            "voice-print wait p50 / p95 | voice-print CPU per call | process CPU per call |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in rows.items():
        err = r["boundary_error_p50_ms"]
        on, off = r["final_latency_ms"]["separated"], r["final_latency_ms"]["not_separated"]
        lines.append(
            f"| {name} | {r['calls']} | {r['words']} | {100 * (r['words_right'] or 0):.1f} % "
            f"| {'-' if err is None else f'{err:.0f} ms'} | "
            f"{100 * (r['boundaries_missed'] or 0):.0f} % | "
            f"{_pair(on)} | {_pair(off)} | {_added(on, off)} | "
            f"{r['voice_wait_p50_ms']} / {r['voice_wait_p95_ms']} ms | "
            f"{r['voice_cpu_s_per_call']} s | {r['process_cpu_s_per_call']} s "
            f"(not separated: {r.get('process_cpu_s_per_call_not_separated') or '-'} s; "
            f"{r['audio_s_per_call']} s audio) |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = TranscribeSettings()
    encoder, why = load_encoder()
    if encoder is None:
        raise SystemExit(f"bench.roles: {why}")
    stage = SpeakerStage(encoder)
    separation = SeparationConfig(first="assistant", new_below=args.new_below)
    transcriber = Transcriber(model=settings.whisper_model, cpu_threads=args.cpu_threads,
                              windows=settings.whisper_windows,
                              interim_windows=settings.whisper_interim_windows)
    rows: dict[str, dict[str, Any]] = {}
    gap = (args.gap_min, args.gap_max)
    for tel8k in (False, True):
        if args.only and args.only != ("8k" if tel8k else "16k"):
            continue
        corpus = Corpus(tel8k=tel8k, max_turn_s=args.max_turn, speech_dir=args.speech)
        calls = build_mixed(corpus, count=args.calls, seconds=args.seconds, seed=args.seed,
                            gap_s=gap, prefix=f"roles-{corpus.rate}")
        baseline, baseline_cpu = None, None
        if not args.fast:  # the same calls, not separated: what separation adds
            process_before = time.process_time()
            baseline = await run_calls(calls, transcriber, stage, None, settings,
                                       realtime=True, stagger_s=args.stagger)
            baseline_cpu = (time.process_time() - process_before) / len(calls)
        cpu_before, process_before = stage.cpu_s, time.process_time()
        run = await run_calls(calls, transcriber, stage, separation, settings,
                              realtime=not args.fast, stagger_s=args.stagger)
        name = "8 kHz mu-law" if tel8k else "16 kHz"
        rows[name] = score(calls, run, baseline, cpu_s=stage.cpu_s - cpu_before,
                           process_cpu_s=time.process_time() - process_before)
        rows[name]["process_cpu_s_per_call_not_separated"] = (
            None if baseline_cpu is None else round(baseline_cpu, 3))
        if args.fast:  # not played in real time: no latency to speak of
            rows[name]["final_latency_ms"]["separated"] = {50: None, 95: None}
        rows[name]["transcripts"] = {c.call_id: finals(run.records.get(c.call_id, []))
                                     for c in calls}
        rows[name]["reference"] = {c.call_id: c.reference for c in calls}
    stage.close()
    transcriber.close()
    return {"args": vars(args), "rows": rows, "timestamp": time.strftime("%Y%m%d-%H%M%S")}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.roles", description=__doc__)
    parser.add_argument("--calls", type=int, default=4, help="calls per rate")
    parser.add_argument("--seconds", type=float, default=60, help="length of each call")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gap-min", type=float, default=-0.25,
                        help="shortest gap between turns, s (negative: overlap)")
    parser.add_argument("--gap-max", type=float, default=1.0)
    parser.add_argument("--max-turn", type=float, default=12.0, help="longest utterance, s")
    parser.add_argument("--stagger", type=float, default=1.5,
                        help="seconds between call starts")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--new-below", type=float, default=NEW_SPEAKER_BELOW,
                        help="CALLSCRIBE_SPEAKERS_NEW_BELOW")
    parser.add_argument("--fast", action="store_true", help="not in real time (no latency)")
    parser.add_argument("--only", choices=("16k", "8k"), help="one rate only")
    speech.add_argument(parser, "--speech")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    status = speech.missing(Path(args.speech), tel8k=args.only != "16k")
    if status is not None:
        return status
    result = asyncio.run(main_async(args))
    path = save_result("roles", result)
    print(render_table(result["rows"]))
    print(f"\nresult: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
