"""A Genesys Cloud AudioHook simulator: connects to ``/audiohook`` as Genesys would
(protocols.md §5), the client side of the protocol.

Upgrade headers ``Audiohook-Organization-Id``, ``Audiohook-Session-Id``,
``Audiohook-Correlation-Id``, ``X-API-KEY`` and, given the client secret, the HTTP message
signature. Then ``open`` (offering PCMU 8000 Hz, both channels and the external one alone),
the server's ``opened`` awaited, PCMU frames interleaved in the order of the selected
``channels`` (external = the WAV's left channel, the customer; internal = the right, the
agent), ``ping`` every ``ping_every_s`` of audio, optional ``paused``/``resumed`` and
``discarded`` stretches, optionally a wait for the server's transcript ``event``s
(``await_transcripts_s``), then ``close`` and the server's ``closed``. A server ``disconnect``
is answered with ``close`` (reason ``disconnect``), as Genesys does. Every client message
carries ``seq``, ``serverseq`` and ``position``; each server message's ``seq`` and
``clientseq`` are checked and any fault recorded in :attr:`AudioHookCall.faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from workers.ingest.dialects.audio import pcm16_to_mulaw
from workers.ingest.dialects.audiohook import (
    API_KEY_HEADER,
    PROBE_CONVERSATION,
    format_duration,
    sign,
)
from workers.simulate.tracks import TrackCall, load_tracks, pace

RATE = 8000
ORGANIZATION = "d7934305-0972-4844-938e-9060eef73d05"


@dataclass
class AudioHookCall(TrackCall):
    """A :class:`TrackCall` (tracks ``external``/``internal``) plus the protocol's record."""

    session_id: str = ""
    selected: dict[str, Any] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    position_s: float = 0.0

    def messages(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.received if isinstance(m, dict) and m.get("type") == type_]

    def transcripts(self) -> list[tuple[int, str]]:
        """``(channelId, text)`` of each ``transcript`` entity the server sent in ``event``s."""
        found = []
        for message in self.messages("event"):
            for entity in (message.get("parameters") or {}).get("entities") or []:
                if not isinstance(entity, dict) or entity.get("type") != "transcript":
                    continue
                data = entity.get("data") or {}
                if isinstance(data.get("channelId"), int) and data.get("alternatives"):
                    texts = [i.get("transcript", "") for i in
                             data["alternatives"][0].get("interpretations") or []]
                    found.append((int(data["channelId"]), " ".join(texts)))
        return found


class _Client:
    """The client half of the envelope: our seq, the server's, the position."""

    def __init__(self, ws: ClientConnection, call: AudioHookCall) -> None:
        self.ws = ws
        self.call = call
        self.seq = 0
        self.serverseq = 0
        self.samples = 0
        self.closing = False
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.heard = asyncio.Event()  # a transcript event for every channel (or disconnect)
        self._lock = asyncio.Lock()

    async def send(self, type_: str, parameters: dict[str, Any] | None = None) -> None:
        async with self._lock:
            self.seq += 1
            await self.ws.send(json.dumps({
                "version": "2", "id": self.call.session_id, "type": type_, "seq": self.seq,
                "serverseq": self.serverseq, "position": format_duration(self.samples),
                "parameters": parameters or {}}))

    async def close(self, reason: str) -> None:
        if not self.closing:
            self.closing = True
            await self.send("close", {"reason": reason})

    async def read(self) -> None:
        async for raw in self.ws:
            try:
                message: Any = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                message = raw
            self.call.received.append(message)
            if not isinstance(message, dict):
                self.call.faults.append(f"not a JSON object: {raw!r:.80}")
                continue
            self._check(message)
            kind = message.get("type")
            if kind == "opened":
                media = (message.get("parameters") or {}).get("media") or [{}]
                self.call.selected = media[0] if media else {}
                self.opened.set()
            elif kind == "closed":
                self.closed.set()
            elif kind == "event":
                wanted = set(range(len(self.call.selected.get("channels") or [])))
                if wanted <= {channel for channel, _ in self.call.transcripts()}:
                    self.heard.set()
            elif kind == "disconnect":
                self.disconnected.set()
                self.heard.set()
                with contextlib.suppress(ConnectionClosed):
                    await self.close("disconnect")

    def _check(self, message: dict[str, Any]) -> None:
        seq, clientseq = message.get("seq"), message.get("clientseq")
        if message.get("version") != "2" or message.get("id") != self.call.session_id:
            self.call.faults.append(f"bad version or id: {message}")
        if seq != self.serverseq + 1:
            self.call.faults.append(f"server seq {seq} after {self.serverseq}")
        if not isinstance(clientseq, int) or clientseq > self.seq:
            self.call.faults.append(f"clientseq {clientseq} but we sent {self.seq}")
        if isinstance(seq, int):
            self.serverseq = seq


def _headers(url: str, call: AudioHookCall, api_key: str | None,
             client_secret: str | None) -> dict[str, str]:
    headers = {"Audiohook-Organization-Id": ORGANIZATION,
               "Audiohook-Session-Id": call.session_id,
               "Audiohook-Correlation-Id": str(uuid.uuid4())}
    if api_key is not None:
        headers[API_KEY_HEADER] = api_key
        if client_secret:
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            signed = {**headers, "Host": parts.netloc, API_KEY_HEADER.lower(): api_key}
            headers |= sign(client_secret, path=path, headers=_lower(signed), api_key=api_key,
                            nonce=uuid.uuid4().hex, created=int(time.time()))
    return headers


