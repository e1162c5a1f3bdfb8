"""A Twilio Media Streams simulator: connects to ``/twilio`` as Twilio would (protocols.md §3).

``connected``, ``start`` (``tracks``, μ-law 8000 mono, ``customParameters``), then one
``media`` message per track per 20 ms (``sequenceNumber``/``chunk``/``timestamp`` as strings,
timestamp = ms since the stream started), ``dtmf`` at given positions, ``stop``, close 1000.
It signs the upgrade with ``X-Twilio-Signature`` when given the auth token, echoes every
``mark`` the server sends (pending marks at once on ``clear``), and records all it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

from workers.ingest.dialects.audio import pcm16_to_mulaw
from workers.ingest.dialects.twilio import SIGNATURE_HEADER, signature
from workers.simulate.tracks import (
    TrackCall,
    hang_up,
    load_tracks,
    mark_replies,
    pace,
    track_stream,
)

RATE = 8000


async def simulate_twilio(url: str, wav: Path | str, *, tracks: str = "inbound",
                          call_sid: str | None = None, account_sid: str | None = None,
                          stream_sid: str | None = None, frame_ms: int = 20,
                          realtime: bool = True, dtmf: list[tuple[float, str]] | None = None,
                          custom_parameters: dict[str, str] | None = None,
                          auth_token: str | None = None,
                          drop_chunks: Collection[int] = (),
                          until: asyncio.Event | None = None,
                          linger_s: float = 0.0) -> TrackCall:
    """Play ``wav`` as one Twilio stream to ``url`` (``ws://…/twilio``). ``tracks``:
    ``inbound`` | ``outbound`` | ``both``; ``drop_chunks`` are never sent (network loss);
    ``until`` set: stop early (the call was hung up); ``linger_s``: wait for replies."""
    names = ("inbound", "outbound") if tracks == "both" else (tracks,)
    audio = {name: pcm16_to_mulaw(pcm) for name, pcm in
             load_tracks(wav, rate=RATE, tracks=names).items()}
    call = TrackCall(provider="twilio", call_id=call_sid or "CA" + uuid.uuid4().hex,
                     stream_id=stream_sid or "MZ" + uuid.uuid4().hex, rate=RATE, tracks=names)
    headers = {SIGNATURE_HEADER: signature(auth_token, url)} if auth_token else {}
    counter = iter(range(1, 1 << 30))

    def message(event: str, **fields: Any) -> str:
        return json.dumps({"event": event, "sequenceNumber": str(next(counter)), **fields,
                           "streamSid": call.stream_id})

    reply = mark_replies(lambda text: ws.send(text), message)

    step = RATE * frame_ms // 1000
    presses = sorted(dtmf or [])
    async with track_stream(url, call, reply, headers=headers) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call",
                                  "version": "1.0.0"}))
        await ws.send(message("start", start={
            "accountSid": account_sid or "AC" + uuid.uuid4().hex, "streamSid": call.stream_id,
            "callSid": call.call_id, "tracks": list(names),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
            "customParameters": custom_parameters or {}}))
        start, call.started_at = time.monotonic(), time.time()
        length = max(len(a) for a in audio.values())
        for number, index in enumerate(range(0, length, step), start=1):
            if until is not None and until.is_set():
                break
            await pace(start, index / RATE, realtime)
            while presses and presses[0][0] * RATE <= index:
                await ws.send(message("dtmf", dtmf={"track": "inbound_track",
                                                    "digit": presses.pop(0)[1]}))
            for name in names:
                chunk = audio[name][index:index + step]
                if not chunk:
                    continue
                if number in drop_chunks:
                    call.chunks_dropped.setdefault(name, []).append(number)
                    continue
                await ws.send(message("media", media={
                    "track": name, "chunk": str(number), "timestamp": str(index * 1000 // RATE),
                    "payload": base64.b64encode(chunk).decode("ascii")}))
                call.samples_sent[name] = call.samples_sent.get(name, 0) + len(chunk)
        await ws.send(message("stop", stop={"accountSid": account_sid or "",
                                            "callSid": call.call_id}))
        await hang_up(ws, linger_s)
    return call


__all__ = ["simulate_twilio"]
