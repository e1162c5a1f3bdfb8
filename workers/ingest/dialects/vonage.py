"""Vonage Voice API WebSockets (an NCCO ``connect`` to a ``websocket`` endpoint), as Vonage
speaks it: a pure codec.

Vonage is the WebSocket client. Its first message is text, a JSON object:
``{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", ...}`` plus the
endpoint's custom ``headers`` from the NCCO, top level. Then binary frames of 16-bit signed
little-endian linear PCM, mono, at the negotiated rate (8, 16 or 24 kHz), 20 ms each. Text
events after it: ``websocket:dtmf`` (``digit``, ``duration``, when DTMF is sent to the
socket), ``websocket:cleared`` (our ``clear`` emptied the playback buffer),
``websocket:notify`` (audio queued before our ``notify`` has played; its ``payload`` back).

Back to Vonage: binary frames in the same format, **exactly 20 ms each** (the last padded
with silence), ``{"action": "clear"}`` and ``{"action": "notify", "payload": {...}}``.

The socket carries one leg's audio (what the caller says: role ``other``). Vonage signs
nothing on the upgrade that we could verify without its JWT keys, so the provider module
checks a shared token (``?token=`` in the NCCO ``uri``, or ``Authorization: Bearer``).
"""

from __future__ import annotations

import json
from typing import Any

from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.events import (
    Audio,
    CallStart,
    Cleared,
    DtmfPressed,
    Event,
    Ignored,
    MarkEvent,
    ProviderError,
    Stop,
    int_of,
    text_of,
)

PROVIDER = "vonage"
RATES = (8000, 16000, 24000)
DEFAULT_RATE = 16000
FRAME_MS = 20
#: Header names (top level of the first message) that may carry Vonage's call uuid.
CALL_ID_KEYS = ("uuid", "call_uuid", "callUuid", "conversation_uuid")


def parse_content_type(value: Any) -> int:
    """``audio/l16;rate=16000`` → 16000 (missing: 16000); anything else closes 1003."""
    if value is None:
        return DEFAULT_RATE
    text = str(value).strip().lower().replace(" ", "")
    kind, _, params = text.partition(";")
    rate = DEFAULT_RATE
    for param in params.split(";") if params else []:
        key, _, val = param.partition("=")
        if key == "rate":
            parsed = int_of(val)
            rate = parsed if parsed is not None else -1
    if kind != "audio/l16" or rate not in RATES:
        raise UnsupportedAudio(f"content-type {str(value)[:60]!r} is not supported; expected "
                               "audio/l16;rate=8000|16000|24000")
    return rate


class VonageCodec:
    """One Vonage WebSocket: the connected message first, then audio and events."""

    provider = PROVIDER

    def __init__(self) -> None:
        self._start: CallStart | None = None
        self._carry = b""

    @property
    def start(self) -> CallStart | None:
        return self._start

    def receive_text(self, text: str) -> list[Event]:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            if self._start is None:
                raise ProtocolError("the first text frame is not a JSON object; expected "
                                    "Vonage's websocket:connected message", close_code=1007)
            return [Ignored("text frame is not a JSON object")]
        if self._start is None:
            self._start = self._parse_start(message)
            return [self._start]
        return [self._event(message)]

    def _parse_start(self, message: dict[str, Any]) -> CallStart:
        rate = parse_content_type(message.get("content-type", message.get("contentType")))
        call_id = next((text_of(message[k]) for k in CALL_ID_KEYS if text_of(message.get(k))),
                       "")
        return CallStart(
            call_id=call_id, from_=text_of(message.get("from")), to=text_of(message.get("to")),
            direction=text_of(message.get("direction")), rate=rate, mix="mono", channels=1,
            roles=("other",), metadata=dict(message))

    def _event(self, message: dict[str, Any]) -> Event:
        event = message.get("event")
        if event == "websocket:dtmf":
            digit = text_of(message.get("digit"))
            if len(digit) != 1 or digit not in "0123456789*#ABCDabcd":
                return Ignored("dtmf without a digit")
            return DtmfPressed(digit.upper(), int_of(message.get("duration")))
        if event == "websocket:cleared":
            return Cleared()
        if event == "websocket:notify":
            payload = message.get("payload")
            name = text_of(payload.get("name")) if isinstance(payload, dict) else ""
            return MarkEvent(name, "playout")
        if event == "websocket:error":
            return ProviderError("websocket:error", text_of(message.get("message"))[:300])
        if event in ("websocket:disconnected", "websocket:stop"):
            return Stop(str(event))
        if event == "websocket:connected":
            return Ignored("a second websocket:connected")
        return Ignored(f"unknown event {text_of(event)[:40]!r}")

    def receive_binary(self, data: bytes) -> list[Event]:
        if self._start is None:
            raise ProtocolError("binary audio before the websocket:connected text message",
                                close_code=1008)
        if not data:
            return []
        buf = self._carry + bytes(data) if self._carry else bytes(data)
        whole = len(buf) - len(buf) % 2
        self._carry = buf[whole:]
        return [Audio((buf[:whole],))] if whole else []

    def flush(self) -> bytes:
        left, self._carry = self._carry, b""
        return left


def render_clear() -> str:
    return json.dumps({"action": "clear"})


def render_notify(name: str) -> str:
    if not name:
        raise ValueError("a notify needs a non-empty name")
    return json.dumps({"action": "notify", "payload": {"name": name}})


def frames(pcm: bytes, rate: int) -> list[bytes]:
    """PCM16 LE at ``rate`` as exact 20 ms frames (the last padded with silence)."""
    size = rate * FRAME_MS // 1000 * 2
    pcm = pcm[:len(pcm) - len(pcm) % 2]
    return [pcm[i:i + size].ljust(size, b"\x00") for i in range(0, len(pcm), size)]


__all__ = ["PROVIDER", "RATES", "VonageCodec", "frames", "parse_content_type", "render_clear",
           "render_notify"]
