"""Voice-activity endpointing: 16 kHz PCM16 in, finished utterances out (no I/O).

One :class:`Endpointer` per call channel. It runs WebRTC's VAD on fixed frames and turns
the voiced/unvoiced decisions into utterances, the unit that the transcriber decodes:

* **open** when voiced frames cover at least ``start_ms`` of the last few frames (the
  trigger window, ``2 * start_frames - 1`` frames, as in py-webrtcvad's classic example);
  the utterance begins ``padding_ms`` before its first voiced frame, so soft onsets are kept;
* **close** after ``end_silence_ms`` of unvoiced frames, or, once the utterance holds
  ``soft_after_ms`` of audio, after ``soft_silence_ms`` (a breath between sentences of a long
  turn: the turn goes out sentence by sentence and each decode window stays short); the audio ends
  ``min(end_silence_ms, 150)`` ms after the last voiced frame (``voiced_end_ms``), so the
  trailing silence is not decoded and the utterance can be finalised quickly;
* **drop** utterances whose voiced span (first to last voiced frame) is shorter than
  ``min_utterance_ms``: clicks, breaths and the onset of line noise (but never the last
  piece of a cut utterance, however short);
* **cut** an utterance that reaches ``max_utterance_ms``: at the middle of the most recent
  pause (an unvoiced run of at least 90 ms) in its last third, else right there; the rest
  carries on as a new open utterance, so no sample is lost and none is repeated.

The timeline comes only from sample counts: sample ``n`` of the stream is at
``origin_ms + n / 16`` ms, whatever the sizes of the chunks given to :meth:`Endpointer.push`
(odd byte counts included). Memory is bounded by the open utterance (at most
``max_utterance_ms`` of audio) plus a ring of ``padding_ms`` + trigger-window frames.

Bad keyword arguments raise :class:`ValueError` (a programming error, not a runtime
condition, so not part of the :mod:`workers.errors` tree).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

__all__ = [
    "DEFAULT_AGGRESSIVENESS", "DEFAULT_END_SILENCE_MS", "DEFAULT_FRAME_MS", "DEFAULT_MAX_GAIN_DB",
    "DEFAULT_MAX_UTTERANCE_MS", "DEFAULT_MIN_UTTERANCE_MS", "DEFAULT_PADDING_MS",
    "DEFAULT_SOFT_AFTER_MS", "DEFAULT_SOFT_SILENCE_MS", "DEFAULT_START_MS", "SAMPLE_RATE",
    "Endpointer", "InputGain", "Utterance",
]

#: The only rate the endpointer takes: callers resample first.
SAMPLE_RATE = 16_000
_BYTES_PER_SAMPLE = 2
_SAMPLES_PER_MS = SAMPLE_RATE // 1000
#: An unvoiced run at least this long is a pause where a long utterance may be cut.
_PAUSE_MS = 90
#: Longest trailing silence kept after the last voiced frame.
_MAX_TAIL_MS = 150

# Defaults of the endpointer's settings, their one home: VadConfig (calls.py) and
# TranscribeSettings (settings.py) use these names.
DEFAULT_AGGRESSIVENESS = 2
DEFAULT_FRAME_MS = 30
DEFAULT_START_MS = 90
DEFAULT_END_SILENCE_MS = 360
DEFAULT_PADDING_MS = 210
DEFAULT_MIN_UTTERANCE_MS = 240
DEFAULT_MAX_UTTERANCE_MS = 15_000
DEFAULT_MAX_GAIN_DB = 24.0
DEFAULT_SOFT_AFTER_MS = 0
DEFAULT_SOFT_SILENCE_MS = 150


@dataclass(frozen=True, slots=True)
class Utterance:
    """A stretch of speech on one channel, ready to decode."""

    #: Position of ``pcm``'s first sample on the channel timeline, in ms (padding included).
    start_ms: int
    #: Position just after ``pcm``'s last sample, in ms.
    end_ms: int
    #: End of the last voiced frame: the true end of speech, used to measure latency.
    voiced_end_ms: int
    #: 16 kHz PCM16 little-endian mono.
    pcm: bytes
    #: True when cut at ``max_utterance_ms`` rather than closed by silence.
    forced_cut: bool

    @property
    def duration_ms(self) -> int:
        """Length of ``pcm`` in ms."""
        return self.end_ms - self.start_ms


def _frames_for(ms: int, frame_ms: int) -> int:
    """Whole frames that cover ``ms`` (rounded up)."""
    return -(-ms // frame_ms)


class InputGain:
    """Automatic gain for the VAD's input only (the utterances keep the audio as it came).

    WebRTC's VAD ignores quiet speech: a line whose speech peaks at -50 dBFS is mostly
    "unvoiced" at aggressiveness 2 (the FLEURS clips of the evaluation set lost whole
    sentences), though whisper transcribes it well. The gain lifts the channel's speech level
    toward ``target_dbfs``, by at most ``max_gain_db``, and never lifts the channel's noise floor
    above ``noise_ceiling_dbfs``, so steady hiss or hum is not turned into "speech".

    Speech level: the loudest recent frame (instant attack, ``decay_db_per_s`` release). Noise
    floor: the quietest recent frame (instant fall, ``rise_db_per_s`` rise). Digital silence
    (below -100 dBFS) moves neither.
    """

    def __init__(self, *, max_gain_db: float = DEFAULT_MAX_GAIN_DB, target_dbfs: float = -24.0,
                 noise_ceiling_dbfs: float = -55.0, decay_db_per_s: float = 2.0,
                 rise_db_per_s: float = 1.0, frame_ms: int = 30) -> None:
        self._max_gain_db = max_gain_db
        self._target = target_dbfs
        self._ceiling = noise_ceiling_dbfs
        self._decay = decay_db_per_s * frame_ms / 1000
        self._rise = rise_db_per_s * frame_ms / 1000
        self._level: float | None = None
        self._floor: float | None = None

    @property
    def gain_db(self) -> float:
        if self._level is None or self._floor is None or self._max_gain_db <= 0:
            return 0.0
        return max(0.0, min(self._max_gain_db, self._target - self._level,
                            self._ceiling - self._floor))

    def apply(self, frame: bytes) -> bytes:
        """The frame as the VAD should hear it."""
        if self._max_gain_db <= 0:
            return frame
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        rms = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
        level = 20 * float(np.log10(rms / 32768)) if rms > 0 else -120.0
        if level > -100.0:
            if self._level is None or level > self._level:
                self._level = level
            else:
                self._level = max(level, self._level - self._decay)
            if self._floor is None or level < self._floor:
                self._floor = level
            else:
                self._floor = min(level, self._floor + self._rise)
        gain_db = self.gain_db
        if gain_db < 0.5:
            return frame
        louder = np.clip(samples * 10 ** (gain_db / 20), -32768, 32767)
        return bytes(louder.astype("<i2").tobytes())


def _check_config(*, aggressiveness: int, frame_ms: int, start_ms: int, end_silence_ms: int,
                  padding_ms: int, min_utterance_ms: int, max_utterance_ms: int) -> None:
    """Raise ValueError, saying what was expected, unless an :class:`Endpointer` can work with
    these settings."""
    if aggressiveness not in (0, 1, 2, 3):
        raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
    if frame_ms not in (10, 20, 30):
        raise ValueError(f"frame_ms must be 10, 20 or 30 (WebRTC VAD), got {frame_ms!r}")
    for name, value in (("start_ms", start_ms), ("end_silence_ms", end_silence_ms)):
        if value < frame_ms:
            raise ValueError(f"{name} must be at least frame_ms ({frame_ms}), got {value}")
    if padding_ms < 0 or min_utterance_ms < 0:
        raise ValueError(
            f"padding_ms and min_utterance_ms must be >= 0, got {padding_ms}, "
            f"{min_utterance_ms}"
        )
    shortest = 3 * max(end_silence_ms, padding_ms + start_ms)
    if max_utterance_ms < shortest:
        raise ValueError(
            "max_utterance_ms must be at least 3 x max(end_silence_ms, padding_ms + "
            f"start_ms) = {shortest}, got {max_utterance_ms}"
        )


class Endpointer:
    """Splits one channel's 16 kHz PCM16 stream into utterances with WebRTC VAD."""

    def __init__(
        self,
        *,
        aggressiveness: int = DEFAULT_AGGRESSIVENESS,
        frame_ms: int = DEFAULT_FRAME_MS,
        start_ms: int = DEFAULT_START_MS,
        end_silence_ms: int = DEFAULT_END_SILENCE_MS,
        padding_ms: int = DEFAULT_PADDING_MS,
        min_utterance_ms: int = DEFAULT_MIN_UTTERANCE_MS,
        max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS,
        origin_ms: int = 0,
        max_gain_db: float = DEFAULT_MAX_GAIN_DB,
        soft_after_ms: int = DEFAULT_SOFT_AFTER_MS,
        soft_silence_ms: int = DEFAULT_SOFT_SILENCE_MS,
    ) -> None:
        _check_config(aggressiveness=aggressiveness, frame_ms=frame_ms, start_ms=start_ms,
                      end_silence_ms=end_silence_ms, padding_ms=padding_ms,
                      min_utterance_ms=min_utterance_ms, max_utterance_ms=max_utterance_ms)
        self._aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        self._max_gain_db = max_gain_db
        self._gain = InputGain(max_gain_db=max_gain_db, frame_ms=frame_ms)
        self._frame_ms = frame_ms
        self._frame_bytes = frame_ms * _SAMPLES_PER_MS * _BYTES_PER_SAMPLE
        self._start_frames = _frames_for(start_ms, frame_ms)
        self._window_frames = 2 * self._start_frames - 1
        self._padding_frames = _frames_for(padding_ms, frame_ms)
        self._end_frames = _frames_for(end_silence_ms, frame_ms)
        self._tail_frames = _frames_for(min(end_silence_ms, _MAX_TAIL_MS), frame_ms)
        self._pause_frames = _frames_for(_PAUSE_MS, frame_ms)
        self._min_ms = min_utterance_ms
        self._max_frames = max_utterance_ms // frame_ms
        #: Frames after which a shorter pause closes the utterance (0: never).
        self._soft_after_frames = soft_after_ms // frame_ms if soft_after_ms > 0 else 0
        self._soft_frames = min(self._end_frames, _frames_for(soft_silence_ms, frame_ms))
        self._origin_ms = origin_ms

        #: Bytes not yet making a whole frame (at most one frame minus one byte).
        self._pending = bytearray()
        #: Samples consumed into frames (or discarded by flush): the stream position.
        self._samples = 0
        #: Recent frames while not in speech: (first sample, pcm, voiced).
        self._ring: deque[tuple[int, bytes, bool]] = deque(
            maxlen=self._padding_frames + self._window_frames
        )
        # The open utterance: its first sample, frames and their VAD decisions.
        self._open_start: int | None = None
        self._frames: list[bytes] = []
        self._voiced: list[bool] = []
        self._last_voiced = -1  # index in _frames of the last voiced frame, -1 if none
        self._silence_run = 0  # unvoiced frames since then
        self._continued = False  # the open utterance is the rest of a cut one

    # ---- public API ---------------------------------------------------------------------

    @property
    def in_speech(self) -> bool:
        """True while an utterance is open."""
        return self._open_start is not None

    @property
    def open_start_ms(self) -> int | None:
        """Start of the open utterance on the timeline, or None outside speech."""
        return None if self._open_start is None else self._ms(self._open_start)

    def open_audio(self) -> bytes:
        """PCM of the open utterance so far (empty outside speech), for interim decoding."""
        return b"".join(self._frames)

    @property
    def open_voiced_end_ms(self) -> int | None:
        """End of the open utterance's last voiced frame (None outside speech or before one)."""
        if self._open_start is None or self._last_voiced < 0:
            return None
        return self._ms(self._open_start + (self._last_voiced + 1) * self._frame_ms
                        * _SAMPLES_PER_MS)

    @property
    def open_bytes(self) -> int:
        """Bytes of PCM in the open utterance so far (0 outside speech)."""
        return len(self._frames) * self._frame_bytes

    def pending_close(self) -> Utterance | None:
        """The utterance a close would produce if no voiced frame follows, once the trailing
        silence holds the tail a close keeps (its audio is then settled: byte for byte what
        the close will return); None before that, outside speech, or if too short to keep.
        Lets the transcriber decode an utterance while the end-of-speech wait runs."""
        if self._open_start is None or self._last_voiced < 0:
            return None
        end = self._last_voiced + 1 + self._tail_frames
        if len(self._frames) < end:
            return None
        return self._utterance(end, forced=False)

    def quietest_ms(self, around_ms: int, radius_ms: int) -> int:
        """Start of the quietest frame of the open utterance within ``radius_ms`` of
        ``around_ms`` (the nearest of equals): where to cut between two words whose times are
        only known roughly. ``around_ms`` itself outside speech or with no frame in reach."""
        if self._open_start is None or not self._frames:
            return around_ms
        start_ms = self._ms(self._open_start)
        first = max(0, (around_ms - radius_ms - start_ms) // self._frame_ms)
        last = min(len(self._frames) - 1, (around_ms + radius_ms - start_ms) // self._frame_ms)
        if first > last:
            return around_ms
        levels = [(float(np.mean(np.abs(np.frombuffer(self._frames[i], dtype="<i2"),
                                        dtype=np.float32))),
                   abs(start_ms + i * self._frame_ms - around_ms), i)
                  for i in range(first, last + 1)]
        return start_ms + min(levels)[2] * self._frame_ms

    def drop_before(self, ms: int) -> int | None:
        """Forget the open utterance's audio before ``ms`` (rounded down to a frame), already
        transcribed elsewhere (a committed sentence); what is left carries on as the open
        utterance, never dropped as too short. Returns its new start, None outside speech."""
        if self._open_start is None:
            return None
        start_ms = self._ms(self._open_start)
        frames = max(0, min((ms - start_ms) // self._frame_ms, len(self._frames)))
        if frames:
            self._set_open(self._open_start + frames * self._frame_ms * _SAMPLES_PER_MS,
                           self._frames[frames:], self._voiced[frames:])
            self._continued = True
        return self._ms(self._open_start)

    def push(self, pcm16k: bytes) -> list[Utterance]:
        """Feed 16 kHz PCM16 LE mono of any length; return the utterances it finished."""
        self._pending += pcm16k
        out: list[Utterance] = []
        size = self._frame_bytes
        whole = len(self._pending) // size * size
        for offset in range(0, whole, size):
            self._on_frame(bytes(self._pending[offset : offset + size]), out)
        del self._pending[:whole]
        return out

    def flush(self) -> list[Utterance]:
        """End of stream: close the open utterance (if long enough) and reset.

        A trailing partial frame is discarded but still counted on the timeline, and the VAD
        starts afresh, so audio pushed afterwards is endpointed like a new stream that
        continues at the right position.
        """
        out: list[Utterance] = []
        if self._open_start is not None:
            self._close(out)
        self._samples += len(self._pending) // _BYTES_PER_SAMPLE
        self._pending.clear()
        self._ring.clear()
        self._vad = webrtcvad.Vad(self._aggressiveness)
        self._gain = InputGain(max_gain_db=self._max_gain_db, frame_ms=self._frame_ms)
        return out

    # ---- frames -------------------------------------------------------------------------

    def _ms(self, sample: int) -> int:
        return self._origin_ms + sample // _SAMPLES_PER_MS

    def _on_frame(self, frame: bytes, out: list[Utterance]) -> None:
        voiced = self._vad.is_speech(self._gain.apply(frame), SAMPLE_RATE)
        first_sample = self._samples
        self._samples += len(frame) // _BYTES_PER_SAMPLE
        if self._open_start is None:
            self._ring.append((first_sample, frame, voiced))
            self._maybe_open()
            return
        self._frames.append(frame)
        self._voiced.append(voiced)
        if voiced:
            self._last_voiced = len(self._frames) - 1
            self._silence_run = 0
        else:
            self._silence_run += 1
        if self._silence_run >= self._end_frames or (
                self._soft_after_frames and len(self._frames) >= self._soft_after_frames
                and self._silence_run >= self._soft_frames):
            self._close(out)
        elif len(self._frames) >= self._max_frames:
            self._cut(out)

    def _maybe_open(self) -> None:
        """Open an utterance if the trigger window holds enough voiced frames."""
        ring = list(self._ring)
        window = ring[-self._window_frames :]
        if sum(voiced for _, _, voiced in window) < self._start_frames:
            return
        onset = len(ring) - len(window) + next(i for i, f in enumerate(window) if f[2])
        begin = max(0, onset - self._padding_frames)
        self._ring.clear()
        self._continued = False
        self._set_open(ring[begin][0], [f[1] for f in ring[begin:]], [f[2] for f in ring[begin:]])

    def _set_open(self, start: int, frames: list[bytes], voiced: list[bool]) -> None:
        """Make ``frames`` (starting at sample ``start``) the open utterance."""
        self._open_start = start
        self._frames = frames
        self._voiced = voiced
        self._last_voiced = max((i for i, v in enumerate(voiced) if v), default=-1)
        self._silence_run = len(voiced) - 1 - self._last_voiced

    def _utterance(self, end: int, *, forced: bool) -> Utterance | None:
        """The open utterance's first ``end`` frames, or None if too little speech."""
        assert self._open_start is not None
        voiced = self._voiced[:end]
        if True not in voiced:
            return None
        first = voiced.index(True)
        last = end - 1 - voiced[::-1].index(True)
        span_ms = (last + 1 - first) * self._frame_ms
        if span_ms < self._min_ms and not (forced or self._continued):
            return None  # too short to be speech; never the end of a long utterance
        frame_samples = self._frame_ms * _SAMPLES_PER_MS
        return Utterance(
            start_ms=self._ms(self._open_start),
            end_ms=self._ms(self._open_start + end * frame_samples),
            voiced_end_ms=self._ms(self._open_start + (last + 1) * frame_samples),
            pcm=b"".join(self._frames[:end]),
            forced_cut=forced,
        )

    def _close(self, out: list[Utterance]) -> None:
        """Close the open utterance on silence (or flush); leftover silence goes to the ring."""
        assert self._open_start is not None
        end = min(len(self._frames), self._last_voiced + 1 + self._tail_frames)
        if self._last_voiced < 0:
            end = 0
        utterance = self._utterance(end, forced=False)
        if utterance is not None:
            out.append(utterance)
        frame_samples = self._frame_ms * _SAMPLES_PER_MS
        for i in range(end, len(self._frames)):
            self._ring.append(
                (self._open_start + i * frame_samples, self._frames[i], self._voiced[i])
            )
        self._open_start = None
        self._frames, self._voiced = [], []
        self._last_voiced, self._silence_run = -1, 0
        self._continued = False

    def _cut(self, out: list[Utterance]) -> None:
        """Cut an utterance at max length; the remainder stays open."""
        assert self._open_start is not None
        cut = self._pause_cut() or len(self._frames)
        utterance = self._utterance(cut, forced=True)
        if utterance is not None:
            out.append(utterance)
        frame_samples = self._frame_ms * _SAMPLES_PER_MS
        self._set_open(
            self._open_start + cut * frame_samples, self._frames[cut:], self._voiced[cut:]
        )
        self._continued = True

    def _pause_cut(self) -> int:
        """Index at the middle of the latest pause in the last third, or 0 if none."""
        n = len(self._voiced)
        low = n - n // 3
        run_end = n  # exclusive end of the unvoiced run being measured
        for i in range(n - 1, low - 2, -1):
            if i >= low and not self._voiced[i]:
                continue
            run_start = i + 1
            if run_end - run_start >= self._pause_frames:
                return (run_start + run_end) // 2
            run_end = i
        return 0
