"""A Telnyx Media Streaming simulator: connects to ``/telnyx`` as Telnyx would.

The stream's auth token as the ``x-telnyx-streaming-auth-token`` header (and in ``connected``),
``connected``, ``start`` (``call_control_id``, ``media_format`` PCMU/PCMA 8000 or L16
8/16/24 kHz, ``custom_parameters`` with ``callscribeTracks`` as our docs ask for two tracks),
then one ``media`` message per track per 20 ms (``sequence_number``, ``chunk``, ``timestamp`` as
strings, timestamp = ms since the stream started; L16 big-endian), ``dtmf`` at given positions,
``stop``, close 1000. It answers every ``mark`` with the same mark (pending marks at once on
``clear``), as Telnyx does, and records all it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workers.ingest.dialects.telnyx import (
    RATES,
    TOKEN_HEADER,
    TRACKS_PARAMETER,
    Encoding,
    encode,
)
from workers.simulate.tracks import (
    TrackCall,
    hang_up,
    load_tracks,
    mark_replies,
    pace,
    track_stream,
)


async def simulate_telnyx(url: str, wav: Path | str, *, tracks: str = "inbound",
                          encoding: Encoding = "PCMU", rate: int = 8000,
                          call_control_id: str | None = None, token: str | None = None,
                          frame_ms: int = 20, realtime: bool = True,
                          dtmf: list[tuple[float, str]] | None = None,
                          custom_parameters: dict[str, str] | None = None,
                          announce_tracks: bool = True,
                          until: asyncio.Event | None = None,
                          linger_s: float = 0.0) -> TrackCall:
    """Play ``wav`` as one Telnyx stream to ``url`` (``ws://…/telnyx``). ``tracks``:
    ``inbound`` | ``outbound`` | ``both`` (announced in a ``callscribeTracks`` custom parameter
    unless ``announce_tracks`` is false); ``until`` set: stop early (the call was hung up)."""
    if rate not in RATES[encoding]:
        raise ValueError(f"{encoding} at {rate} Hz is not a Telnyx stream format")
    names = ("inbound", "outbound") if tracks == "both" else (tracks,)
    audio = {name: encode(pcm, encoding) for name, pcm in
             load_tracks(wav, rate=rate, tracks=names).items()}
    width = 2 if encoding == "L16" else 1
    call = TrackCall(provider="telnyx", call_id=call_control_id or "v3:" + uuid.uuid4().hex,
                     stream_id=str(uuid.uuid4()), rate=rate, tracks=names)
    headers = {TOKEN_HEADER: token} if token else {}
    custom = dict(custom_parameters or {})
    if announce_tracks:
        custom.setdefault(TRACKS_PARAMETER, f"{tracks}_track" + ("s" if tracks == "both" else ""))
    counter = iter(range(1, 1 << 30))

    def message(event: str, **fields: Any) -> str:
        return json.dumps({"event": event, "sequence_number": str(next(counter)), **fields,
                           "stream_id": call.stream_id})

    reply = mark_replies(lambda text: ws.send(text), message)

    step = rate * frame_ms // 1000 * width
    presses = sorted(dtmf or [])
    async with track_stream(url, call, reply, headers=headers) as ws:
        connected: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
        if token:
            connected["connected"] = {TOKEN_HEADER: token}
        await ws.send(json.dumps(connected))
        await ws.send(message("start", start={
            "user_id": str(uuid.uuid4()), "call_control_id": call.call_id,
            "call_session_id": str(uuid.uuid4()), "from": "+13125550100",
            "to": "+13125550199", "client_state": None, "custom_parameters": custom,
            "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1}}))
        start, call.started_at = time.monotonic(), time.time()
        length = max(len(a) for a in audio.values())
        for number, index in enumerate(range(0, length, step), start=1):
            if until is not None and until.is_set():
                break
            at_s = index / width / rate
            await pace(start, at_s, realtime)
            while presses and presses[0][0] <= at_s:
                await ws.send(message("dtmf", occurred_at=datetime.now(UTC).isoformat(),
                                      dtmf={"digit": presses.pop(0)[1]}))
            for name in names:
                chunk = audio[name][index:index + step]
                if not chunk:
                    continue
                await ws.send(message("media", media={
                    "track": name, "chunk": str(number),
                    "timestamp": str(round(at_s * 1000)),
                    "payload": base64.b64encode(chunk).decode("ascii")}))
                call.samples_sent[name] = call.samples_sent.get(name, 0) + \
                    len(chunk) // width
        await ws.send(message("stop", stop={"call_control_id": call.call_id}))
        await hang_up(ws, linger_s)
    return call


__all__ = ["simulate_telnyx"]
