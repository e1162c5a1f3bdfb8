"""Supervisor live listen (Bland-compatible ``POST /v1/calls/{call_id}/listen``), pure: no
sockets, no Kafka.

* :func:`check_listen_request` — the REST request → the call id to listen to, or
  :class:`ListenRefused` carrying the HTTP status and Bland's error body.
* :func:`success` / :func:`failure` — Bland's response bodies
  ``{"status", "data", "errors"}``.
* :func:`partition_for` — which audio-topic partition carries a call: the one the producer's
  ``DefaultPartitioner`` picks (murmur2 of the UTF-8 call id), so a listener reads only that
  partition.
* :class:`ListenMixer` — a call's audio chunks (one channel each, any source rate) → PCM16 LE
  16 kHz mono: each channel resampled with soxr, the channels aligned by ``t_ms`` and summed
  with clipping.

Errors::

    CallscribeError
    └── ListenRefused   answer the request with ``status`` and ``body`` (Bland's error shape)
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soxr
from aiokafka.partitioner import DefaultPartitioner

from workers.errors import CallscribeError
from workers.records import AudioChunk

#: Listeners receive PCM16 LE mono at this rate (Bland's format).
OUTPUT_RATE = 16_000
#: How far one channel may run ahead of another before the mix goes on without the late one
#: (its late samples are then dropped): a live listener hears the call, not a growing delay.
MAX_LAG_MS = 1_000

CallState = Literal["unknown", "live", "ended"]


# --------------------------------------------------------------------------- REST bodies


@dataclass(frozen=True, slots=True)
class ListenError:
    """One of Bland's listen error codes with the HTTP status callscribe answers it with."""

    code: str
    status: int
    message: str


MISSING_CALL_ID = ListenError("MISSING_CALL_ID", 400, "Call ID parameter is required")
INVALID_ORG_PREFERENCES = ListenError("INVALID_ORG_PREFERENCES", 403,
                                      "Org preferences do not allow live listening")
CALL_NOT_FOUND = ListenError("CALL_NOT_FOUND", 404, "Call was either not found or not started")
INVALID_CALL_STATUS = ListenError("INVALID_CALL_STATUS", 400, "Call is not in progress")
INTERNAL_SERVER_ERROR = ListenError("INTERNAL_SERVER_ERROR", 500, "Internal server error")
# Not in Bland's table; the same body shape.
UNAUTHORIZED = ListenError("UNAUTHORIZED", 401, "Send your API key as 'Authorization: <key>' "
                           "or 'Authorization: Bearer <key>'")
INVALID_TOKEN = ListenError("INVALID_TOKEN", 401, "The listen URL is expired or was not issued "
                            "by this server; request a new one")
UNAVAILABLE = ListenError("SERVICE_UNAVAILABLE", 503, "This server is shutting down; retry")


def success(url: str) -> dict[str, Any]:
    """Bland's success body: ``{"status": "success", "data": {"url": …}, "errors": null}``."""
    return {"status": "success", "data": {"url": url}, "errors": None}


def failure(error: ListenError) -> dict[str, Any]:
    """Bland's error body: ``{"status": "error", "data": null, "errors": [{error, message}]}``."""
    return {"status": "error", "data": None,
            "errors": [{"error": error.code, "message": error.message}]}


class ListenRefused(CallscribeError):
    """Answer a client's listen request with HTTP ``status`` and Bland's error ``body`` (the
    bridge refuses; not :class:`workers.ingest.errors.BlandListenRefused`, Bland refusing
    ours)."""

    def __init__(self, error: ListenError) -> None:
        super().__init__(f"{error.status} {error.code}: {error.message}")
        self.error = error
        self.status = error.status
        self.body = failure(error)


def api_key_from(authorization: str | None) -> str | None:
    """The key of ``Authorization: <key>`` (how Bland's clients send it) or ``Bearer <key>``."""
    value = (authorization or "").strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        value = rest.strip()
    return value or None


def key_is_valid(key: str | None, api_keys: frozenset[str]) -> bool:
    """Constant-time membership: the time taken does not depend on which key matched."""
    if not key:
        return False
    given = key.encode("utf-8", "surrogatepass")
    matched = False
    for known in api_keys:
        matched |= hmac.compare_digest(given, known.encode("utf-8", "surrogatepass"))
    return matched


def check_listen_request(call_id: str, authorization: str | None, *,
                         api_keys: frozenset[str], enabled: bool,
                         call_state: Callable[[str], CallState]) -> str:
    """Check a listen request in order: API key (401), call id (``MISSING_CALL_ID``),
    configuration (``INVALID_ORG_PREFERENCES``), call (``CALL_NOT_FOUND``,
    ``INVALID_CALL_STATUS``); return the call id."""
    if not key_is_valid(api_key_from(authorization), api_keys):
        raise ListenRefused(UNAUTHORIZED)
    call_id = call_id.strip()
    if not call_id:
        raise ListenRefused(MISSING_CALL_ID)
    if not enabled:
        raise ListenRefused(INVALID_ORG_PREFERENCES)
    check_call(call_id, call_state)
    return call_id