def _lower(headers: dict[str, str]) -> dict[str, str]:
    lowered = {k.lower(): v for k, v in headers.items()}
    return {**lowered, "Host": lowered["host"]}


async def simulate_audiohook(url: str, wav: Path | str, *, channels: str = "both",
                             conversation_id: str | None = None, api_key: str | None = None,
                             client_secret: str | None = None, frame_ms: int = 100,
                             realtime: bool = True, ping_every_s: float = 5.0,
                             pause_at_s: tuple[float, float] | None = None,
                             discard_at_s: tuple[float, float] | None = None,
                             until: asyncio.Event | None = None,
                             await_transcripts_s: float = 0.0,
                             reply_timeout_s: float = 10.0) -> AudioHookCall:
    """Play ``wav`` as one AudioHook session to ``url`` (``ws://…/audiohook``).
    ``channels``: ``both`` | ``external``; ``pause_at_s=(at, length)``: paused for that long
    (no audio, the stretch skipped); ``discard_at_s=(at, length)``: that audio dropped and
    announced with ``discarded``; ``until`` set: stop early (close reason ``end``);
    ``await_transcripts_s``: after the audio, stay open until a transcript ``event`` has come
    for every selected channel, or that long."""
    names = ("external", "internal") if channels == "both" else ("external",)
    tracks = load_tracks(wav, rate=RATE, tracks=["inbound", "outbound"][:len(names)])
    audio = [pcm16_to_mulaw(pcm) for pcm in tracks.values()]
    call = AudioHookCall(provider="audiohook",
                         call_id=conversation_id or str(uuid.uuid4()),
                         stream_id="", rate=RATE, tracks=names)
    call.session_id = call.stream_id = str(uuid.uuid4())
    offered = [{"type": "audio", "format": "PCMU", "channels": list(names), "rate": RATE}]
    if len(names) == 2:
        offered.append({"type": "audio", "format": "PCMU", "channels": ["external"],
                        "rate": RATE})
    headers = _headers(url, call, api_key, client_secret)
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        client = _Client(ws, call)
        reader = asyncio.create_task(client.read())
        try:
            await client.send("open", {
                "organizationId": ORGANIZATION, "conversationId": call.call_id,
                "participant": {"id": str(uuid.uuid4()), "ani": "+15555551234",
                                "aniName": "Simulated Customer", "dnis": "+18005556789"},
                "media": offered, "language": "en-US"})
            await asyncio.wait_for(client.opened.wait(), reply_timeout_s)
            if call.call_id != PROBE_CONVERSATION:  # a probe: open, opened, close, closed
                await _stream(client, call, audio, frame_ms=frame_ms, realtime=realtime,
                              ping_every_s=ping_every_s, pause_at_s=pause_at_s,
                              discard_at_s=discard_at_s, until=until)
                if await_transcripts_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(client.heard.wait(), await_transcripts_s)
            await client.close("end")
            await asyncio.wait_for(client.closed.wait(), reply_timeout_s)
            await ws.close(1000)
        except ConnectionClosed:
            pass  # the server closed it: recorded below
        finally:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, TimeoutError):
                await asyncio.wait_for(reader, 2)
            call.close_code, call.close_reason = ws.close_code, ws.close_reason
            call.position_s = client.samples / RATE
    return call


async def _stream(client: _Client, call: AudioHookCall, audio: list[bytes], *, frame_ms: int,
                  realtime: bool, ping_every_s: float,
                  pause_at_s: tuple[float, float] | None,
                  discard_at_s: tuple[float, float] | None,
                  until: asyncio.Event | None) -> None:
    selected = call.selected.get("channels") or []
    order = [call.tracks.index(name) for name in selected if name in call.tracks]
    step = RATE * frame_ms // 1000
    length = max(len(a) for a in audio)
    start, call.started_at = time.monotonic(), time.time()
    next_ping = ping_every_s
    index = 0
    while index < length and order:
        if (until is not None and until.is_set()) or client.disconnected.is_set():
            return
        at = index / RATE
        await pace(start, at, realtime)
        if pause_at_s is not None and at >= pause_at_s[0]:
            skipped = int(pause_at_s[1] * RATE)
            pause_at_s = None
            await client.send("paused")
            await client.send("resumed", {"start": format_duration(client.samples),
                                          "discarded": format_duration(skipped)})
            index += skipped  # paused: that audio never enters the stream
            continue
        if discard_at_s is not None and at >= discard_at_s[0]:
            lost = int(discard_at_s[1] * RATE)
            discard_at_s = None
            await client.send("discarded", {"start": format_duration(client.samples),
                                            "discarded": format_duration(lost)})
            client.samples += lost  # discarded audio counts in the position
            index += lost
            continue
        frames = [audio[i][index:index + step].ljust(
            min(step, length - index), b"\xff") for i in order]
        interleaved = bytes(b for group in zip(*frames, strict=True) for b in group)
        await client.ws.send(interleaved)
        client.samples += len(frames[0])
        for name, frame in zip(selected, frames, strict=True):
            call.samples_sent[name] = call.samples_sent.get(name, 0) + len(frame)
        index += step
        if client.samples / RATE >= next_ping:
            next_ping += ping_every_s
            await client.send("ping", {"rtt": "PT0.012S"})




__all__ = ["AudioHookCall", "simulate_audiohook"]
