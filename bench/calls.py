"""Realistic two-party calls built from the recorded speech in ``../shared/eval/speech/``.

Each call pairs two speakers, one per channel (channel 0 = caller, role ``other``; channel 1 =
agent, role ``assistant``), and lays their utterances out as alternating turns separated by
0.4-1.2 s gaps. The result is written as a temporary stereo PCM16 WAV (never into the repo):
16 kHz from the lossless copies, or 8 kHz from the ``tel8k/`` G.711 mu-law phone-channel copies.

By default a turn is one utterance. ``continuous=True`` makes each turn 20-40 s of one speaker
talking without a real pause: several of their utterances, each trimmed to its speech (the
recordings carry 0.2-0.6 s of silence at each end), joined by 0.15-0.3 s pauses, shorter than
the transcriber's 360 ms end-of-speech wait (``CALLSCRIBE_VAD_END_SILENCE_MS``), so the VAD
does not close the utterance at the joins.
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
class SpeechClip:
    """One row of ``manifest.tsv``."""

    file: str
    duration_s: float
    text: str
    speaker: str


#: Continuous turns: how long each is, and the pause between the utterances inside one.
CONTINUOUS_TURN_S = (20.0, 40.0)
CONTINUOUS_PAUSE_S = (0.15, 0.3)
#: Speech trimming for continuous turns: frames quieter than the file's loudest 10 ms frame by
#: more than this are silence; this much audio is kept on each side of the speech.
TRIM_BELOW_PEAK_DB = 35.0
TRIM_MARGIN_S = 0.01
#: Most silence the recordings carry around their speech (both ends together), in seconds.
_UNTRIMMED_SLACK_S = 1.2


@dataclass(frozen=True, slots=True)
class Piece:
    """One utterance inside a turn: the part ``clip_s`` (start, end in seconds; ``None``: the
    whole file) of ``file``, played from ``offset_s`` after the turn starts."""

    offset_s: float
    duration_s: float
    file: str
    text: str
    clip_s: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """One speaker's turn on a call's timeline: one utterance (``file``, ``text``), or several
    (``pieces``; then ``file`` names them joined by ``+`` and ``text`` is their texts joined by
    spaces)."""

    channel: int
    start_s: float
    duration_s: float
    file: str
    speaker: str
    text: str
    pieces: tuple[Piece, ...] = ()

    @property
    def parts(self) -> tuple[Piece, ...]:
        """What is played in this turn, in order (a one-utterance turn is one piece)."""
        return self.pieces or (Piece(0.0, self.duration_s, self.file, self.text),)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"channel": self.channel, "startS": round(self.start_s, 3),
                               "durationS": self.duration_s, "file": self.file,
                               "speaker": self.speaker, "text": self.text}
        if self.pieces:
            out["pieces"] = [{"offsetS": p.offset_s, "durationS": p.duration_s, "file": p.file,
                              "clipS": list(p.clip_s) if p.clip_s else None}
                             for p in self.pieces]
        return out


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
                "speakers": list(self.speakers), "turns": [t.to_json() for t in self.turns]}


def read_manifest(speech_dir: Path = SPEECH_DIR) -> list[SpeechClip]:
    """Every utterance of the corpus; an unknown speaker (``?``) is its own speaker."""
    path = speech_dir / "manifest.tsv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the evaluation corpus is missing; pass --speech DIR "
                                "(format: python -m bench.speech --help)")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [SpeechClip(file=row["file"], duration_s=float(row["duration_s"]),
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
        by_speaker: dict[str, list[SpeechClip]] = defaultdict(list)
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

    def speech_span(self, file: str) -> tuple[float, float]:
        """(start, end) in seconds of the speech in ``file``: its first and last 10 ms frame
        within ``TRIM_BELOW_PEAK_DB`` of the loudest, widened by ``TRIM_MARGIN_S``."""
        samples = self.audio(file)
        hop = self.rate // 100
        frames = samples[:len(samples) // hop * hop].astype(np.float64).reshape(-1, hop)
        if not len(frames):
            return 0.0, len(samples) / self.rate
        level = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-9)
        loud = np.flatnonzero(level >= level.max() - TRIM_BELOW_PEAK_DB)
        start = max(0.0, float(loud[0]) * hop / self.rate - TRIM_MARGIN_S)
        end = min(len(samples) / self.rate, float(loud[-1] + 1) * hop / self.rate + TRIM_MARGIN_S)
        return round(start, 3), round(end, 3)

    def clip(self, piece: Piece) -> np.ndarray[Any, Any]:
        """The samples ``piece`` plays."""
        samples = self.audio(piece.file)
        if piece.clip_s is None:
            return samples
        return samples[round(piece.clip_s[0] * self.rate):round(piece.clip_s[1] * self.rate)]


class _Party:
    """One speaker's utterances, shuffled, reused in a new order once all were said."""

    def __init__(self, utterances: list[SpeechClip], rng: random.Random) -> None:
        self._all, self._rng = utterances, rng
        self._queue: list[SpeechClip] = []

    def next_fitting(self, room_s: float) -> SpeechClip | None:
        if not self._queue:
            self._queue = self._rng.sample(self._all, len(self._all))
        for index, utterance in enumerate(self._queue):
            if utterance.duration_s <= room_s:
                return self._queue.pop(index)
        fitting = [u for u in self._all if u.duration_s <= room_s]
        return self._rng.choice(fitting) if fitting else None


