"""Cuts a call's per-channel PCM into fixed-duration :class:`AudioChunk` records (pure).

``seq`` counts per channel from 0 without gaps; ``t_ms`` is derived from the number of samples
before the chunk, so the timeline is the audio's own, never a wall clock.
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
