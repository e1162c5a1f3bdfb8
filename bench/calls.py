"""Realistic two-party calls built from the recorded speech in ``../shared/eval/speech/``.

Each call pairs two speakers, one per channel (channel 0 = caller, role ``other``; channel 1 =
agent, role ``assistant``), and lays their utterances out as alternating turns separated by
0.4-1.2 s gaps. The result is written as a temporary stereo PCM16 WAV (never into the repo):
16 kHz from the lossless copies, or 8 kHz from the ``tel8k/`` G.711 mu-law phone-channel copies.
"""

from __future__ import annotations

import csv
import random
import struct
import wave
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr

#: The evaluation corpus, relative to the repository root.
SPEECH_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "speech"
ROLES = ("other", "assistant")
_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_MULAW = 7


@dataclass(frozen=True, slots=True)
class Utterance:
    """One row of ``manifest.tsv``."""

    file: str
    duration_s: float
    text: str
    speaker: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One utterance placed on a call's timeline."""

    channel: int
    start_s: float
    duration_s: float
    file: str
    speaker: str
    text: str


@dataclass
class CallPlan:
    """A call to play: its id, WAV, rate and the turns laid out in it."""

    call_id: str
    wav: Path
    rate: int
    duration_s: float
    speakers: tuple[str, str]
    turns: list[Turn] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"callId": self.call_id, "rate": self.rate, "durationS": self.duration_s,
                "speakers": list(self.speakers),
                "turns": [{"channel": t.channel, "startS": round(t.start_s, 3),
                           "durationS": t.duration_s, "file": t.file, "speaker": t.speaker}
                          for t in self.turns]}


def read_manifest(speech_dir: Path = SPEECH_DIR) -> list[Utterance]:
    """Every utterance of the corpus; an unknown speaker (``?``) is its own speaker."""
    path = speech_dir / "manifest.tsv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the evaluation corpus is missing; expected it at "
                                "../shared/eval/speech/ relative to the repository root")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [Utterance(file=row["file"], duration_s=float(row["duration_s"]),
                      text=row["reference_text"],
                      speaker=row["speaker"] if row["speaker"] not in ("", "?") else row["file"])
            for row in rows]


def mulaw_decode(data: bytes) -> np.ndarray[Any, Any]:
    """G.711 mu-law bytes → int16 samples (the ITU-T table, as ``audioop.ulaw2lin``)."""
    u = ~np.frombuffer(data, dtype=np.uint8)
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F).astype(np.int32) << 3) + 0x84) << exponent
    sample = magnitude - 0x84
    return np.where(u & 0x80, -sample, sample).astype(np.int16)


