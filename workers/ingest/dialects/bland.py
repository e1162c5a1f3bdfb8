"""Bland AI live listen, where callscribe is the client: a pure codec (protocols.md §4).

1. ``POST {api}/v1/calls/{call_id}/listen`` with ``authorization: <API key>`` answers
   ``{"status":"success","data":{"url":"wss://…"},"errors":null}`` or an error body
   ``{"status":"error","data":null,"errors":[{"error":"CALL_NOT_FOUND","message":"…"}]}``
   (:func:`parse_listen_response`).
2. The returned URL (its token authenticates; no header) streams **binary PCM16 LE, 16 kHz,
   mono, every party mixed**, frames of no documented size (odd bytes are carried), and no
   text, DTMF or playback. The socket closes when the call ends.

So a Bland call is one ``mixed`` channel of role ``other`` at 16 kHz. The codec has no start
frame to read: :meth:`BlandCodec.begin` makes the :class:`CallStart` when the first socket
opens; a reconnect reuses the same codec, so the channel's ``seq`` goes on without a gap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from workers.ingest.dialects.events import Audio, CallStart, Event, Ignored, text_of
from workers.ingest.errors import BlandListenRefused

PROVIDER = "bland"
RATE = 16000
ERROR_CODES = ("MISSING_CALL_ID", "INVALID_ORG_PREFERENCES", "CALL_NOT_FOUND",
               "INVALID_CALL_STATUS", "INTERNAL_SERVER_ERROR")


class BlandCodec:
    """One Bland listen subscription's inbound state (across reconnects)."""

    provider = PROVIDER

    def __init__(self, call_id: str, *, metadata: dict[str, Any] | None = None) -> None:
        self._call_id = call_id
        self._metadata = {"provider": PROVIDER, "callId": call_id, **(metadata or {})}
        self._start: CallStart | None = None
        self._carry = b""

    @property
    def start(self) -> CallStart | None:
        return self._start

    def begin(self) -> list[Event]:
        """The :class:`CallStart`, the first time a listen socket opens (then nothing)."""
        if self._start is not None:
            return []
        self._start = CallStart(call_id=self._call_id, from_="", to="", direction="",
                                rate=RATE, mix="mixed", channels=1, roles=("other",),
                                metadata=self._metadata)
        return [self._start]

    def receive_binary(self, data: bytes) -> list[Event]:
        if self._start is None:
            self.begin()
        buffer = self._carry + bytes(data)
        whole = len(buffer) - len(buffer) % 2
        self._carry = buffer[whole:]
        return [Audio((buffer[:whole],))] if whole else []

    def receive_text(self, text: str) -> list[Event]:
        return [Ignored("text frame; Bland's listen socket sends only binary audio")]

    def flush(self) -> bytes:
        left, self._carry = self._carry, b""
        return left


def listen_url(api_url: str, call_id: str) -> str:
    """``{api}/v1/calls/{call_id}/listen``, the call id escaped as one path segment."""
    return f"{api_url.rstrip('/')}/v1/calls/{quote(call_id, safe='')}/listen"


@dataclass(frozen=True, slots=True)
class ListenGranted:
    """Where to connect for the call's audio."""

    url: str


def parse_listen_response(status: int, body: bytes | str) -> ListenGranted:
    """The answer to a listen request; raises :class:`BlandListenRefused` with Bland's error
    code (or, for a body without one, a code derived from the HTTP status)."""
    try:
        data: Any = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    data = data if isinstance(data, dict) else {}
    payload = data.get("data")
    url = payload.get("url") if isinstance(payload, dict) else None
    if status < 400 and isinstance(url, str) and \
            urlsplit(url).scheme in ("ws", "wss") and data.get("status") != "error":
        return ListenGranted(url)
    code, message = _first_error(data.get("errors"))
    if not code:
        message = message or text_of(data.get("message"))[:200]
        code = ("CALL_NOT_FOUND" if status == 404 else "INTERNAL_SERVER_ERROR"
                if status >= 500 else "UNAUTHORIZED" if status in (401, 403)
                else "UNEXPECTED_RESPONSE")
        if status < 400:
            message = message or "no WebSocket URL in data.url"
    raise BlandListenRefused(code, message, status=status)


def _first_error(errors: Any) -> tuple[str, str]:
    if isinstance(errors, list) and errors:
        first = errors[0]
        if isinstance(first, dict):
            return (text_of(first.get("error") or first.get("code"))[:60],
                    text_of(first.get("message"))[:200])
        return text_of(first)[:60], ""
    return "", ""


__all__ = ["ERROR_CODES", "PROVIDER", "RATE", "BlandCodec", "ListenGranted", "listen_url",
           "parse_listen_response"]