def check_call(call_id: str, call_state: Callable[[str], CallState]) -> None:
    state = call_state(call_id)
    if state == "unknown":
        raise ListenRefused(CALL_NOT_FOUND)
    if state == "ended":
        raise ListenRefused(INVALID_CALL_STATUS)


# --------------------------------------------------------------------------- partition


def partition_for(call_id: str, partitions: int) -> int:
    """The partition of a topic with ``partitions`` partitions that records keyed ``call_id``
    go to (aiokafka's and Java's default partitioner: murmur2 of the key bytes)."""
    if partitions < 1:
        raise ValueError(f"{partitions} partitions; expected 1 or more")
    chosen: int = DefaultPartitioner()(call_id.encode(), list(range(partitions)), [])
    return chosen


# --------------------------------------------------------------------------- mixing


class _Channel:
    __slots__ = ("done", "next_pos", "next_seq", "rate", "resampler")

    def __init__(self) -> None:
        self.rate = 0
        self.resampler: Any = None
        self.next_pos: int | None = None  # output sample index of the next resampled sample
        self.next_seq = 0
        self.done = False


class ListenMixer:
    """Mixes one call's channels into PCM16 LE mono at :data:`OUTPUT_RATE`.

    Feed every audio chunk of the call in topic order to :meth:`push`; it returns the mixed
    audio that is complete (every channel has reached it, or one is :data:`MAX_LAG_MS` ahead),
    possibly ``b""``. The mix starts at the first chunk pushed (a listener hears the call from
    when it joined). ``finished`` turns true when every channel's ``last`` chunk was pushed;
    that push returns the rest. Duplicate chunks (a ``seq`` already pushed) are ignored.
    """

    def __init__(self, *, max_lag_ms: int = MAX_LAG_MS) -> None:
        self._channels: dict[int, _Channel] = {}
        self._expected = 1
        self._max_lag = max_lag_ms * OUTPUT_RATE // 1000
        self._start: int | None = None  # output sample index of _buffer[0]
        self._buffer = np.zeros(0, dtype=np.int32)
        self.finished = False
        self.samples_out = 0

    def push(self, chunk: AudioChunk) -> bytes:
        if self.finished:
            return b""
        self._expected = max(self._expected, chunk.channels, chunk.channel + 1)
        channel = self._channels.setdefault(chunk.channel, _Channel())
        if channel.done or chunk.seq < channel.next_seq:
            return b""  # after its last chunk, or a redelivery
        channel.next_seq = chunk.seq + 1
        self._place(channel, chunk)
        if chunk.last:
            channel.done = True
        return self._emit()

    def _place(self, channel: _Channel, chunk: AudioChunk) -> None:
        if channel.next_pos is None:
            channel.next_pos = chunk.t_ms * OUTPUT_RATE // 1000
            channel.rate = chunk.rate
            if chunk.rate != OUTPUT_RATE:
                channel.resampler = soxr.ResampleStream(chunk.rate, OUTPUT_RATE, 1,
                                                        dtype="int16")
        samples = np.frombuffer(chunk.pcm, dtype="<i2")
        if channel.resampler is not None:
            samples = channel.resampler.resample_chunk(samples, last=chunk.last)
        position = channel.next_pos
        channel.next_pos += len(samples)
        if self._start is None:
            self._start = position
        skip = max(0, self._start - position)  # before the mix began (or already sent)
        if skip >= len(samples):
            return
        begin = position + skip - self._start
        end = position + len(samples) - self._start
        if end > len(self._buffer):
            self._buffer = np.concatenate(
                [self._buffer, np.zeros(end - len(self._buffer), dtype=np.int32)])
        self._buffer[begin:end] += samples[skip:]

    def _emit(self) -> bytes:
        if self._start is None:
            return b""
        positions = [c.next_pos for c in self._channels.values() if c.next_pos is not None]
        lead = max(positions, default=self._start)
        every_seen = len(self._channels) >= self._expected
        if every_seen and all(c.done for c in self._channels.values()):
            limit = lead
            self.finished = True
        else:
            pending = [c.next_pos for c in self._channels.values()
                       if not c.done and c.next_pos is not None]
            limit = min(pending) if every_seen and pending else self._start
            limit = max(limit, lead - self._max_lag)
        count = min(max(0, limit - self._start), len(self._buffer))
        if self.finished:
            count = len(self._buffer)
        if count == 0:
            return b""
        out = np.clip(self._buffer[:count], -32768, 32767).astype("<i2").tobytes()
        self._buffer = self._buffer[count:]
        self._start += count
        self.samples_out += count
        return out


__all__ = [
    "CALL_NOT_FOUND",
    "INTERNAL_SERVER_ERROR",
    "INVALID_CALL_STATUS",
    "INVALID_ORG_PREFERENCES",
    "INVALID_TOKEN",
    "MISSING_CALL_ID",
    "OUTPUT_RATE",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "ListenError",
    "ListenMixer",
    "ListenRefused",
    "api_key_from",
    "check_call",
    "check_listen_request",
    "failure",
    "partition_for",
    "success",
]
