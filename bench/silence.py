"""Words callscribe emits on audio that holds no speech: silence, line hiss, hum, call-progress
tones and synthetic hold music (target: 0).

    .venv/bin/python -m bench.silence [--tel8k | --both] [--seconds S]

Every signal is generated here with numpy (nothing is downloaded), played as one mono call
through the real pipeline (``bench.bench_stack``: broker, ingest, transcriber child process)
with the jambonz simulator, and the call's ``transcript`` and ``transcript:interim`` records are
read from the transcripts topic. Calls are played one at a time (``--concurrency``) so the
transcriber's suppression counters (``callscribe_transcribe_suppressed_total`` by reason) can
be attributed to each signal. ``--tel8k`` sends every signal as 8 kHz phone audio: band-limited
to 300-3400 Hz and passed through G.711 mu-law (encode + decode), as ``tel8k/`` was made.
Results go to ``bench/results/silence-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from whisper_normalizer.english import EnglishTextNormalizer

from bench.bench_stack import RESULTS, BenchStack, running_stack, save_result, scrape
from bench.calls import mulaw_decode, write_wav
from bench.eval_wer import TranscriptCollector, _deltas, play_call
from workers.settings import TranscribeSettings

RATE = 16000
_DECODES = "callscribe_transcribe_decode_seconds_count"
log = logging.getLogger("bench.silence")

Signal = np.ndarray[Any, Any]  # float64 mono at RATE, nominally within [-1, 1]


# ------------------------------------------------------------------------------ signals


def at_dbfs(x: Signal, dbfs: float) -> Signal:
    """``x`` scaled to an RMS level of ``dbfs`` (relative to a full-scale int16 sample)."""
    rms = float(np.sqrt(np.mean(x * x)))
    return x * (10 ** (dbfs / 20) / rms) if rms > 0 else x


def band_limit(x: Signal, low_hz: float, high_hz: float, rate: int = RATE) -> Signal:
    """Brick-wall band-pass in the frequency domain (good enough for noise)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spectrum, len(x))


def hiss(rng: np.random.Generator, seconds: float, dbfs: float) -> Signal:
    """Line hiss: white noise band-limited to the telephone band."""
    return at_dbfs(band_limit(rng.standard_normal(int(seconds * RATE)), 300, 3400), dbfs)


def pink(rng: np.random.Generator, seconds: float, dbfs: float) -> Signal:
    """1/f noise (a rumbling line, room tone)."""
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    return at_dbfs(np.fft.irfft(spectrum, n), dbfs)


def hum(rng: np.random.Generator, seconds: float, dbfs: float) -> Signal:
    """Mains hum (50 Hz and odd harmonics) over faint hiss."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 3, 5, 7))
    return at_dbfs(tone, dbfs) + hiss(rng, seconds, dbfs - 20)


def cadence(seconds: float, freqs: Sequence[float], on_s: float, off_s: float,
            dbfs: float) -> Signal:
    """A call-progress tone: ``freqs`` summed, ``on_s`` on, ``off_s`` off, repeated."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * f * t) for f in freqs)
    gate = (t % (on_s + off_s)) < on_s
    return at_dbfs(tone * gate, dbfs) if gate.any() else tone * 0


def dtmf(rng: np.random.Generator, seconds: float, dbfs: float) -> Signal:
    """Random DTMF digits (100 ms tone, 100-400 ms gap): an IVR menu being navigated."""
    low, high = (697, 770, 852, 941), (1209, 1336, 1477)
    out = np.zeros(int(seconds * RATE))
    pos = int(0.5 * RATE)
    while pos + int(0.1 * RATE) < len(out):
        t = np.arange(int(0.1 * RATE)) / RATE
        out[pos:pos + len(t)] = (np.sin(2 * np.pi * rng.choice(low) * t)
                                 + np.sin(2 * np.pi * rng.choice(high) * t))
        pos += len(t) + int(rng.uniform(0.1, 0.4) * RATE)
    return at_dbfs(out, dbfs)


