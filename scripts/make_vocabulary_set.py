"""Regenerate the custom-vocabulary speech set: sentences that hold made-up product and plan
names, spoken by espeak-ng, as 16 kHz mono PCM16 WAVs.

    python scripts/make_vocabulary_set.py          # the test fixtures: tests/fixtures/vocabulary/
    python scripts/make_vocabulary_set.py DIR      # the whole set (bench.vocabulary makes it)

Writes ``NN.wav`` (one sentence each, 0.3 s of silence either side), ``manifest.json`` (per
file: the text, the terms it holds, the voice) and ``terms.txt`` (the vocabulary file: every
term once, with comments, as ``CALLSCRIBE_VOCABULARY`` reads it). Two of the sentences hold
no term: they show whether a vocabulary makes whisper write its terms where none was said.
The committed fixtures are three of them (:data:`COMMITTED`), to keep the repository small.

Needs espeak-ng (Debian: ``apt-get install espeak-ng``) and the project's own dependencies
(numpy, soxr). Deterministic for one espeak-ng version (recorded in the manifest).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import soxr

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "vocabulary"
RATE = 16000
LEAD_S = 0.3
SPEED = 150  # words per minute
VOICES = ("en-us+m3", "en-gb-x-rp+f3")
TERMS = ("Zentrix Plus", "Quorvo", "FlexiMax 300", "Brivana Gold", "Talveo Connect",
         "Omnira", "Pexley Saver", "Drovix")
#: The sentences committed under tests/fixtures/vocabulary (two terms, one control).
COMMITTED = (1, 3, 10)
SENTENCES = (
    "I would like to upgrade to the Zentrix Plus plan.",
    "My Quorvo router keeps dropping the connection.",
    "Is the FlexiMax 300 bundle still available?",
    "We moved you to Brivana Gold last month.",
    "The Talveo Connect app will not let me log in.",
    "Your Omnira account shows two unpaid bills.",
    "Can I switch from Pexley Saver to Zentrix Plus?",
    "The Drovix modem needs a firmware update.",
    "Please restart the Quorvo box and wait a minute.",
    "FlexiMax 300 includes unlimited calls at night.",
    "Thank you for calling, how can I help you today?",
    "My bill is higher than it was last month.",
)


def speak(text: str, voice: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, trimmed to its audible part, as 16 kHz int16."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(SPEED), "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    audio = soxr.resample(samples.astype(np.float32) / 32768.0, rate, RATE)
    audible = np.flatnonzero(np.abs(audio) > 0.003)
    audio = audio[audible[0]:audible[-1] + 1] if audible.size else audio
    lead = np.zeros(int(LEAD_S * RATE), dtype=np.float32)
    out = np.concatenate([lead, audio, lead])
    return np.clip(np.rint(out * 32768.0), -32768, 32767).astype("<i2")


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(samples.tobytes())


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    chosen = range(len(SENTENCES)) if argv else COMMITTED
    out.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    items = []
    for index in chosen:
        text = SENTENCES[index]
        voice = VOICES[index % len(VOICES)]
        name = f"{index:02d}.wav"
        write_wav(out / name, speak(text, voice))
        items.append({"file": name, "text": text, "voice": voice,
                      "terms": [t for t in TERMS if t in text]})
    manifest = {"generator": "scripts/make_vocabulary_set.py", "espeak_ng": version,
                "rate": RATE, "speed_wpm": SPEED, "terms": list(TERMS), "items": items}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "terms.txt").write_text(
        "# Made-up product and plan names of the vocabulary speech set\n"
        "# (scripts/make_vocabulary_set.py): one term a line, # starts a comment.\n\n"
        + "\n".join(TERMS) + "\n")
    print(f"wrote {len(items)} sentences to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
