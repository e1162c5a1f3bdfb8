"""A Vonage Voice API WebSocket simulator: connects to ``/vonage`` as Vonage would.

The token in the URL (``?token=``, as an NCCO ``uri`` would carry it), then the
``websocket:connected`` text message (``content-type`` and the NCCO ``headers``, here the call's
``uuid``, ``from`` and ``to``), 20 ms binary L16 frames of the WAV's first channel,
``websocket:dtmf`` at given positions, and close 1000. It answers ``notify`` with
``websocket:notify`` and ``clear`` with ``websocket:cleared``, and records what it receives.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from workers.simulate.tracks import TrackCall, hang_up, load_tracks, pace, track_stream


async def simulate_vonage(url: str, wav: Path | str, *, rate: int = 16000,
                          call_uuid: str | None = None, token: str | None = None,
                          realtime: bool = True, dtmf: list[tuple[float, str]] | None = None,
                          until: asyncio.Event | None = None,
                          linger_s: float = 0.0) -> TrackCall:
    """Play ``wav`` as one Vonage WebSocket to ``url`` (``ws://…/vonage``) at ``rate``."""
    pcm = load_tracks(wav, rate=rate, tracks=["inbound"])["inbound"]
    call = TrackCall(provider="vonage", call_id=call_uuid or str(uuid.uuid4()),
                     stream_id="", rate=rate, tracks=("inbound",))
    if token:
        url += ("&" if "?" in url else "?") + "token=" + quote(token, safe="")

    async def reply(sent: dict[str, Any]) -> None:
        if sent.get("action") == "notify":
            await ws.send(json.dumps({"event": "websocket:notify",
                                      "payload": sent.get("payload")}))
        elif sent.get("action") == "clear":
            await ws.send(json.dumps({"event": "websocket:cleared"}))

    step = rate * 20 // 1000 * 2
    presses = sorted(dtmf or [])
    async with track_stream(url, call, reply) as ws:
        await ws.send(json.dumps({"event": "websocket:connected",
                                  "content-type": f"audio/l16;rate={rate}",
                                  "uuid": call.call_id, "from": "447700900000",
                                  "to": "447700900001"}))
        start, call.started_at = time.monotonic(), time.time()
        for index in range(0, len(pcm), step):
            if until is not None and until.is_set():
                break
            await pace(start, index / 2 / rate, realtime)
            while presses and presses[0][0] * rate * 2 <= index:
                await ws.send(json.dumps({"event": "websocket:dtmf",
                                          "digit": presses.pop(0)[1], "duration": 200}))
            frame = pcm[index:index + step]
            await ws.send(frame)
            call.samples_sent["inbound"] = call.samples_sent.get("inbound", 0) + \
                len(frame) // 2
        await hang_up(ws, linger_s)
    return call


__all__ = ["simulate_vonage"]