#: Chord progressions as MIDI note numbers (root position triads with a bass note).
_PROGRESSIONS = {
    "pop": [(48, 60, 64, 67), (43, 59, 62, 67), (45, 60, 64, 69), (41, 60, 65, 69)],  # C G Am F
    "jazz": [(50, 62, 65, 69, 72), (43, 59, 62, 65, 69), (48, 60, 64, 67, 71),
             (45, 61, 64, 67, 70)],  # Dm7 G7 Cmaj7 A7
}


def _midi_hz(note: float) -> float:
    return float(440.0 * 2 ** ((note - 69) / 12))


def _note(freq: float, seconds: float, *, harmonics: Sequence[float], attack_s: float,
          decay: float, vibrato_hz: float = 0.0) -> Signal:
    """One note: additive harmonics with an attack ramp, exponential decay and vibrato."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * freq * t
    if vibrato_hz:
        phase += 0.004 * freq / vibrato_hz * np.sin(2 * np.pi * vibrato_hz * t)
    wave = sum(a * np.sin(k * phase) for k, a in enumerate(harmonics, start=1))
    envelope = np.minimum(1, t / attack_s) * np.exp(-decay * t)
    release = np.minimum(1, (seconds - t) / 0.05)
    return np.asarray(wave * envelope * release)


def hold_music(rng: np.random.Generator, seconds: float, dbfs: float, *, style: str,
               bpm: float) -> Signal:
    """Synthetic hold music: a looping chord progression (pad or electric piano), a bass line
    and an arpeggiated melody, with a little swing and level variation."""
    beat = 60 / bpm
    chord_s = 4 * beat
    out = np.zeros(int(seconds * RATE) + RATE)
    progression = _PROGRESSIONS["jazz" if style == "jazz" else "pop"]
    piano = (1.0, 0.5, 0.25, 0.12, 0.06)
    pad = (1.0, 0.3, 0.2, 0.1)
    t0, index = 0.0, 0

    def add(signal: Signal, at: int) -> None:
        end = min(len(out), at + len(signal))
        if end > at:
            out[at:end] += signal[:end - at]

    while t0 < seconds:
        chord = progression[index % len(progression)]
        start = int(t0 * RATE)
        for note in chord[1:]:  # the chord, held
            add(0.25 * _note(_midi_hz(note), chord_s, harmonics=pad if style == "strings"
                             else piano, attack_s=0.3 if style == "strings" else 0.01,
                             decay=0.2 if style == "strings" else 0.9,
                             vibrato_hz=5.0 if style == "strings" else 0.0), start)
        for b in range(4):  # bass on each beat
            add(0.35 * _note(_midi_hz(chord[0] - 12 * (b % 2 == 1 and style == "jazz")),
                             beat * 0.9, harmonics=(1.0, 0.4, 0.1), attack_s=0.01, decay=2.0),
                start + int(b * beat * RATE))
        for e in range(8):  # melody: arpeggio in eighths, an octave up, some notes skipped
            if rng.random() < 0.2:
                continue
            note = chord[1 + rng.integers(0, len(chord) - 1)] + 12
            swing = 0.08 * beat if (e % 2 and style == "jazz") else 0.0
            add(0.3 * rng.uniform(0.7, 1.0) * _note(
                _midi_hz(note), beat * 0.6, harmonics=(1.0, 0.2, 0.05), attack_s=0.005,
                decay=3.0), start + int((e * beat / 2 + swing) * RATE))
        t0 += chord_s
        index += 1
    out = out[:int(seconds * RATE)]
    slow = 1 + 0.3 * np.sin(2 * np.pi * np.arange(len(out)) / RATE / 7.0)  # phrasing swell
    return at_dbfs(out * slow, dbfs)


def drums(rng: np.random.Generator, seconds: float, dbfs: float, *, bpm: float) -> Signal:
    """A drum loop: kick on 1 and 3, snare on 2 and 4, closed hi-hat on eighths."""
    beat = 60 / bpm
    out = np.zeros(int(seconds * RATE))
    t = np.arange(int(0.25 * RATE)) / RATE
    kick = np.sin(2 * np.pi * (50 * t + 60 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 18)
    snare = (band_limit(rng.standard_normal(len(t)), 200, 6000) * 0.5
             + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 25)
    hat = band_limit(rng.standard_normal(len(t)), 6000, 7900) * np.exp(-t * 90)
    step = 0
    while (at := int(step * beat / 2 * RATE)) < len(out):
        hits = [0.3 * hat]
        if step % 4 == 0:
            hits.append(kick)
        if step % 4 == 2:
            hits.append(0.7 * snare)
        for hit in hits:
            end = min(len(out), at + len(hit))
            out[at:end] += hit[:end - at]
        step += 1
    return at_dbfs(out, dbfs)


_VOWELS = {"aa": (730, 1090, 2440), "oo": (300, 870, 2240), "ee": (270, 2290, 3010),
           "ah": (640, 1190, 2390)}


def choir(rng: np.random.Generator, seconds: float, dbfs: float) -> Signal:
    """Wordless vocals ("aah", "ooh") over the chords: harmonics of a sung pitch shaped by
    vowel formants, with vibrato; the kind of hold music most likely to look like speech."""
    out = np.zeros(int(seconds * RATE))
    progression = _PROGRESSIONS["pop"]
    pos, index = 0, 0
    while pos < len(out):
        length = int(rng.uniform(0.6, 2.0) * RATE)
        chord = progression[(index // 2) % len(progression)]
        f0 = _midi_hz(chord[1 + rng.integers(0, len(chord) - 1)])
        formants = _VOWELS[str(rng.choice(list(_VOWELS)))]
        harmonics = [sum(float(np.exp(-(((k * f0) - f) / 120) ** 2)) for f in formants)
                     + 0.02 for k in range(1, int(3800 // f0) + 1)]
        note = _note(f0, length / RATE, harmonics=harmonics, attack_s=0.12, decay=0.3,
                     vibrato_hz=5.5)
        end = min(len(out), pos + len(note))
        out[pos:end] += note[:end - pos]
        pos += int(len(note) * rng.uniform(0.85, 1.1))
        index += 1
    return at_dbfs(out, dbfs)


@dataclass(frozen=True)
class Case:
    name: str
    describe: str
    make: Callable[[np.random.Generator, float], Signal]


def cases() -> list[Case]:
    """The signals, each ``make(rng, seconds)``; hold music gets twice the time."""
    return [
        Case("silence", "digital silence", lambda r, s: np.zeros(int(s * RATE))),
        Case("dither-80", "white noise at -80 dBFS (near silence)",
             lambda r, s: at_dbfs(r.standard_normal(int(s * RATE)), -80)),
        *(Case(f"hiss{level}", f"line hiss 300-3400 Hz at {level} dBFS",
               lambda r, s, level=level: hiss(r, s, level)) for level in (-60, -50, -40, -30)),
        Case("pink-40", "pink noise at -40 dBFS", lambda r, s: pink(r, s, -40)),
        Case("hum-35", "50 Hz hum + harmonics at -35 dBFS, hiss 20 dB below",
             lambda r, s: hum(r, s, -35)),
        Case("ringback", "US ringback 440+480 Hz, 2 s on 4 s off, -25 dBFS",
             lambda r, s: cadence(s, (440, 480), 2, 4, -25)),
        Case("busy", "busy tone 480+620 Hz, 0.5 s on 0.5 s off, -25 dBFS",
             lambda r, s: cadence(s, (480, 620), 0.5, 0.5, -25)),
        Case("dtmf", "random DTMF digits, -25 dBFS", lambda r, s: dtmf(r, s, -25)),
        Case("music-piano", "hold music: electric piano pop progression, 96 bpm, -22 dBFS",
             lambda r, s: hold_music(r, 2 * s, -22, style="piano", bpm=96)),
        Case("music-strings", "hold music: string pad with vibrato, 70 bpm, -22 dBFS",
             lambda r, s: hold_music(r, 2 * s, -22, style="strings", bpm=70)),
        Case("music-jazz", "hold music: swung jazz ii-V-I, 120 bpm, -18 dBFS",
             lambda r, s: hold_music(r, 2 * s, -18, style="jazz", bpm=120)),
        Case("music-drums", "hold music: piano pop with a drum loop, 100 bpm, -20 dBFS",
             lambda r, s: at_dbfs(hold_music(r, 2 * s, -22, style="piano", bpm=100)
                                  + drums(r, 2 * s, -24, bpm=100), -20)),
        Case("music-choir", "hold music: wordless vocals (aah/ooh) over strings, -20 dBFS",
             lambda r, s: at_dbfs(choir(r, 2 * s, -21)
                                  + hold_music(r, 2 * s, -27, style="strings", bpm=70), -20)),
        Case("music+hiss", "piano hold music at -26 dBFS over hiss at -45 dBFS",
             lambda r, s: hold_music(r, 2 * s, -26, style="piano", bpm=84)
             + hiss(r, 2 * s, -45)),
    ]


def mulaw_encode(samples: np.ndarray[Any, Any]) -> bytes:
    """int16 → G.711 mu-law bytes (the ITU-T segment encoder, as ``audioop.lin2ulaw``)."""
    x = samples.astype(np.int32) >> 2  # 14-bit, arithmetic shift as G.711's reference code
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x) + 0x21, 0x1FFF)
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 5
    mantissa = (magnitude >> (exponent + 1)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes())


def to_pcm(signal: Signal, *, tel8k: bool) -> tuple[np.ndarray[Any, Any], int]:
    """(int16 samples, rate) as sent: 16 kHz PCM, or 8 kHz band-limited mu-law decoded."""
    pcm = np.clip(np.round(signal * 32768), -32768, 32767).astype(np.int16)
    if not tel8k:
        return pcm, RATE
    narrow = soxr.resample(band_limit(pcm.astype(np.float64), 300, 3400), RATE, 8000)
    narrow = np.clip(np.round(narrow), -32768, 32767).astype(np.int16)
    return mulaw_decode(mulaw_encode(narrow)), 8000


def level_dbfs(samples: np.ndarray[Any, Any]) -> float:
    x = samples.astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return 20 * float(np.log10(rms / 32768)) if rms > 0 else float("-inf")


# ------------------------------------------------------------------------------ running


async def run_set(stack: BenchStack, tmp: Path, *, tel8k: bool, seconds: float, seed: int,
                  concurrency: int) -> list[dict[str, Any]]:
    label = "tel8k" if tel8k else "16k"
    prefix = f"quiet-{label}-{secrets.token_hex(2)}"
    collector = TranscriptCollector(stack.bootstrap, stack.topics.transcripts)
    await collector.start()
    slots = asyncio.Semaphore(concurrency)
    normalise = EnglishTextNormalizer()
    rows: list[dict[str, Any]] = []

    async def one(index: int, case: Case) -> None:
        rng = np.random.default_rng(seed + index)
        samples, rate = to_pcm(case.make(rng, seconds), tel8k=tel8k)
        wav = tmp / f"{label}-{case.name}.wav"
        await asyncio.to_thread(write_wav, wav, samples.reshape(-1, 1), rate)
        async with slots:
            before = scrape(f"{stack.transcriber_web}/metrics")
            call, call_s, ended = await play_call(
                stack, collector, f"{prefix}-{index}", wav, rate, realtime=False,
                timeout_s=120 + len(samples) / rate)
            after = scrape(f"{stack.transcriber_web}/metrics")
        finals = sorted(call.finals.values(), key=lambda r: r.get("audioStartMs", 0))
        texts = [r["msg"] for r in finals]
        interim_texts = [r["msg"] for r in call.interims]
        rows.append({
            "index": index, "signal": case.name, "describe": case.describe,
            "seconds": round(len(samples) / rate, 2), "rate": rate,
            "level_dbfs": round(level_dbfs(samples), 1), "finals": len(finals),
            "words": sum(len(normalise(t).split()) for t in texts),
            "interims": len(interim_texts),
            "interim_words": sum(len(normalise(t).split()) for t in interim_texts),
            "texts": texts, "interim_texts": interim_texts, "call_s": round(call_s, 2),
            "call_ended": ended,
            "suppressed": (_deltas(before, after, "callscribe_transcribe_suppressed_total")
                           if concurrency == 1 else None),
            "decodes": (round(after.get(_DECODES, 0) - before.get(_DECODES, 0))
                        if concurrency == 1 else None),
        })

    try:
        await asyncio.gather(*(one(i, case) for i, case in enumerate(cases())))
    finally:
        await collector.stop()
    return sorted(rows, key=lambda r: r["index"])


def render(label: str, rows: Sequence[dict[str, Any]]) -> str:
    lines = [label, f"{'signal':<15}{'seconds':>8}{'dBFS':>7}{'finals':>7}{'words':>6}"
             f"{'interims':>9}{'i.words':>8}{'decodes':>8}  suppressed (reason count) / text"]
    for r in rows:
        detail = " | ".join(r["texts"]) if r["texts"] else ", ".join(
            f"{k.removeprefix('reason=')} {v}" for k, v in (r["suppressed"] or {}).items()
            if "interim" not in k)
        lines.append(f"{r['signal']:<15}{r['seconds']:>8.1f}{r['level_dbfs']:>7.1f}"
                     f"{r['finals']:>7}{r['words']:>6}{r['interims']:>9}{r['interim_words']:>8}"
                     f"{'-' if r['decodes'] is None else r['decodes']:>8}  {detail[:70]}")
    total = sum(r["words"] for r in rows)
    lines.append(f"{'total':<15}{sum(r['seconds'] for r in rows):>8.1f}{'':>7}"
                 f"{sum(r['finals'] for r in rows):>7}{total:>6}"
                 f"{sum(r['interims'] for r in rows):>9}"
                 f"{sum(r['interim_words'] for r in rows):>8}  (target: 0 words)")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = TranscribeSettings()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / f"logs-{stamp}"
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    sets = [False, True] if args.both else [args.tel8k]
    results = {}
    with tempfile.TemporaryDirectory(prefix="callscribe-quiet-") as tmp:
        async with running_stack(log_dir, cpu_threads=settings.cpu_threads) as stack:
            for tel8k in sets:
                started = time.monotonic()
                rows = await run_set(stack, Path(tmp), tel8k=tel8k, seconds=args.seconds,
                                     seed=args.seed, concurrency=args.concurrency)
                results["tel8k" if tel8k else "16k"] = {
                    "rows": rows, "wall_s": time.monotonic() - started}
    return {"timestamp": stamp, "args": vars(args),
            "transcriber_env": {k: v for k, v in sorted(os.environ.items())
                                if k.startswith("CALLSCRIBE_")},
            "sets": results}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.silence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--tel8k", action="store_true",
                       help="8 kHz band-limited G.711 mu-law instead of 16 kHz PCM")
    which.add_argument("--both", action="store_true", help="16 kHz, then 8 kHz, one stack")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="length of each noise/tone signal; hold music gets twice this "
                        "(default 20: about 6 minutes in all)")
    parser.add_argument("--seed", type=int, default=7, help="noise and melody seed")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="calls at once (default 1: suppression reasons per signal)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.concurrency < 1:
        parser.error("--seconds must be positive and --concurrency at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    started = time.monotonic()
    result = asyncio.run(main_async(args))
    result["wall_s"] = time.monotonic() - started
    shown = save_result("silence", result)
    for name, data in result["sets"].items():
        audio = "8 kHz G.711 mu-law, 300-3400 Hz" if name == "tel8k" else "16 kHz PCM"
        print(render(f"callscribe words on non-speech, {audio}, one mono call per signal "
                     f"({data['wall_s']:.0f} s)", data["rows"]))
        print()
    print(f"total {result['wall_s']:.0f} s; wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
