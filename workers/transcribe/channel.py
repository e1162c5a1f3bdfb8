"""One call channel's transcription state (pure: no Kafka, no model): ``seq`` order,
resampling to 16 kHz, VAD endpointing, the tokens of the audio held until nothing needs it,
and, for a channel taken over mid-call, what its previous owner already produced. The
:class:`~workers.transcribe.calls.CallTracker` holds one per channel of each call.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from workers import metrics
from workers.records import AudioChunk, Role
from workers.transcribe import vad as _vad
from workers.transcribe.asr import AsrResult
from workers.transcribe.stable import StablePrefix
from workers.transcribe.vad import Endpointer, Utterance

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
#: Audio kept unacknowledged before the open utterance (or the stream position outside
#: speech): a restarted worker replays it first, so its VAD has the padding and enough history
#: to cut the utterance where its predecessor did (same start, same id).
KEEP_BEHIND_MS = 1000
#: How far from whisper's word boundary a sentence may be cut, at the quietest frame.
CUT_SEARCH_MS = 240


@dataclass(frozen=True, slots=True)
class VadConfig:
    aggressiveness: int = _vad.DEFAULT_AGGRESSIVENESS
    frame_ms: int = _vad.DEFAULT_FRAME_MS
    start_ms: int = _vad.DEFAULT_START_MS
    end_silence_ms: int = _vad.DEFAULT_END_SILENCE_MS
    padding_ms: int = _vad.DEFAULT_PADDING_MS
    min_utterance_ms: int = _vad.DEFAULT_MIN_UTTERANCE_MS
    max_utterance_ms: int = _vad.DEFAULT_MAX_UTTERANCE_MS
    #: Most gain the VAD's input gets on a quiet line, in dB (0: none).
    max_gain_db: float = _vad.DEFAULT_MAX_GAIN_DB
    #: Once an utterance holds this much audio, a pause of soft_silence_ms closes it (0: off).
    soft_after_ms: int = _vad.DEFAULT_SOFT_AFTER_MS
    soft_silence_ms: int = _vad.DEFAULT_SOFT_SILENCE_MS
    #: Decode an open utterance again after this much new audio (0: no interims). Interims
    #: are scheduled from spare decoder time (:mod:`workers.transcribe.pipeline`), so under
    #: load they come less often.
    interim_ms: int = 0
    #: Decode an utterance while the end-of-speech wait runs (once its trailing silence is
    #: settled), so its final goes out as the wait ends instead of a decode later.
    early: bool = True
    #: An early decode commits its words but the last (the speaker paused after them).
    commit_at_pauses: bool = True


class ChannelStream:
    """One channel: sequence check, resampling to 16 kHz, VAD endpointing, held tokens."""

    def __init__(self, chunk: AudioChunk, vad: VadConfig, *,
                 produced_until: int | None = None) -> None:
        """``produced_until``: for a stream taken over mid-call, where the last final of this
        channel ends (:mod:`workers.transcribe.produced`); what is cut before it is not
        transcribed again."""
        self.channel = chunk.channel
        self.role: Role = chunk.role
        # Where the channel's role changed (t_ms, role): a leg becomes ``user`` once the user
        # joined the call (client:joinCall). Rare, so a short history is enough.
        self._roles: collections.deque[tuple[int, Role]] = collections.deque(
            [(chunk.t_ms, chunk.role)], maxlen=16)
        self.rate = chunk.rate
        # The first chunk seen sets the origin: 0 for a new call, later after a restart.
        self.next_seq = chunk.seq
        self.samples = chunk.t_ms * self.rate // 1000
        self.resumed = chunk.seq > 0
        self.done = False
        self._interim_bytes = vad.interim_ms * WHISPER_RATE // 1000 * 2
        self._last_interim_bytes = 0
        self._early = vad.early
        self._early_end_ms: int | None = None  # end of the last early decode handed out
        #: The latest early decode: (utterance id, its end, the result).
        self.early_result: tuple[str, int, AsrResult] | None = None
        # float32, rounded here: soxr dithers int16 output at random, which made the VAD's
        # decisions on near-silence, and so utterance ids, differ from run to run.
        self._resampler = (soxr.ResampleStream(self.rate, WHISPER_RATE, 1, dtype="float32")
                           if self.rate != WHISPER_RATE else None)
        self._endpointer = Endpointer(
            aggressiveness=vad.aggressiveness, frame_ms=vad.frame_ms, start_ms=vad.start_ms,
            end_silence_ms=vad.end_silence_ms, padding_ms=vad.padding_ms,
            min_utterance_ms=vad.min_utterance_ms, max_utterance_ms=vad.max_utterance_ms,
            max_gain_db=vad.max_gain_db, soft_after_ms=vad.soft_after_ms,
            soft_silence_ms=vad.soft_silence_ms,
            origin_ms=chunk.t_ms - chunk.t_ms % vad.frame_ms,
        )
        # VAD frames sit on the same grid (multiples of frame_ms from the call's start) however
        # far into the call this stream begins, so a restarted worker cuts utterances, and so
        # derives their ids, exactly as its predecessor did.
        self._endpointer.push(bytes(chunk.t_ms % vad.frame_ms * WHISPER_RATE // 1000 * 2))
        self._held: collections.deque[tuple[int, Any]] = collections.deque()
        self._decoded_until_ms = 0  # end of the last utterance handed to the decoder
        self._produced_until = produced_until if chunk.seq > 0 else None
        if self._produced_until is not None:
            self._decoded_until_ms = self._produced_until
        if self.resumed:
            log.info("call %s channel %d: taken over at %d ms; its finals so far end at %s",
                     chunk.call_id, self.channel, chunk.t_ms,
                     "unknown" if produced_until is None else f"{produced_until} ms")
        self._min_utterance_ms = vad.min_utterance_ms
        #: Each open (or not yet final) utterance's hypotheses and committed words, by id.
        self.stability: dict[str, StablePrefix] = {}
        self.finalized: collections.deque[str] = collections.deque(maxlen=64)

    @property
    def position_ms(self) -> int:
        return self.samples * 1000 // self.rate

    def note_role(self, chunk: AudioChunk) -> None:
        """Record the role of ``chunk``'s samples (every chunk carries it)."""
        if chunk.role != self.role:
            self.role = chunk.role
            self._roles.append((chunk.t_ms, chunk.role))

    def role_at(self, ms: int) -> Role:
        """The role of the speaker on this channel at ``ms`` from the call's start."""
        role = self._roles[0][1]
        for t_ms, changed in self._roles:
            if t_ms > ms:
                break
            role = changed
        return role

    def feed(self, chunk: AudioChunk, token: Any) -> tuple[list[Utterance], bool]:
        """Process one chunk in ``seq`` order: (finished utterances, whether the open one is
        due an interim).
        Redeliveries are skipped (their token held like any other); gaps are filled with
        silence so the timeline stays true."""
        if token is not None:
            self._held.append((chunk.t_ms + chunk.samples * 1000 // chunk.rate, token))
        if self.done or chunk.seq < self.next_seq:
            return [], False
        pcm = chunk.pcm
        if chunk.seq > self.next_seq:
            missing = max(0, chunk.t_ms * self.rate // 1000 - self.samples)
            log.warning("call %s channel %d: seq %d..%d missing; %d samples of silence",
                        chunk.call_id, self.channel, self.next_seq, chunk.seq - 1, missing)
            metrics.RECORDS_SKIPPED.labels("audio", "seq_gap").inc()
            pcm = bytes(missing * 2) + pcm
        self.next_seq = chunk.seq + 1
        self.samples += len(pcm) // 2
        utterances = self._endpointer.push(self._resample(pcm, last=chunk.last))
        if chunk.last:
            self.done = True
            utterances += self._endpointer.flush()
        if self._produced_until is not None:
            utterances = [u for u in map(self._unproduced, utterances) if u is not None]
        if utterances:
            self._last_interim_bytes = 0
            self._decoded_until_ms = max(u.end_ms for u in utterances)
        return utterances, self.interim_due

    def _unproduced(self, utterance: Utterance) -> Utterance | None:
        """``utterance`` less what the previous owner of the call produced: ``None`` when its
        speech ends before ``produced_until`` (or what is left after it is too short), else
        the part from there on (whose id, from its start, is the one the previous owner
        would have given it)."""
        until = self._produced_until
        if until is None or utterance.start_ms >= until:
            return utterance
        if utterance.voiced_end_ms - until < self._min_utterance_ms:
            log.info("channel %d: %d-%d ms was transcribed before the takeover; not again",
                     self.channel, utterance.start_ms, utterance.end_ms)
            return None
        log.info("channel %d: %d-%d ms was transcribed before the takeover; from %d ms on",
                 self.channel, utterance.start_ms, utterance.end_ms, until)
        skip = (until - utterance.start_ms) * WHISPER_RATE // 1000 * 2
        return dataclasses.replace(utterance, start_ms=until, pcm=utterance.pcm[skip:])

    @property
    def _in_produced(self) -> bool:
        """The open utterance began before ``produced_until``: no interims or early decodes
        of it (its final is trimmed, or dropped, when it closes)."""
        if self._produced_until is None:
            return False
        start = self._endpointer.open_start_ms
        if start is not None and start < self._produced_until:
            return True
        if self.position_ms >= self._produced_until:
            self._produced_until = None  # past it: an ordinary stream from now on
        return False

    @property
    def interim_due(self) -> bool:
        """An utterance is open with ``interim_ms`` of audio not yet in an interim."""
        return bool(self._interim_bytes and self._endpointer.in_speech
                    and not self._in_produced
                    and self._endpointer.open_bytes - self._last_interim_bytes
                    >= self._interim_bytes)

    @property
    def open_start_ms(self) -> int | None:
        return self._endpointer.open_start_ms

    @property
    def close_pending(self) -> bool:
        """The open utterance holds a committed sentence that its next interim may close."""
        start = self._endpointer.open_start_ms
        if start is None:
            return False
        return any(s.start_ms == start and s.close_pending for s in self.stability.values())

    @property
    def early_due(self) -> bool:
        """The open utterance's trailing silence is settled and not yet decoded early."""
        if not self._early or self._in_produced:
            return False
        pending = self._endpointer.pending_close()
        return pending is not None and pending.end_ms != self._early_end_ms

    def early_snapshot(self) -> Utterance | None:
        """The utterance as a close would cut it now, for an early decode (it also counts
        as the open utterance's latest interim)."""
        pending = self._endpointer.pending_close() if self._early else None
        if pending is not None:
            self._early_end_ms = pending.end_ms
            self._last_interim_bytes = self._endpointer.open_bytes
        return pending

    def interim_snapshot(self) -> Utterance | None:
        """The open utterance so far (None outside speech), as the next interim decodes it."""
        start = self._endpointer.open_start_ms
        if start is None:
            return None
        audio = self._endpointer.open_audio()
        self._last_interim_bytes = len(audio)
        end = start + len(audio) // 32
        voiced_end = self._endpointer.open_voiced_end_ms
        return Utterance(start_ms=start, end_ms=end,
                         voiced_end_ms=end if voiced_end is None else min(end, voiced_end),
                         pcm=audio, forced_cut=False)

    def close_sentence(self, start_ms: int, cut_ms: int) -> int | None:
        """Forget the open utterance's audio before ``cut_ms``: a committed sentence ends
        there and went out as a final. The rest carries on as an utterance of its own; its
        new start is returned (None, nothing done, unless the open utterance starts at
        ``start_ms``)."""
        if self._endpointer.open_start_ms != start_ms:
            return None
        # Whisper's word times are rough (±0.1-0.2 s): cut in the quietest frame near them.
        cut_ms = self._endpointer.quietest_ms(cut_ms, CUT_SEARCH_MS)
        new_start = self._endpointer.drop_before(cut_ms)
        if new_start is None or new_start == start_ms:
            return None
        self._decoded_until_ms = max(self._decoded_until_ms, new_start)
        self._last_interim_bytes = self._endpointer.open_bytes
        return new_start

    def release(self) -> list[Any]:
        """Tokens no longer needed: those before the open utterance (less padding) or, outside
        speech, more than :data:`KEEP_BEHIND_MS` behind the stream."""
        keep_from = self._endpointer.open_start_ms
        if keep_from is None:
            keep_from = self.position_ms
        # A lead-in for the VAD of a worker that replays from here, but never audio of an
        # utterance already decoded: replaying that could cut a fragment of it again.
        keep_from = max(keep_from - KEEP_BEHIND_MS, self._decoded_until_ms)
        if self.done:
            keep_from = 1 << 62
        out = []
        while self._held and self._held[0][0] <= keep_from:
            out.append(self._held.popleft()[1])
        return out

    def _resample(self, pcm: bytes, *, last: bool) -> bytes:
        if self._resampler is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        out: np.ndarray[Any, Any] = self._resampler.resample_chunk(samples, last=last)
        return bytes(np.clip(np.rint(out * 32768.0), -32768, 32767).astype("<i2").tobytes())


__all__ = ["CUT_SEARCH_MS", "KEEP_BEHIND_MS", "WHISPER_RATE", "ChannelStream", "VadConfig"]
