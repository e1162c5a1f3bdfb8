"""What the Plivo, Twilio, Telnyx and Vonage simulators share: a WAV laid out as tracks, a
paced sender, the stream's socket (:func:`track_stream`), and a record of everything the
server sent back (socket commands) for tests to assert on.

A stereo WAV is two tracks: inbound = left (the caller), outbound = right (what is played to
the caller); a mono WAV is the inbound track (or both, when both are asked for).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from workers.simulate.jambonz import read_wav

TRACK_NAMES = ("inbound", "outbound")


def load_tracks(wav: Path | str, *, rate: int, tracks: Sequence[str]) -> dict[str, bytes]:
    """PCM16 LE mono per track name, resampled to ``rate``."""
    samples, source_rate = read_wav(wav)
    out: dict[str, bytes] = {}
    for track in tracks:
        column = 1 if track == "outbound" and samples.shape[1] > 1 else 0
        mono = samples[:, column]
        if rate != source_rate:
            mono = soxr.resample(mono, source_rate, rate)
        out[track] = np.ascontiguousarray(mono, dtype="<i2").tobytes()
    return out


@dataclass
class TrackCall:
    """What a simulated Plivo/Twilio call sent and received."""

    provider: str
    call_id: str
    stream_id: str
    rate: int
    tracks: tuple[str, ...]
    samples_sent: dict[str, int] = field(default_factory=dict)
    chunks_dropped: dict[str, list[int]] = field(default_factory=dict)
    received: list[Any] = field(default_factory=list)  # parsed JSON (or raw) from the server
    close_code: int | None = None
    close_reason: str | None = None
    started_at: float = 0.0

    def commands(self, event: str) -> list[dict[str, Any]]:
        """The messages the server sent with this ``event``."""
        return [m for m in self.received if isinstance(m, dict) and m.get("event") == event]


async def pace(start: float, position_s: float, realtime: bool) -> None:
    if realtime:
        delay = start + position_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def collect(ws: Any, call: TrackCall,
                  reply: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Record what the server sends; let the simulator answer it as the provider would."""
    async for message in ws:
        try:
            parsed: Any = json.loads(message) if isinstance(message, str) else message
        except ValueError:
            parsed = message
        call.received.append(parsed)
        if isinstance(parsed, dict):
            with contextlib.suppress(ConnectionClosed):  # closing: keep recording the rest
                await reply(parsed)


def mark_replies(send: Callable[[str], Awaitable[None]],
                 message: Callable[..., str]) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """A ``reply`` that answers playback as Twilio and Telnyx do: a ``mark`` is echoed back
    once what came before it has played (at once, here); a ``clear`` echoes every mark still
    pending. ``message(event, **fields)`` renders one of the provider's messages."""
    pending_marks: list[str] = []

    async def reply(sent: dict[str, Any]) -> None:
        if sent.get("event") == "mark":
            name = (sent.get("mark") or {}).get("name", "")
            pending_marks.append(name)
            await send(message("mark", mark={"name": name}))
            pending_marks.remove(name)
        elif sent.get("event") == "clear":
            for name in list(pending_marks):
                await send(message("mark", mark={"name": name}))

    return reply


@contextlib.asynccontextmanager
async def track_stream(url: str, call: TrackCall,
                       reply: Callable[[dict[str, Any]], Awaitable[None]], *,
                       headers: dict[str, str] | None = None,
                       ) -> AsyncIterator[ClientConnection]:
    """The provider's socket to ``url`` while the simulator plays into it: what the server
    sends is recorded (:func:`collect`, answered by ``reply``); the server closing it (end
    stream, a refused signature or token, bad input) ends the block quietly; at the end the
    close code and reason are recorded in ``call``."""
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        reader = asyncio.create_task(collect(ws, call, reply))
        try:
            yield ws
        except ConnectionClosed:
            pass  # the server closed it: recorded below
        finally:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, TimeoutError):
                await asyncio.wait_for(reader, 2)
            call.close_code, call.close_reason = ws.close_code, ws.close_reason


async def hang_up(ws: ClientConnection, linger_s: float) -> None:
    """End the stream as the provider does once the audio is sent: after ``linger_s`` (time
    for replies to arrive), close 1000."""
    if linger_s:
        await asyncio.sleep(linger_s)
    await ws.close(1000)


__all__ = ["TRACK_NAMES", "TrackCall", "collect", "hang_up", "load_tracks", "mark_replies",
           "pace", "track_stream"]