def lay_out(corpus: Corpus, *, seconds: float, rng: random.Random, lead_s: float = 0.5,
            tail_s: float = 1.0, gap_s: tuple[float, float] = (0.4, 1.2),
            continuous: bool = False, turn_s: tuple[float, float] = CONTINUOUS_TURN_S,
            pause_s: tuple[float, float] = CONTINUOUS_PAUSE_S,
            ) -> tuple[tuple[str, str], list[Turn]]:
    """Two distinct speakers' turns, alternating, filling about ``seconds``: one utterance each,
    or with ``continuous`` about ``turn_s`` of one speaker's utterances joined by ``pause_s``."""
    speakers = tuple(rng.sample(sorted(corpus.by_speaker), 2))
    parties = [_Party(corpus.by_speaker[s], rng) for s in speakers]
    turns: list[Turn] = []
    t, channel = lead_s, 0
    while True:
        room = seconds - tail_s - t
        if continuous:
            turn = _continuous_turn(corpus, parties[channel], channel, speakers[channel], t,
                                    min(room, rng.uniform(*turn_s)), rng, pause_s)
        else:
            turn = _single_turn(parties[channel], channel, speakers[channel], t, room)
        if turn is None:
            break
        turns.append(turn)
        t += turn.duration_s + rng.uniform(*gap_s)
        channel ^= 1
    if not turns:  # shorter than any utterance: one turn of the shortest
        shortest = min(corpus.by_speaker[speakers[0]], key=lambda u: u.duration_s)
        turns.append(Turn(0, lead_s, shortest.duration_s, shortest.file, speakers[0],
                          shortest.text))
    return (speakers[0], speakers[1]), turns


def _single_turn(party: _Party, channel: int, speaker: str, start_s: float,
                 room_s: float) -> Turn | None:
    utterance = party.next_fitting(room_s)
    if utterance is None:
        return None
    return Turn(channel, start_s, utterance.duration_s, utterance.file, speaker, utterance.text)


def _continuous_turn(corpus: Corpus, party: _Party, channel: int, speaker: str, start_s: float,
                     length_s: float, rng: random.Random,
                     pause_s: tuple[float, float]) -> Turn | None:
    """Utterances of one speaker, trimmed to their speech, each after a ``pause_s`` pause,
    while they fit in ``length_s``; ``None`` when not even one fits."""
    pieces: list[Piece] = []
    offset = 0.0
    while True:
        # Manifest durations include the silence trimmed off, so a longer one may still fit.
        utterance = party.next_fitting(length_s - offset + _UNTRIMMED_SLACK_S)
        if utterance is None:
            break
        clip = corpus.speech_span(utterance.file)
        duration = round(clip[1] - clip[0], 3)
        if offset + duration > length_s:
            break
        pieces.append(Piece(round(offset, 3), duration, utterance.file, utterance.text, clip))
        offset += duration + rng.uniform(*pause_s)
    if not pieces:
        return None
    end = pieces[-1].offset_s + pieces[-1].duration_s
    return Turn(channel, start_s, round(end, 3), "+".join(p.file for p in pieces), speaker,
                " ".join(p.text for p in pieces), tuple(pieces))


def render(corpus: Corpus, turns: list[Turn], *, tail_s: float = 1.0) -> np.ndarray[Any, Any]:
    """The turns as a (frames, 2) int16 array at ``corpus.rate``."""
    rate = corpus.rate
    placed = [(turn.channel, round((turn.start_s + piece.offset_s) * rate), corpus.clip(piece))
              for turn in turns for piece in turn.parts]
    ends = [begin + len(samples) for _, begin, samples in placed]
    audio = np.zeros((max(ends) + int(tail_s * rate), 2), dtype=np.int16)
    for channel, begin, samples in placed:
        audio[begin:begin + len(samples), channel] = samples
    return audio


def write_wav(path: Path, audio: np.ndarray[Any, Any], rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(audio.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(audio.astype("<i2")).tobytes())


def build_calls(corpus: Corpus, *, count: int, seconds: float, seed: int, out_dir: Path,
                prefix: str, continuous: bool = False) -> list[CallPlan]:
    """``count`` calls of about ``seconds`` each, as WAVs in ``out_dir`` (``continuous``: long
    turns without a pause, see :func:`lay_out`)."""
    rng = random.Random(seed)
    plans = []
    for index in range(count):
        speakers, turns = lay_out(corpus, seconds=seconds, rng=rng, continuous=continuous)
        audio = render(corpus, turns)
        wav = out_dir / f"call-{index}.wav"
        write_wav(wav, audio, corpus.rate)
        plans.append(CallPlan(call_id=f"{prefix}-call-{index}", wav=wav, rate=corpus.rate,
                              duration_s=round(len(audio) / corpus.rate, 3), speakers=speakers,
                              turns=turns))
    return plans
