"""A jambonz ``listen`` simulator: connects to ``/jambonz`` as jambonz's mod_audio_fork would.

It sends the metadata text frame (call attributes merged with user metadata, camelCase), then
binary L16 frames of ``frame_ms`` paced in real time (or as fast as the socket takes them),
optional DTMF text frames at given positions, and closes with 1000 at the end of the audio.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soxr
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

Mix = Literal["mono", "mixed", "stereo"]


def read_wav(path: Path | str) -> tuple[np.ndarray[Any, Any], int]:
    """(samples as int16 of shape (frames, channels), rate) of a PCM16 WAV file."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * wav.getsampwidth()}-bit samples; expected 16-bit PCM")
        rate, channels = wav.getframerate(), wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return data.reshape(-1, channels), rate


def prepare_audio(samples: np.ndarray[Any, Any], source_rate: int, *, rate: int,
                  mix: Mix) -> np.ndarray[Any, Any]:
    """Resample to ``rate`` and lay out channels as ``mix`` asks: (frames, 1 or 2) int16."""
    if samples.shape[1] == 1 and mix == "stereo":
        samples = np.repeat(samples, 2, axis=1)
    if mix != "stereo" and samples.shape[1] > 1:
        if mix == "mono":
            samples = samples[:, :1]
        else:
            summed = samples[:, :2].astype(np.int32).sum(axis=1, keepdims=True)
            samples = np.clip(summed, -32768, 32767).astype(np.int16)
    if rate != source_rate:
        samples = soxr.resample(samples, source_rate, rate)
    return np.ascontiguousarray(samples.astype("<i2"))


@dataclass
class SimulatedCall:
    """What a simulated call sent (for assertions and latency measurements)."""

    call_sid: str
    rate: int
    mix: Mix
    channels: int
    samples_sent: int = 0
    started_at: float = 0.0  # time.time() when the first audio frame was sent
    frame_times: list[tuple[int, float]] = field(default_factory=list)  # (sample index, wall)
    received: list[Any] = field(default_factory=list)  # what the server sent back

    def wall_time_of(self, position_ms: float) -> float | None:
        """When the sample at ``position_ms`` of call audio was sent (wall clock)."""
        target = int(position_ms * self.rate / 1000)
        for index, when in self.frame_times:
            if index >= target:
                return when
        return None


async def simulate_jambonz(url: str, wav: Path | str, *, rate: int = 8000, mix: Mix = "stereo",
                           call_sid: str | None = None, from_: str = "+15083084809",
                           to: str = "+15083728299", frame_ms: int = 20, realtime: bool = True,
                           dtmf: list[tuple[float, str]] | None = None,
                           metadata: dict[str, Any] | None = None,
                           auth: tuple[str, str] | None = None,
                           subprotocol: str = "audio.jambonz.org") -> SimulatedCall:
    """Play ``wav`` as one jambonz call to ``url`` (e.g. ``ws://127.0.0.1:8080/jambonz``)."""
    samples, source_rate = read_wav(wav)
    audio = prepare_audio(samples, source_rate, rate=rate, mix=mix)
    call = SimulatedCall(call_sid=call_sid or str(uuid.uuid4()), rate=rate, mix=mix,
                         channels=audio.shape[1])
    first_frame = {
        "sampleRate": rate, "mixType": mix, "callSid": call.call_sid, "direction": "inbound",
        "from": from_, "to": to, "callId": str(uuid.uuid4()), "sipStatus": 200,
        "sipReason": "OK", "callStatus": "in-progress", "accountSid": str(uuid.uuid4()),
        "applicationSid": str(uuid.uuid4()), **(metadata or {}),
    }
    headers = {}
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    pending_dtmf = sorted(dtmf or [])
    step = rate * frame_ms // 1000
    async with connect(url, subprotocols=[Subprotocol(subprotocol)], additional_headers=headers,
                       max_size=None) as ws:
        reader = asyncio.create_task(_collect(ws, call))
        await ws.send(json.dumps(first_frame))
        start = time.monotonic()
        call.started_at = time.time()
        for index in range(0, len(audio), step):
            if realtime:
                delay = start + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            while pending_dtmf and pending_dtmf[0][0] * rate <= index:
                _, digit = pending_dtmf.pop(0)
                await ws.send(json.dumps({"event": "dtmf", "dtmf": digit, "duration": "1600"}))
            frame = audio[index:index + step]
            await ws.send(frame.tobytes())
            call.samples_sent += len(frame)
            call.frame_times.append((index + len(frame), time.time()))
        await ws.close(1000)
        reader.cancel()
    return call


async def _collect(ws: Any, call: SimulatedCall) -> None:
    async for message in ws:
        call.received.append(message)
