"""Many provider streams from one process, for ``bench.ingest_scale``.

    python -m bench.loadgen SPEC.json OUT.json

``SPEC.json``: ``{"url": "ws://host:port", "streams": [{"callId", "provider"}, ...],
"startAt": <wall time of tick 0>, "seconds": S, "tracks": "both"|"inbound"}``. Each stream
opens its provider's WebSocket (jambonz: 8 kHz L16 stereo, binary frames; Twilio: 8 kHz
μ-law; Plivo: 8 kHz L16; Telnyx: PCMU 8 kHz; the three JSON dialects with one ``media``
message per track per frame), sends its start messages, then one 20 ms frame per track on
every tick of one shared clock from tick ``index % 5`` (so that streams fill their ingest
chunks at different moments), for ``seconds``; then its stop message and close 1000.

The simulators in ``workers.simulate`` pace one call per task; a thousand of them would
spend the cores on timers. Here one loop sends every stream's frame per tick, in a fixed order,
and records each tick's start and end (wall clock), so that the time a stream's frame ``k``
went out is known without a timestamp per frame: tick ``startTick + k``, interpolated by the
stream's place in the order. ``OUT.json``: the ticks, every stream's ``startTick`` /
``frames`` / ``order`` / samples per frame, the process's CPU seconds, and errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from workers.ingest.dialects.audio import pcm16_to_mulaw

RATE = 8000
FRAME_MS = 20
SPF = RATE * FRAME_MS // 1000  # samples per frame per track
TICK_S = FRAME_MS / 1000
PROVIDERS = ("jambonz", "twilio", "plivo", "telnyx")
#: Connections opened at once while ramping up.
OPEN_AT_ONCE = 50


def tone_frames(count: int = 50) -> list[bytes]:
    """``count`` 20 ms frames of PCM16 at 8 kHz: a 440 Hz tone with a little noise (the
    ingest does not look at the audio, only its length)."""
    rng = np.random.default_rng(7)
    t = np.arange(count * SPF) / RATE
    pcm = (3000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 200, t.size)).astype("<i2")
    return [pcm[i * SPF:(i + 1) * SPF].tobytes() for i in range(count)]


PCM = tone_frames()
STEREO = [np.column_stack([np.frombuffer(f, "<i2")] * 2).astype("<i2").tobytes() for f in PCM]
MULAW_B64 = [base64.b64encode(pcm16_to_mulaw(f)).decode() for f in PCM]
L16_B64 = [base64.b64encode(f).decode() for f in PCM]


@dataclass
class Stream:
    """One provider stream: how it starts, what one frame is, how it stops."""

    call_id: str
    provider: str
    tracks: tuple[str, ...]
    start_tick: int
    ws: ClientConnection | None = None
    frames: int = 0
    error: str | None = None
    sid: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def path(self) -> str:
        return f"/{self.provider}"

    def start_messages(self) -> list[str]:
        tracks = list(self.tracks)
        if self.provider == "jambonz":
            return [json.dumps({"sampleRate": RATE, "mixType": "stereo", "callSid": self.call_id,
                                "direction": "inbound", "from": "+15083084809",
                                "to": "+15083728299", "callId": self.sid, "sipStatus": 200,
                                "callStatus": "in-progress"})]
        if self.provider == "twilio":
            return [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                    json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": self.sid,
                                "start": {"accountSid": "AC" + self.sid, "streamSid": self.sid,
                                          "callSid": self.call_id, "tracks": tracks,
                                          "mediaFormat": {"encoding": "audio/x-mulaw",
                                                          "sampleRate": RATE, "channels": 1},
                                          "customParameters": {}}})]
        if self.provider == "plivo":
            return [json.dumps({"event": "start", "sequenceNumber": 1, "start": {
                "callId": self.call_id, "streamId": self.sid, "accountId": "MAXXXXXXXXXXXXXXXXXX",
                "tracks": tracks,
                "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": RATE}}})]
        both = "both_tracks" if len(tracks) == 2 else "inbound_track"
        return [json.dumps({"event": "connected", "version": "1.0.0"}),
                json.dumps({"event": "start", "sequence_number": "1", "stream_id": self.sid,
                            "start": {"user_id": self.sid, "call_control_id": self.call_id,
                                      "call_session_id": self.sid, "from": "+13125550100",
                                      "to": "+13125550199", "client_state": None,
                                      "custom_parameters": {"callscribeTracks": both},
                                      "media_format": {"encoding": "PCMU", "sample_rate": RATE,
                                                       "channels": 1}}})]

    def frame(self, k: int) -> list[str | bytes]:
        """What frame ``k`` (from 0) is on the wire: one message per track (jambonz: one)."""
        i = k % len(PCM)
        n = k + 2  # sequence numbers: the start message was 1
        ms = k * FRAME_MS
        if self.provider == "jambonz":
            return [STEREO[i]]
        if self.provider == "twilio":
            return [f'{{"event":"media","sequenceNumber":"{n * 2 + j}","media":{{"track":"{t}",'
                    f'"chunk":"{k + 1}","timestamp":"{ms}","payload":"{MULAW_B64[i]}"}},'
                    f'"streamSid":"{self.sid}"}}' for j, t in enumerate(self.tracks)]
        if self.provider == "plivo":
            return [f'{{"event":"media","sequenceNumber":{n * 2 + j},"streamId":"{self.sid}",'
                    f'"media":{{"track":"{t}","timestamp":"{ms}","chunk":{k + 1},'
                    f'"payload":"{L16_B64[i]}"}}}}' for j, t in enumerate(self.tracks)]
        return [f'{{"event":"media","sequence_number":"{n * 2 + j}","media":{{"track":"{t}",'
                f'"chunk":"{k + 1}","timestamp":"{ms}","payload":"{MULAW_B64[i]}"}},'
                f'"stream_id":"{self.sid}"}}' for j, t in enumerate(self.tracks)]

    def stop_message(self) -> str | None:
        if self.provider == "twilio":
            return json.dumps({"event": "stop", "sequenceNumber": "0", "streamSid": self.sid,
                               "stop": {"accountSid": "", "callSid": self.call_id}})
        if self.provider == "plivo":
            return json.dumps({"event": "stop", "sequenceNumber": 0, "streamId": self.sid,
                               "stop": {"callId": self.call_id, "streamId": self.sid}})
        if self.provider == "telnyx":
            return json.dumps({"event": "stop", "sequence_number": "0", "stream_id": self.sid,
                               "stop": {"call_control_id": self.call_id}})
        return None

    def channels(self) -> int:
        return 2 if self.provider == "jambonz" else len(self.tracks)


async def _drain(ws: ClientConnection) -> None:
    """Read (and drop) what the server sends, so that its writes never stall."""
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass


async def open_stream(base: str, stream: Stream) -> None:
    try:
        protocols = [Subprotocol("audio.jambonz.org")] if stream.provider == "jambonz" else None
        stream.ws = await connect(base + stream.path, subprotocols=protocols, max_size=None,
                                  open_timeout=60, ping_interval=None)
        for message in stream.start_messages():
            await stream.ws.send(message)
        asyncio.get_running_loop().create_task(_drain(stream.ws))
    except (OSError, TimeoutError, ConnectionClosed) as exc:
        stream.error = f"open: {type(exc).__name__}: {exc}"


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    tracks = ("inbound", "outbound") if spec.get("tracks", "both") == "both" else ("inbound",)
    streams = [Stream(s["callId"], s["provider"], tracks, start_tick=i % 5)
               for i, s in enumerate(spec["streams"])]
    opened_at = time.time()
    for first in range(0, len(streams), OPEN_AT_ONCE):
        await asyncio.gather(*(open_stream(spec["url"], s)
                               for s in streams[first:first + OPEN_AT_ONCE]))
    opened_s = time.time() - opened_at
    # Late (the ramp took longer than planned): start now rather than burst to catch up.
    start_at = max(float(spec["startAt"]), time.time() + 0.1)
    ticks_total = math.ceil(spec["seconds"] / TICK_S) + 5
    ticks: list[tuple[float, float]] = []
    live = [s for s in streams if s.ws is not None]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for n in range(ticks_total):
        delay = start_at + n * TICK_S - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.time()
        for s in live:
            k = n - s.start_tick
            if k < 0 or k >= ticks_total - 5 or s.error is not None or s.ws is None:
                continue
            try:
                for message in s.frame(k):
                    await s.ws.send(message)
                s.frames += 1
            except ConnectionClosed as exc:
                s.error = f"frame {k}: closed {exc.rcvd.code if exc.rcvd else None}"
        ticks.append((began, time.time()))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for s in live:
        if s.ws is None:
            continue
        stop = s.stop_message()
        try:
            if stop is not None and s.error is None:
                await s.ws.send(stop)
            await s.ws.close(1000)
        except ConnectionClosed:
            pass
    order = {id(s): i for i, s in enumerate(live)}
    return {
        "ticks": ticks, "openedS": round(opened_s, 2), "live": len(live),
        "cpuS": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "streams": [{"callId": s.call_id, "provider": s.provider, "startTick": s.start_tick,
                     "frames": s.frames, "order": order.get(id(s)), "spf": SPF,
                     "channels": s.channels(), "error": s.error} for s in streams],
    }


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = asyncio.run(run(spec))
    Path(argv[1]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
