"""Cuts a call's per-channel PCM into fixed-duration :class:`AudioChunk` records (pure).

``seq`` counts per channel from 0 without gaps; ``t_ms`` is derived from the number of samples
before the chunk, so the timeline is the audio's own, never a wall clock. For providers that
send each track on its own (Plivo, Twilio), :class:`TrackTimeline` says how much silence to
insert before a message so that each channel's sample count follows the provider's clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from workers.records import AudioChunk, Role


class Chunker:
    """Accumulates PCM16 mono per channel and yields chunks of ``chunk_ms``."""

    def __init__(self, *, call_id: str, rate: int, roles: Sequence[Role], chunk_ms: int) -> None:
        self.call_id = call_id
        self.rate = rate
        self.roles = tuple(roles)
        self._chunk_bytes = max(1, rate * chunk_ms // 1000) * 2
        self._buffers = [bytearray() for _ in self.roles]
        self._samples_out = [0] * len(self.roles)
        self._next_seq = [0] * len(self.roles)
        self._closed = False

    @property
    def channels(self) -> int:
        return len(self.roles)

    @property
    def samples_in(self) -> int:
        """Samples received on channel 0 so far (the call's audio duration in samples)."""
        return self._samples_out[0] + len(self._buffers[0]) // 2

    @property
    def position_ms(self) -> int:
        """The call's audio timeline position: milliseconds of audio received on channel 0."""
        return self.samples_in * 1000 // self.rate

    @property
    def last_seq(self) -> tuple[int, ...]:
        """The last ``seq`` emitted per channel (-1 when none)."""
        return tuple(s - 1 for s in self._next_seq)

    def push(self, channels: Sequence[bytes]) -> list[AudioChunk]:
        """Add one block of audio (one PCM16 byte string per channel); return full chunks."""
        if self._closed:
            raise RuntimeError("chunker already closed")
        if len(channels) != self.channels:
            raise ValueError(f"got {len(channels)} channels of audio; expected {self.channels}")
        out: list[AudioChunk] = []
        for index, pcm in enumerate(channels):
            buffer = self._buffers[index]
            buffer += pcm
            while len(buffer) >= self._chunk_bytes:
                out.append(self._emit(index, bytes(buffer[: self._chunk_bytes]), last=False))
                del buffer[: self._chunk_bytes]
        return out

    @property
    def duration_ms(self) -> int:
        """The longest channel's audio received so far, in ms."""
        longest = max(out + len(buf) // 2 for out, buf in zip(self._samples_out, self._buffers,
                                                               strict=True))
        return longest * 1000 // self.rate

    def samples_of(self, index: int) -> int:
        """Samples received on channel ``index`` so far."""
        return self._samples_out[index] + len(self._buffers[index]) // 2

    def push_channel(self, index: int, pcm: bytes) -> list[AudioChunk]:
        """Add audio to one channel only (track-based providers); return its full chunks."""
        if self._closed:
            raise RuntimeError("chunker already closed")
        if not 0 <= index < self.channels:
            raise ValueError(f"channel {index}; the call has {self.channels}")
        buffer = self._buffers[index]
        buffer += pcm
        out: list[AudioChunk] = []
        while len(buffer) >= self._chunk_bytes:
            out.append(self._emit(index, bytes(buffer[: self._chunk_bytes]), last=False))
            del buffer[: self._chunk_bytes]
        return out

    def set_role(self, index: int, role: Role) -> list[AudioChunk]:
        """From now on channel ``index`` is ``role``: the audio buffered so far goes out first
        (a short chunk) under the old role, so every chunk's role is exact."""
        if self._closed or self.roles[index] == role:
            return []
        buffer = self._buffers[index]
        out = [self._emit(index, bytes(buffer), last=False)] if buffer else []
        buffer.clear()
        roles = list(self.roles)
        roles[index] = role
        self.roles = tuple(roles)
        return out

    def close(self) -> list[AudioChunk]:
        """End of the call: one final chunk per channel (``last=True``, possibly empty)."""
        self._closed = True
        out = []
        for index, buffer in enumerate(self._buffers):
            out.append(self._emit(index, bytes(buffer), last=True))
            buffer.clear()
        return out

    def _emit(self, index: int, pcm: bytes, *, last: bool) -> AudioChunk:
        chunk = AudioChunk(
            call_id=self.call_id,
            channel=index,
            seq=self._next_seq[index],
            rate=self.rate,
            role=self.roles[index],
            t_ms=self._samples_out[index] * 1000 // self.rate,
            pcm=pcm,
            channels=self.channels,
            last=last,
        )
        self._next_seq[index] += 1
        self._samples_out[index] += len(pcm) // 2
        return chunk


class TrackTimeline:
    """How much silence goes before each track message so that a channel's samples follow the
    provider's clock: a gap larger than ``tolerance_ms`` (jitter) is filled, at most
    ``max_gap_ms`` at once (a clock jump is not worth minutes of zeros); audio that the clock
    places *before* what was already received is appended as it comes (nothing is dropped).
    """

    def __init__(self, channels: int, *, rate: int, tolerance_ms: int = 10,
                 max_gap_ms: int = 10_000) -> None:
        self.rate = rate
        self._written = [0] * channels
        self._tolerance = rate * tolerance_ms // 1000
        self._max_gap = rate * max_gap_ms // 1000
        self.filled_samples = 0
        self.overlaps = 0

    def silence_before(self, channel: int, samples: int, at_sample: int | None) -> int:
        """Silence (in samples) to insert before ``samples`` that start at ``at_sample``."""
        gap = 0 if at_sample is None else at_sample - self._written[channel]
        fill = min(gap, self._max_gap) if gap > self._tolerance else 0
        if gap < -self._tolerance:
            self.overlaps += 1
        self._written[channel] += fill + samples
        self.filled_samples += fill
        return fill