def read_audio(path: Path) -> tuple[np.ndarray[Any, Any], int]:
    """(mono int16 samples, rate) of a PCM16 or mu-law WAV (the stdlib ``wave`` of Python 3.11
    reads only PCM, so the RIFF chunks are walked here)."""
    blob = path.read_bytes()
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= len(blob):
        chunk_id = blob[offset:offset + 4]
        size = struct.unpack("<I", blob[offset + 4:offset + 8])[0]
        body = blob[offset + 8:offset + 8 + size]
        if chunk_id == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError(f"{path}: data chunk before fmt chunk")
            return _decode(path, fmt, body)
        offset += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def _decode(path: Path, fmt: tuple[int, int, int, int],
            body: bytes) -> tuple[np.ndarray[Any, Any], int]:
    tag, channels, rate, bits = fmt
    if tag == _WAVE_FORMAT_PCM and bits == 16:
        samples = np.frombuffer(body[:len(body) // 2 * 2], dtype="<i2").astype(np.int16)
    elif tag == _WAVE_FORMAT_MULAW and bits == 8:
        samples = mulaw_decode(body)
    else:
        raise ValueError(f"{path}: format tag {tag} with {bits}-bit samples; expected 16-bit "
                         "PCM (1) or 8-bit mu-law (7)")
    return samples.reshape(-1, channels)[:, 0].copy(), rate


class Corpus:
    """The utterances grouped by speaker, and their audio at one rate (cached)."""

    def __init__(self, *, tel8k: bool, max_turn_s: float, speech_dir: Path = SPEECH_DIR) -> None:
        self.audio_dir = speech_dir / "tel8k" if tel8k else speech_dir
        self.rate = 8000 if tel8k else 16000
        by_speaker: dict[str, list[Utterance]] = defaultdict(list)
        for utterance in read_manifest(speech_dir):
            if utterance.duration_s <= max_turn_s:
                by_speaker[utterance.speaker].append(utterance)
        several = {s: u for s, u in by_speaker.items() if len(u) >= 2}
        self.by_speaker = several if len(several) >= 2 else dict(by_speaker)
        if len(self.by_speaker) < 2:
            raise ValueError(f"{speech_dir}: fewer than two speakers with utterances up to "
                             f"{max_turn_s} s")
        self._cache: dict[str, np.ndarray[Any, Any]] = {}

    def audio(self, file: str) -> np.ndarray[Any, Any]:
        if file not in self._cache:
            samples, rate = read_audio(self.audio_dir / file)
            if rate != self.rate:
                samples = soxr.resample(samples, rate, self.rate).astype(np.int16)
            self._cache[file] = samples
        return self._cache[file]


class _Party:
    """One speaker's utterances, shuffled, reused in a new order once all were said."""

    def __init__(self, utterances: list[Utterance], rng: random.Random) -> None:
        self._all, self._rng = utterances, rng
        self._queue: list[Utterance] = []

    def next_fitting(self, room_s: float) -> Utterance | None:
        if not self._queue:
            self._queue = self._rng.sample(self._all, len(self._all))
        for index, utterance in enumerate(self._queue):
            if utterance.duration_s <= room_s:
                return self._queue.pop(index)
        fitting = [u for u in self._all if u.duration_s <= room_s]
        return self._rng.choice(fitting) if fitting else None


def lay_out(corpus: Corpus, *, seconds: float, rng: random.Random, lead_s: float = 0.5,
            tail_s: float = 1.0, gap_s: tuple[float, float] = (0.4, 1.2),
            ) -> tuple[tuple[str, str], list[Turn]]:
    """Two distinct speakers' utterances as alternating turns filling about ``seconds``."""
    speakers = tuple(rng.sample(sorted(corpus.by_speaker), 2))
    parties = [_Party(corpus.by_speaker[s], rng) for s in speakers]
    turns: list[Turn] = []
    t, channel = lead_s, 0
    while True:
        utterance = parties[channel].next_fitting(seconds - tail_s - t)
        if utterance is None:
            break
        turns.append(Turn(channel, t, utterance.duration_s, utterance.file, speakers[channel],
                          utterance.text))
        t += utterance.duration_s + rng.uniform(*gap_s)
        channel ^= 1
    if not turns:  # shorter than any utterance: one turn of the shortest
        shortest = min(corpus.by_speaker[speakers[0]], key=lambda u: u.duration_s)
        turns.append(Turn(0, lead_s, shortest.duration_s, shortest.file, speakers[0],
                          shortest.text))
    return (speakers[0], speakers[1]), turns


def render(corpus: Corpus, turns: list[Turn], *, tail_s: float = 1.0) -> np.ndarray[Any, Any]:
    """The turns as a (frames, 2) int16 array at ``corpus.rate``."""
    rate = corpus.rate
    ends = [round(t.start_s * rate) + len(corpus.audio(t.file)) for t in turns]
    audio = np.zeros((max(ends) + int(tail_s * rate), 2), dtype=np.int16)
    for turn in turns:
        samples = corpus.audio(turn.file)
        begin = round(turn.start_s * rate)
        audio[begin:begin + len(samples), turn.channel] = samples
    return audio


def write_wav(path: Path, audio: np.ndarray[Any, Any], rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(audio.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(audio.astype("<i2")).tobytes())


def build_calls(corpus: Corpus, *, count: int, seconds: float, seed: int, out_dir: Path,
                prefix: str) -> list[CallPlan]:
    """``count`` calls of about ``seconds`` each, as WAVs in ``out_dir``."""
    rng = random.Random(seed)
    plans = []
    for index in range(count):
        speakers, turns = lay_out(corpus, seconds=seconds, rng=rng)
        audio = render(corpus, turns)
        wav = out_dir / f"call-{index}.wav"
        write_wav(wav, audio, corpus.rate)
        plans.append(CallPlan(call_id=f"{prefix}-call-{index}", wav=wav, rate=corpus.rate,
                              duration_s=round(len(audio) / corpus.rate, 3), speakers=speakers,
                              turns=turns))
    return plans
