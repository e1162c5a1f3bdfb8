"""Regenerate the committed mixed-call fixture of the speaker-separation tests.

    .venv/bin/python scripts/make_speaker_fixtures.py

Writes into tests/fixtures/speakers/:
  mixed_16k.wav   16 kHz mono PCM16: a two-party call summed to one channel, as Bland's live
                  listen sends it; an American female agent (espeak-ng en-us+f3) greets first,
                  a British male caller (en-gb-x-rp+m1) answers, turns alternate 0.6-0.8 s apart
  manifest.json   each turn: speaker, role, text, start_s/end_s (first and last audible sample)

Needs espeak-ng and numpy (the project's venv). Deterministic: espeak-ng renders the same
samples for the same text, voice and speed; the resampling is soxr's, without dither.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import soxr

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "speakers"
RATE = 16000
SPEED = 140
VOICES = {"agent": "en-us+f3", "caller": "en-gb-x-rp+m1"}
ROLES = {"agent": "assistant", "caller": "other"}
TURNS = [
    ("agent", "Thank you for calling, how can I help you today?"),
    ("caller", "My internet is not working today."),
    ("agent", "Oh no, I am sorry to hear that."),
    ("caller", "I tried to turn it off and on."),
    ("agent", "Let me look at your account for you."),
    ("caller", "Thank you, I will wait on the line."),
]
GAPS_S = [0.7, 0.6, 0.8, 0.6, 0.7]
LEAD_S = 0.4
TAIL_S = 0.6


def render(voice: str, text: str) -> np.ndarray:
    """One sentence from espeak-ng at 16 kHz, trimmed to its audible samples."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(SPEED), "-w", str(path), text],
                       check=True)
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = soxr.resample(samples.astype(np.float32) / 32768, rate, RATE)
    audible = np.flatnonzero(np.abs(audio) > 0.004)
    audio = audio[audible[0]:audible[-1] + 1]
    return np.clip(np.rint(audio * 32768 * 0.8), -32768, 32767).astype("<i2")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pieces = [render(VOICES[speaker], text) for speaker, text in TURNS]
    starts, t = [], round(LEAD_S * RATE)
    for i, piece in enumerate(pieces):
        starts.append(t)
        t += len(piece) + (round(GAPS_S[i] * RATE) if i < len(GAPS_S) else 0)
    mixed = np.zeros(t + round(TAIL_S * RATE), dtype=np.int32)
    for start, piece in zip(starts, pieces, strict=True):
        mixed[start:start + len(piece)] += piece
    with wave.open(str(OUT / "mixed_16k.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(mixed, -32768, 32767).astype("<i2").tobytes())
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    manifest = {
        "generator": "scripts/make_speaker_fixtures.py", "espeak_ng": version,
        "voices": {name: {"espeak_voice": v, "speed_wpm": SPEED, "role": ROLES[name]}
                   for name, v in VOICES.items()},
        "first": "agent",
        "turns": [{"speaker": speaker, "role": ROLES[speaker], "text": text,
                   "start_s": round(start / RATE, 4),
                   "end_s": round((start + len(piece)) / RATE, 4)}
                  for (speaker, text), start, piece in zip(TURNS, starts, pieces, strict=True)],
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
