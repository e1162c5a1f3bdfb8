"""A local Bland-compatible live-listen server, so the demo and tests run offline
(protocols.md §4, ``shared/reference/seeds/000_*``).

``POST /v1/calls/{call_id}/listen`` (``authorization: <API key>``) answers
``{"status":"success","data":{"url":"ws://…/ws/listen/{call_id}?token=…"},"errors":null}`` or
the documented errors (``{"status":"error","data":null,"errors":[{"error","message"}]}``):
``MISSING_CALL_ID`` 400, ``INVALID_ORG_PREFERENCES`` 403 (live listen disabled),
``CALL_NOT_FOUND`` 404 (unknown, or not answered yet), ``INVALID_CALL_STATUS`` 400 (over),
``INTERNAL_SERVER_ERROR`` 500 (injected with ``fail_next``). (The HTTP statuses are ours;
Bland documents only the codes.)

The URL streams the call's audio as binary PCM16 LE 16 kHz mono, to every listener at once,
from where the call *is* (no replay), and closes 1000 when the call ends. ``realtime=False``
lets a call advance only while someone listens, as fast as they read, so a test gets every
sample exactly once; ``drops_at`` aborts the TCP connections at given positions (no close
frame) to exercise reconnects. The provider REST routes of
:class:`~workers.simulate.provider_api.ProviderApiSimulator` (Bland stop/transfer included)
are served too; a Bland hang-up ends the simulated call.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr
from aiohttp import WSCloseCode, web

from workers.simulate.jambonz import read_wav
from workers.simulate.provider_api import ProviderAction, ProviderApiSimulator, serve

RATE = 16000


@dataclass
class SimulatedBlandCall:
    """One call the server knows. ``not_found`` listen requests are answered CALL_NOT_FOUND
    first (the call is not answered yet)."""

    call_id: str
    audio: bytes
    not_found: int = 0
    drops_at: list[int] = field(default_factory=list)  # sample positions
    status: str = "active"
    cursor: int = 0  # bytes of audio streamed so far
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    connections: int = 0
    drops_done: int = 0
    listeners: set[web.WebSocketResponse] = field(default_factory=set)
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    producer: asyncio.Task[None] | None = None

    @property
    def samples(self) -> int:
        return len(self.audio) // 2


def load_mono_16k(wav: Path | str) -> bytes:
    """A WAV as PCM16 LE 16 kHz mono (channels mixed, as Bland streams every party)."""
    samples, rate = read_wav(wav)
    mixed = np.clip(samples.astype(np.int32).sum(axis=1), -32768, 32767).astype(np.int16)
    if rate != RATE:
        mixed = soxr.resample(mixed, rate, RATE)
    return np.ascontiguousarray(mixed, dtype="<i2").tobytes()


class BlandListenServer:
    """The listen API + WebSocket + Bland's call-control routes, on one aiohttp server."""

    def __init__(self, *, api_key: str, live_listen_enabled: bool = True,
                 realtime: bool = True, frame_ms: int = 20,
                 api: ProviderApiSimulator | None = None) -> None:
        self.api_key = api_key
        self.live_listen_enabled = live_listen_enabled
        self.realtime = realtime
        self.frame_bytes = RATE * frame_ms // 1000 * 2
        self.api = api or ProviderApiSimulator()
        self.api.on_action.append(self._on_action)
        self.calls: dict[str, SimulatedBlandCall] = {}
        self.listen_requests: list[tuple[str, str]] = []  # (call id, "ok" or error code)
        self.fail_next = 0
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def add_call(self, call_id: str, audio: bytes | Path | str, *, not_found: int = 0,
                 drops_at: list[int] | None = None) -> SimulatedBlandCall:
        pcm = audio if isinstance(audio, bytes) else load_mono_16k(audio)
        call = SimulatedBlandCall(call_id, pcm, not_found=not_found,
                                  drops_at=sorted(drops_at or []))
        self.calls[call_id] = call
        return call

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post(r"/v1/calls/{call_id:[^/]*}/listen", self._listen)
        app.router.add_get("/ws/listen/{call_id}", self._socket)
        self.api.add_routes(app)
        self._runner, self.base_url = await serve(app, host, port)
        return self.base_url

    async def stop(self) -> None:
        for call in self.calls.values():
            if call.producer is not None:
                call.producer.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ listen API

    def _refuse(self, call_id: str, code: str, message: str, status: int) -> web.Response:
        self.listen_requests.append((call_id, code))
        return web.json_response({"status": "error", "data": None,
                                  "errors": [{"error": code, "message": message}]},
                                 status=status)

    async def _listen(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"].strip()
        if request.headers.get("authorization") != self.api_key:
            return self._refuse(call_id, "UNAUTHORIZED", "Invalid API key", 401)
        if not call_id:
            return self._refuse(call_id, "MISSING_CALL_ID", "Call ID parameter is required", 400)
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._refuse(call_id, "INTERNAL_SERVER_ERROR", "Internal server error", 500)
        if not self.live_listen_enabled:
            return self._refuse(call_id, "INVALID_ORG_PREFERENCES",
                                "Org preferences do not allow live listening", 403)
        call = self.calls.get(call_id)
        if call is None:
            return self._refuse(call_id, "CALL_NOT_FOUND", "Call not found", 404)
        if call.not_found > 0:
            call.not_found -= 1
            return self._refuse(call_id, "CALL_NOT_FOUND",
                                "Call was either not found or not started", 404)
        if call.status != "active":
            return self._refuse(call_id, "INVALID_CALL_STATUS", "Call is not in progress", 400)
        self.listen_requests.append((call_id, "ok"))
        host = request.host
        url = f"ws://{host}/ws/listen/{call_id}?token={call.token}"
        return web.json_response({"status": "success", "data": {"url": url}, "errors": None})

    # ------------------------------------------------------------------ listen socket

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        call = self.calls.get(request.match_info["call_id"])
        if call is None or request.query.get("token") != call.token:
            raise web.HTTPForbidden(text="bad listen token")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        if call.status != "active":
            await ws.close(code=WSCloseCode.OK)
            return ws
        call.connections += 1
        call.listeners.add(ws)
        call.joined.set()
        if call.producer is None:
            call.producer = asyncio.create_task(self._produce(call))
        try:
            async for _ in ws:
                pass  # listeners send nothing; this returns when the socket closes
        finally:
            call.listeners.discard(ws)
        return ws

    async def _produce(self, call: SimulatedBlandCall) -> None:
        loop = asyncio.get_running_loop()
        start, sent_at_start = loop.time(), call.cursor
        while call.cursor < len(call.audio) and call.status == "active":
            if not self.realtime:
                while not call.listeners:
                    call.joined.clear()
                    await call.joined.wait()
            if call.drops_at and call.cursor // 2 >= call.drops_at[0]:
                call.drops_at.pop(0)
                call.drops_done += 1
                for ws in list(call.listeners):
                    transport = getattr(ws._req, "transport", None) if ws._req else None
                    if transport is not None:
                        transport.abort()  # no close frame: a dropped TCP connection
                call.listeners.clear()
                continue
            frame = call.audio[call.cursor:call.cursor + self.frame_bytes]
            for ws in list(call.listeners):
                try:
                    await ws.send_bytes(frame)
                except (ConnectionError, RuntimeError):
                    call.listeners.discard(ws)
            call.cursor += len(frame)
            if self.realtime:
                due = start + (call.cursor - sent_at_start) / 2 / RATE
                await asyncio.sleep(max(0.0, due - loop.time()))
            else:
                await asyncio.sleep(0)
        await self._complete(call)

    async def _complete(self, call: SimulatedBlandCall) -> None:
        call.status = "completed"
        for ws in list(call.listeners):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close(code=WSCloseCode.OK, message=b"call ended")
        call.done.set()

    def _on_action(self, action: ProviderAction) -> None:
        call = self.calls.get(action.call_id)
        if (action.provider, action.action) == ("bland", "hangup") and call is not None \
                and call.status == "active":
            call.status = "completed"  # the producer closes the listeners and stops
            if call.producer is None:
                call.done.set()
            elif not self.realtime:
                call.joined.set()


__all__ = ["RATE", "BlandListenServer", "SimulatedBlandCall", "load_mono_16k"]
