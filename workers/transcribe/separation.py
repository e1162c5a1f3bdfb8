"""The voice prints of mixed-channel decodes, made beside whisper, off the event loop.

:class:`SpeakerStage` wraps the pipeline's decode function: for each request marked
``speakers`` (any decode of a channel whose speakers are separated, see
:mod:`workers.transcribe.speakers`), the utterance's windows are embedded in the stage's own
thread while whisper decodes the batch in its own, and the result carries them as ``voices``.
A final's (or early decode's) words are aligned in whisper's thread only when its voice prints
may change speaker (:func:`~workers.transcribe.speakers.may_change_speaker`, against the
channel's speakers when it was asked for): whisper waits for them after its decode, if at all.
So a final waits for the longer of the two, not their sum; windows sit at fixed offsets from
the utterance's start, so those its interims and early decode already made are not made again.

The encoder comes from the optional ``speakers`` extra. Without it :attr:`SpeakerStage.available`
is false and requests pass through unchanged (the tracker then keeps the channel's role and
says so once, see :class:`workers.transcribe.calls.CallTracker`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from workers import metrics
from workers.transcribe.asr import AsrResult, DecodeRequest
from workers.transcribe.speakers import Voices, may_change_speaker, windows
from workers.transcribe.voices import (
    RATE,
    VoiceEncoder,
    VoicesUnavailable,
    mel_frames,
    one_blas_thread,
)

log = logging.getLogger(__name__)

Decode = Callable[[Sequence[DecodeRequest]], Awaitable[list[AsrResult]]]


def load_encoder(loader: Callable[[], VoiceEncoder] = VoiceEncoder.load,
                 ) -> tuple[VoiceEncoder | None, str]:
    """(the encoder, "") or (None, why not): a missing extra is not an error here."""
    try:
        return loader(), ""
    except VoicesUnavailable as exc:
        return None, str(exc)


#: Voice prints remembered by their window's audio (256 float32 each: 4 MB in all).
CACHE_WINDOWS = 4096


def voices_of(encoder: VoiceEncoder, pcm16k: bytes,
              cache: collections.OrderedDict[bytes, Any] | None = None) -> Voices:
    """The voice prints of one utterance's windows (blocking). Windows sit at fixed offsets
    from the utterance's start, so the interims, early decode and final of one utterance
    share most of them: with a ``cache`` each is made once."""
    spans = windows(len(pcm16k) // 2 * 1000 // RATE)
    if not spans:
        return Voices((), np.zeros((0, 256), dtype=np.float32))
    pieces = [pcm16k[s * RATE // 1000 * 2:e * RATE // 1000 * 2] for s, e in spans]
    keys = [hashlib.blake2b(piece, digest_size=16).digest() for piece in pieces]
    found: list[Any] = [cache.get(key) if cache is not None else None for key in keys]
    todo = [i for i, vector in enumerate(found) if vector is None]
    if todo:
        mels = [mel_frames(np.frombuffer(pieces[i], dtype="<i2").astype(np.float32) / 32768.0)
                for i in todo]
        for i, vector in zip(todo, encoder.embed_frames(mels), strict=True):
            found[i] = vector
            if cache is not None:
                cache[keys[i]] = vector
                if len(cache) > CACHE_WINDOWS:
                    cache.popitem(last=False)
    return Voices(tuple(spans), np.stack(found))


def _turns_check(made: concurrent.futures.Future[list[Voices]], index: int,
                 centroids: Any) -> Callable[[], bool]:
    """Whether the ``index``-th marked request's voice prints may change speaker (waits for
    them in the caller's thread: whisper's, after its decode; they are made beside it)."""

    def check() -> bool:
        try:
            return may_change_speaker(made.result()[index], centroids)
        except Exception:  # noqa: BLE001 - the stage reports it when awaited; align anyway
            return True

    return check


class SpeakerStage:
    """Voice prints for marked decode requests, in a thread of their own."""

    def __init__(self, encoder: VoiceEncoder | None, *, unavailable: str = "") -> None:
        self.encoder = encoder
        #: Why there is no encoder ("" when there is one).
        self.unavailable = unavailable
        # One core for the voice prints' matrix products: whisper decodes beside them.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="voices", initializer=one_blas_thread)
        #: CPU seconds spent making voice prints so far (their thread's).
        self.cpu_s = 0.0
        self._cache: collections.OrderedDict[bytes, Any] = collections.OrderedDict()

    @property
    def available(self) -> bool:
        return self.encoder is not None

    def _embed_all(self, pcms: Sequence[bytes]) -> list[Voices]:
        assert self.encoder is not None
        started, cpu = time.perf_counter(), time.thread_time()
        out = [voices_of(self.encoder, pcm, self._cache) for pcm in pcms]
        metrics.TRANSCRIBE_SPEAKER_SECONDS.observe(time.perf_counter() - started)
        self.cpu_s += time.thread_time() - cpu
        return out

    def wrap(self, decode: Decode) -> Decode:
        """``decode`` with voice prints added to the results of marked requests."""

        async def with_voices(requests: Sequence[DecodeRequest]) -> list[AsrResult]:
            marked = [i for i, r in enumerate(requests) if r.speakers]
            if not marked or self.encoder is None:
                return await decode(requests)
            made = self._executor.submit(self._embed_all, [requests[i].pcm for i in marked])
            pending = asyncio.wrap_future(made)
            requests = list(requests)
            for index, i in enumerate(marked):
                if requests[i].kind != "interim":
                    requests[i] = dataclasses.replace(
                        requests[i], turns=_turns_check(made, index, requests[i].centroids))
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
