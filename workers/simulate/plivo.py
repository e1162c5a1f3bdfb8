"""A Plivo Audio Streams simulator: connects to ``/plivo`` as Plivo would (protocols.md §2).

``start`` (``tracks``, ``mediaFormat``, ``extra_headers``), then one ``media`` message per
track per 20 ms (``sequenceNumber``/``chunk`` as numbers, ``timestamp`` an epoch-ms string),
``dtmf`` at given positions, ``{"event": "stop"}`` (as Plivo's own examples send) and close
1000. It signs the upgrade (``X-Plivo-Signature-V3`` + nonce) when given the auth token,
answers ``checkpoint`` with ``playedStream`` and ``clearAudio`` with ``clearedAudio``, and
records all it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

from workers.ingest.dialects.audio import pcm16_to_mulaw
from workers.ingest.dialects.plivo import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    parse_media_format,
    signature_v3,
)
from workers.simulate.tracks import TrackCall, hang_up, load_tracks, pace, track_stream


async def simulate_plivo(url: str, wav: Path | str, *, tracks: str = "inbound",
                         content_type: str = "audio/x-l16;rate=8000",
                         call_id: str | None = None, stream_id: str | None = None,
                         account_id: str = "MAXXXXXXXXXXXXXXXXXX", frame_ms: int = 20,
                         realtime: bool = True, dtmf: list[tuple[float, str]] | None = None,
                         extra_headers: str | None = None, auth_token: str | None = None,
                         send_stop: bool = True, drop_chunks: Collection[int] = (),
                         until: asyncio.Event | None = None,
                         linger_s: float = 0.0) -> TrackCall:
    """Play ``wav`` as one Plivo stream to ``url`` (``ws://…/plivo``). ``tracks``:
    ``inbound`` | ``outbound`` | ``both``; ``content_type`` as in ``<Stream contentType=…>``."""
    encoding, rate = parse_media_format({"contentType": content_type})
    names = ("inbound", "outbound") if tracks == "both" else (tracks,)
    audio = load_tracks(wav, rate=rate, tracks=names)
    if encoding == "mulaw":
        audio = {name: pcm16_to_mulaw(pcm) for name, pcm in audio.items()}
    width = 1 if encoding == "mulaw" else 2
    call = TrackCall(provider="plivo", call_id=call_id or str(uuid.uuid4()),
                     stream_id=stream_id or str(uuid.uuid4()), rate=rate, tracks=names)
    headers: dict[str, str] = {}
    if auth_token:
        nonce = str(secrets.randbelow(10**20))
        headers = {SIGNATURE_HEADER: signature_v3(auth_token, url, nonce), NONCE_HEADER: nonce}
    counter = iter(range(1, 1 << 30))
    extra = {"extra_headers": extra_headers} if extra_headers is not None else {}

    def message(event: str, **fields: Any) -> str:
        return json.dumps({"event": event, "sequenceNumber": next(counter),
                           "streamId": call.stream_id, **fields, **extra})

    async def reply(sent: dict[str, Any]) -> None:
        if sent.get("event") == "checkpoint":
            await ws.send(message("playedStream", name=sent.get("name", "")))
        elif sent.get("event") == "clearAudio":
            await ws.send(message("clearedAudio"))

    step = rate * frame_ms // 1000
    presses = sorted(dtmf or [])
    epoch_ms = int(time.time() * 1000)
    async with track_stream(url, call, reply, headers=headers) as ws:
        await ws.send(json.dumps({"event": "start", "sequenceNumber": next(counter), "start": {
            "callId": call.call_id, "streamId": call.stream_id, "accountId": account_id,
            "tracks": list(names),
            "mediaFormat": {"encoding": content_type.split(";")[0], "sampleRate": rate}},
            **extra}))
        start, call.started_at = time.monotonic(), time.time()
        length = max(len(a) for a in audio.values()) // width
        for number, index in enumerate(range(0, length, step), start=1):
            if until is not None and until.is_set():
                break
            await pace(start, index / rate, realtime)
            stamp = str(epoch_ms + index * 1000 // rate)
            while presses and presses[0][0] * rate <= index:
                await ws.send(message("dtmf", dtmf={"track": "inbound", "timestamp": stamp,
                                                    "digit": presses.pop(0)[1]}))
            for name in names:
                chunk = audio[name][index * width:(index + step) * width]
                if not chunk:
                    continue
                if number in drop_chunks:
                    call.chunks_dropped.setdefault(name, []).append(number)
                    continue
                await ws.send(message("media", media={
                    "track": name, "timestamp": stamp, "chunk": number,
                    "payload": base64.b64encode(chunk).decode("ascii")}))
                call.samples_sent[name] = call.samples_sent.get(name, 0) + len(chunk) // width
        if send_stop:
            await ws.send(json.dumps({"event": "stop", "sequenceNumber": next(counter),
                                      "streamId": call.stream_id}))
        await hang_up(ws, linger_s)
    return call


__all__ = ["simulate_plivo"]
