"""The voice prints of mixed-channel decodes, made beside whisper, off the event loop.

:class:`SpeakerStage` wraps the pipeline's decode function: for each request marked
``speakers`` (a final or early decode of a channel whose speakers are separated, see
:mod:`workers.transcribe.speakers`), the utterance's windows are embedded in the stage's own
thread while whisper decodes the batch in its own, and the result carries them as ``voices``.
So a final waits for the longer of the two, not their sum; with early finals (the default) the
voice prints are made during the end-of-speech wait, like the text.

The encoder comes from the optional ``speakers`` extra. Without it :attr:`SpeakerStage.available`
is false and requests pass through unchanged (the tracker then keeps the channel's role and
says so once, see :class:`workers.transcribe.calls.CallTracker`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from workers import metrics
from workers.transcribe.asr import AsrResult, DecodeRequest
from workers.transcribe.speakers import Voices, windows
from workers.transcribe.voices import RATE, VoiceEncoder, VoicesUnavailable

log = logging.getLogger(__name__)

Decode = Callable[[Sequence[DecodeRequest]], Awaitable[list[AsrResult]]]


def load_encoder(loader: Callable[[], VoiceEncoder] = VoiceEncoder.load,
                 ) -> tuple[VoiceEncoder | None, str]:
    """(the encoder, "") or (None, why not): a missing extra is not an error here."""
    try:
        return loader(), ""
    except VoicesUnavailable as exc:
        return None, str(exc)


def voices_of(encoder: VoiceEncoder, pcm16k: bytes) -> Voices:
    """The voice prints of one utterance's windows (blocking)."""
    audio = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / 32768.0
    spans = windows(audio.size * 1000 // RATE)
    if not spans:
        return Voices((), np.zeros((0, 256), dtype=np.float32))
    vectors = encoder.embed(audio, [(s * RATE // 1000, e * RATE // 1000) for s, e in spans])
    return Voices(tuple(spans), vectors)


class SpeakerStage:
    """Voice prints for marked decode requests, in a thread of their own."""

    def __init__(self, encoder: VoiceEncoder | None, *, unavailable: str = "") -> None:
        self.encoder = encoder
        #: Why there is no encoder ("" when there is one).
        self.unavailable = unavailable
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="voices")
        #: CPU seconds spent making voice prints so far (their thread's).
        self.cpu_s = 0.0

    @property
    def available(self) -> bool:
        return self.encoder is not None

    def _embed_all(self, pcms: Sequence[bytes]) -> list[Voices]:
        assert self.encoder is not None
        started, cpu = time.perf_counter(), time.thread_time()
        out = [voices_of(self.encoder, pcm) for pcm in pcms]
        metrics.TRANSCRIBE_SPEAKER_SECONDS.observe(time.perf_counter() - started)
        self.cpu_s += time.thread_time() - cpu
        return out

    def wrap(self, decode: Decode) -> Decode:
        """``decode`` with voice prints added to the results of marked requests."""

        async def with_voices(requests: Sequence[DecodeRequest]) -> list[AsrResult]:
            marked = [i for i, r in enumerate(requests) if r.speakers]
            if not marked or self.encoder is None:
                return await decode(requests)
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._executor, self._embed_all,
                                           [requests[i].pcm for i in marked])
            try:
                results = await decode(requests)
            finally:
                voices = await pending
            for i, found in zip(marked, voices, strict=True):
                results[i] = dataclasses.replace(results[i], voices=found)
            return results

        return with_voices

    def close(self) -> None:
        self._executor.shutdown(wait=True)


__all__ = ["SpeakerStage", "load_encoder", "voices_of"]
