"""Per-call transcription state (pure: no Kafka, no model).

Audio records go in; utterances to decode come out. Decoded text goes in; transcripts-topic
records come out, in liveCalls order: ``event:start`` first (held transcripts wait for it),
``transcript`` per utterance, ``event:callEnd`` once every channel's last chunk is processed.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

from workers import metrics
from workers.records import (
    AudioChunk,
    CallEnded,
    CallStarted,
    Role,
    transcript_id,
    transcript_record,
    utc_now_iso,
)
from workers.transcribe.asr import AsrResult
from workers.transcribe.vad import Endpointer, Utterance

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
_E164 = re.compile(r"^\+?[1-9]\d{6,14}$")


def e164(number: str) -> str:
    """``number`` as E.164 (``+`` and 7-15 digits) when it is one, else the empty string."""
    digits = re.sub(r"[\s().-]", "", number or "")
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not _E164.match(digits):
        return ""
    return digits if digits.startswith("+") else "+" + digits


@dataclass(frozen=True, slots=True)
class VadConfig:
    aggressiveness: int = 2
    frame_ms: int = 30
    start_ms: int = 90
    end_silence_ms: int = 360
    padding_ms: int = 210
    min_utterance_ms: int = 240
    max_utterance_ms: int = 15000


@dataclass(frozen=True, slots=True)
class Work:
    """One utterance of one call channel, ready for whisper."""

    call_id: str
    channel: int
    role: Role
    utterance: Utterance
    ready_at: float  # wall clock (time.time) when its last audio was processed


class ChannelStream:
    """One channel: sequence check, resampling to 16 kHz, VAD endpointing."""

    def __init__(self, chunk: AudioChunk, vad: VadConfig) -> None:
        self.channel = chunk.channel
        self.role: Role = chunk.role
        self.rate = chunk.rate
        self.next_seq = 0
        self.samples = 0
        self.done = False
        self._resampler = (soxr.ResampleStream(self.rate, WHISPER_RATE, 1, dtype="int16")
                           if self.rate != WHISPER_RATE else None)
        self._endpointer = Endpointer(
            aggressiveness=vad.aggressiveness, frame_ms=vad.frame_ms, start_ms=vad.start_ms,
            end_silence_ms=vad.end_silence_ms, padding_ms=vad.padding_ms,
            min_utterance_ms=vad.min_utterance_ms, max_utterance_ms=vad.max_utterance_ms,
        )

    def feed(self, chunk: AudioChunk) -> list[Utterance]:
        """Process one chunk in ``seq`` order; redeliveries are skipped, gaps filled with
        silence so the timeline stays true."""
        if self.done or chunk.seq < self.next_seq:
            return []
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
        return utterances

    def _resample(self, pcm: bytes, *, last: bool) -> bytes:
        if self._resampler is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out: np.ndarray[Any, Any] = self._resampler.resample_chunk(samples, last=last)
        return bytes(out.astype("<i2").tobytes())


@dataclass
class CallState:
    call_id: str
    started: CallStarted | None = None
    start_sent: bool = False
    channels: dict[int, ChannelStream] = field(default_factory=dict)
    channel_count: int | None = None
    ended: CallEnded | None = None
    held: list[dict[str, Any]] = field(default_factory=list)
    last_activity: float = field(default_factory=time.monotonic)

    @property
    def complete(self) -> bool:
        return (self.channel_count is not None and len(self.channels) == self.channel_count
                and all(c.done for c in self.channels.values()))


class CallTracker:
    """All calls one worker is transcribing."""

    def __init__(self, vad: VadConfig | None = None) -> None:
        self._vad = vad or VadConfig()
        self.calls: dict[str, CallState] = {}

    def _state(self, call_id: str) -> CallState:
        state = self.calls.get(call_id)
        if state is None:
            state = self.calls[call_id] = CallState(call_id)
        state.last_activity = time.monotonic()
        return state

    def on_started(self, event: CallStarted) -> list[dict[str, Any]]:
        state = self._state(event.call_id)
        state.started = event
        state.channel_count = event.channels
        return self._release(state)

    def on_ended(self, event: CallEnded) -> None:
        self._state(event.call_id).ended = event

    def on_audio(self, chunk: AudioChunk) -> list[Work]:
        state = self._state(chunk.call_id)
        state.channel_count = chunk.channels
        stream = state.channels.get(chunk.channel)
        if stream is None:
            stream = state.channels[chunk.channel] = ChannelStream(chunk, self._vad)
            metrics.TRANSCRIBE_ACTIVE_STREAMS.inc()
        now = time.time()
        return [Work(chunk.call_id, chunk.channel, stream.role, u, now)
                for u in stream.feed(chunk)]

    def on_transcribed(self, work: Work, result: AsrResult) -> list[dict[str, Any]]:
        """The transcript record for ``work`` (none when whisper heard no words)."""
        if not result.text:
            return []
        metrics.TRANSCRIBE_UTTERANCES.labels(work.role).inc()
        u = work.utterance
        message: dict[str, Any] = {
            "type": "transcript", "msg": result.text, "role": work.role,
            "offset": round(u.start_ms / 1000, 3),
        }
        if result.words:
            message["words"] = [
                {"word": w.word, "start": round(u.start_ms / 1000 + w.start_s, 3),
                 "end": round(u.start_ms / 1000 + w.end_s, 3)} for w in result.words
            ]
        record = transcript_record(
            work.call_id, message, record_id=transcript_id(work.call_id, work.channel, u.start_ms),
            channel=work.channel, audioStartMs=u.start_ms, audioEndMs=u.end_ms,
            voicedEndMs=u.voiced_end_ms, producedAtMs=int(time.time() * 1000),
        )
        return self._hold_or_release(self._state(work.call_id), [record])

    def finish_if_complete(self, call_id: str) -> list[dict[str, Any]]:
        """``event:callEnd`` (after a held ``event:start``) once the call is fully processed."""
        state = self.calls.get(call_id)
        if state is None or not state.complete:
            return []
        return self._finish(state)

    def _finish(self, state: CallState) -> list[dict[str, Any]]:
        out = self._release(state, force=True)
        timestamp = state.ended.timestamp if state.ended else utc_now_iso()
        out.append(transcript_record(
            state.call_id, {"type": "event:callEnd", "timestamp": timestamp},
            record_id=f"{state.call_id}:callEnd", producedAtMs=int(time.time() * 1000)))
        metrics.TRANSCRIBE_ACTIVE_STREAMS.dec(len(state.channels))
        del self.calls[state.call_id]
        return out

    def expire_idle(self, idle_s: float) -> list[dict[str, Any]]:
        """Close calls with no record for ``idle_s`` (their ingest died without an end)."""
        cutoff = time.monotonic() - idle_s
        out: list[dict[str, Any]] = []
        for state in [s for s in self.calls.values() if s.last_activity < cutoff]:
            log.warning("call %s: no audio for %.0fs; closing it", state.call_id, idle_s)
            out += self._finish(state)
        return out

    def _hold_or_release(self, state: CallState, records: list[dict[str, Any]],
                         ) -> list[dict[str, Any]]:
        if state.start_sent:
            return records
        state.held.extend(records)
        return []

    def _release(self, state: CallState, *, force: bool = False) -> list[dict[str, Any]]:
        if state.start_sent or (state.started is None and not force):
            return []
        state.start_sent = True
        started = state.started
        message = {
            "type": "event:start",
            "phone": e164(started.from_) if started else "",
            "timestamp": started.timestamp if started else utc_now_iso(),
        }
        out = [transcript_record(state.call_id, message, record_id=f"{state.call_id}:start",
                                 producedAtMs=int(time.time() * 1000))]
        out += state.held
        state.held = []
        return out
