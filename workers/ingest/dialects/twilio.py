"""Twilio Media Streams (``<Start|Connect><Stream>``), as Twilio speaks it: a pure codec.

Twilio is the WebSocket client (wss only); every frame is JSON text (protocols.md §3):

* ``connected`` first (``protocol``, ``version``; no ``sequenceNumber``), then ``start`` once:
  ``start.callSid``/``accountSid``/``streamSid`` (a UUID in the public capture, ``MZ…`` in the
  docs: never validated), ``start.tracks``, ``start.mediaFormat`` (always μ-law 8000 mono),
  ``start.customParameters`` (the ``<Parameter>`` elements: call metadata).
* ``media``: ``media.track`` ``inbound``/``outbound``, ``chunk`` and ``timestamp`` (ms since the
  stream started) as *strings*, base64 ``payload``; ``dtmf`` (``dtmf.track`` =
  ``inbound_track``), ``mark`` (the echo of one we sent, played *or* cleared), ``stop``.

Tracks become channels (inbound = ``other``, outbound = ``assistant``). A bidirectional stream
(``<Connect>``) cannot be told from a unidirectional one (``<Start>``) on the wire, so it is a
setting, overridable per call by a ``callscribeBidirectional`` parameter; two tracks are always
unidirectional (``<Connect>`` allows only the inbound track). On a unidirectional stream we
send nothing at all: Twilio fails the stream on any message (error 31924).

Auth: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, the full URL + sorted POST
parameters — none for a WebSocket)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.audio import mulaw_to_pcm16, pcm16_to_mulaw
from workers.ingest.dialects.events import (
    CallStart,
    DtmfPressed,
    Event,
    Ignored,
    MarkEvent,
    Stop,
    TrackAudio,
    int_of,
    text_of,
)
from workers.ingest.dialects.tracks import (
    TRACK_ROLES,
    TrackClock,
    decode_payload,
    parse_object,
    parse_tracks,
    track_name,
)
from workers.ingest.errors import ControlUnsupported

PROVIDER = "twilio"
RATE = 8000
SIGNATURE_HEADER = "X-Twilio-Signature"
#: customParameters key that says whether this stream is bidirectional (``true``/``false``).
BIDIRECTIONAL_PARAMETER = "callscribeBidirectional"
#: μ-law bytes per outbound ``media`` message (1 s; Twilio takes any size).
MEDIA_CHUNK_BYTES = 8000
_DIGITS = frozenset("0123456789*#ABCD")


class TwilioCodec:
    """One Twilio stream's inbound state: ``connected``, ``start``, then media and notices."""

    provider = PROVIDER

    def __init__(self, *, bidirectional: bool = False) -> None:
        self._bidirectional_default = bidirectional
        self._start: CallStart | None = None
        self._connected: dict[str, str] = {}
        self._channels: dict[str, int] = {}
        self._clock = TrackClock(RATE, epoch=False)

    @property
    def start(self) -> CallStart | None:
        return self._start

    def receive_text(self, text: str) -> list[Event]:
        message = parse_object(text, started=self._start is not None, provider=PROVIDER)
        if isinstance(message, str):
            return [Ignored(message)]
        event = message.get("event")
        if event == "connected":
            self._connected = {"protocol": text_of(message.get("protocol")),
                               "version": text_of(message.get("version"))}
            return []
        if event == "start":
            if self._start is not None:
                return [Ignored("a second start event")]
            self._start = self._parse_start(message)
            return [self._start]
        if self._start is None:
            if event == "media":
                raise ProtocolError("media before the start event; Twilio sends connected "
                                    "and start first (protocols.md §3.2)", close_code=1008)
            return [Ignored(f"{str(event)[:40]!r} before the start event")]
        return [self._notice(event, message)]

    def receive_binary(self, data: bytes) -> list[Event]:
        return [Ignored("binary frame; Twilio sends audio as base64 in JSON media events")]

    def flush(self) -> bytes:
        return b""  # μ-law is one byte per sample: nothing is ever left over

    def _parse_start(self, message: dict[str, Any]) -> CallStart:
        body = message.get("start")
        if not isinstance(body, dict):
            raise ProtocolError("start event without a start object", close_code=1008)
        media_format = body.get("mediaFormat")
        media_format = media_format if isinstance(media_format, dict) else {}
        encoding = text_of(media_format.get("encoding") or "audio/x-mulaw").strip().lower()
        rate = int_of(media_format.get("sampleRate", RATE))
        channels = int_of(media_format.get("channels", 1))
        if encoding.split(";")[0] not in ("audio/x-mulaw", "audio/mulaw") or rate != RATE \
                or channels != 1:
            raise UnsupportedAudio(
                f"media format {encoding[:40]!r} at {media_format.get('sampleRate')!r} Hz x "
                f"{media_format.get('channels')!r} is not supported; Twilio always sends "
                "audio/x-mulaw at 8000 Hz mono")
        tracks = parse_tracks(body.get("tracks"))
        self._channels = {track: index for index, track in enumerate(tracks)}
        custom = body.get("customParameters")
        custom = {str(k): text_of(v) for k, v in custom.items()} if isinstance(custom, dict) \
            else {}
        lowered = {k.lower(): v for k, v in custom.items()}
        override = lowered.get(BIDIRECTIONAL_PARAMETER.lower(), "").strip().lower()
        bidirectional = {"true": True, "false": False}.get(override,
                                                          self._bidirectional_default)
        metadata = {
            "provider": PROVIDER, "callSid": text_of(body.get("callSid")),
            "streamSid": text_of(body.get("streamSid") or message.get("streamSid")),
            "accountSid": text_of(body.get("accountSid")), "tracks": list(tracks),
            "customParameters": custom,
            "bidirectional": bidirectional and "outbound" not in tracks,
            **({"connected": self._connected} if self._connected else {}),
        }
        return CallStart(
            call_id=text_of(body.get("callSid")),
            from_=lowered.get("from") or lowered.get("caller") or "",
            to=lowered.get("to") or lowered.get("called") or "",
            direction=lowered.get("direction", ""), rate=RATE,
            mix="mono" if len(tracks) == 1 else "tracks", channels=len(tracks),
            roles=tuple(TRACK_ROLES[t] for t in tracks), metadata=metadata,
        )

    def _notice(self, event: Any, message: dict[str, Any]) -> Event:
        found = message.get(event) if isinstance(event, str) else None
        body: dict[str, Any] = found if isinstance(found, dict) else {}
        if event in ("media", "dtmf", "mark") and not isinstance(found, dict):
            return Ignored(f"{event} event without a {event} object")
        if event == "media":
            return self._media(body)
        if event == "dtmf":
            digit = text_of(body.get("digit")).strip().upper()
            if len(digit) != 1 or digit not in _DIGITS:
                return Ignored("dtmf event without a digit 0-9, *, #, A-D")
            return DtmfPressed(digit, None)
        if event == "mark":
            return MarkEvent(text_of(body.get("name")), "playout")
        if event == "stop":
            return Stop("stop")
        if event is None:
            return Ignored("text frame without an event")
        return Ignored(f"unknown event {str(event)[:40]!r}")

    def _media(self, media: dict[str, Any]) -> Event:
        raw_track = media.get("track")
        track = track_name(raw_track) if raw_track is not None else next(iter(self._channels))
        channel = self._channels.get(track) if track else None
        if channel is None:
            return Ignored(f"media for track {str(raw_track)[:20]!r}, not in start.tracks")
        payload = decode_payload(media.get("payload"))
        if payload is None:
            return Ignored("media payload is not base64")
        at = self._clock.place(channel, timestamp=media.get("timestamp"),
                               chunk=media.get("chunk"), samples=len(payload))
        return TrackAudio(channel, mulaw_to_pcm16(payload), at)


# --------------------------------------------------------------------------- outbound


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def render_media(stream_sid: str, mulaw: bytes) -> str:
    """Audio to play: base64 μ-law at 8000 Hz, no file header."""
    return _dumps({"event": "media", "streamSid": stream_sid,
                   "media": {"payload": base64.b64encode(mulaw).decode("ascii")}})


def render_mark(stream_sid: str, name: str) -> str:
    """Twilio echoes the mark when the audio before it has played (or was cleared)."""
    if not name:
        raise ValueError("a mark needs a non-empty name")
    return _dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def render_clear(stream_sid: str) -> str:
    """Empty Twilio's buffer; every pending mark is echoed back."""
    return _dumps({"event": "clear", "streamSid": stream_sid})


class TwilioPlayer:
    """What a bidirectional Twilio stream has outstanding (pure). A cleared mark and a played
    one look the same on the wire; marks pending when we sent ``clear`` are the cleared ones.
    On a unidirectional stream every method raises :class:`ControlUnsupported`."""

    def __init__(self, *, stream_sid: str, bidirectional: bool) -> None:
        self.stream_sid = stream_sid
        self.bidirectional = bidirectional
        self._pending: list[str] = []
        self._clearing: list[str] = []

    @classmethod
    def for_start(cls, start: CallStart) -> TwilioPlayer:
        return cls(stream_sid=text_of(start.metadata.get("streamSid")),
                   bidirectional=bool(start.metadata.get("bidirectional")))

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(self._pending)

    def _require(self) -> None:
        if not self.bidirectional:
            raise ControlUnsupported("this Twilio stream is unidirectional (<Start><Stream>); "
                                     "Twilio fails the stream on any message we send")

    def play(self, pcm: bytes) -> list[str]:
        """PCM16 LE at 8000 Hz → ``media`` messages of μ-law."""
        self._require()
        mulaw = pcm16_to_mulaw(pcm)
        return [render_media(self.stream_sid, mulaw[i:i + MEDIA_CHUNK_BYTES])
                for i in range(0, len(mulaw), MEDIA_CHUNK_BYTES)]

    def mark(self, name: str) -> str:
        self._require()
        frame = render_mark(self.stream_sid, name)
        self._pending.append(name)
        return frame

    def clear(self) -> str:
        self._require()
        self._clearing += self._pending
        self._pending = []
        return render_clear(self.stream_sid)

    def on_reply(self, event: MarkEvent) -> MarkEvent:
        """The echo as what it means: ``cleared`` if it was pending at a ``clear``."""
        if event.name in self._clearing:
            self._clearing.remove(event.name)
            return MarkEvent(event.name, "cleared")
        if event.name in self._pending:
            self._pending.remove(event.name)
        return MarkEvent(event.name, "playout")


# --------------------------------------------------------------------------- signature


def signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """base64(HMAC-SHA1(auth token, url + each sorted POST parameter's name and value))."""
    given = params or {}
    data = url + "".join(key + given[key] for key in sorted(given))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """``url`` with and without its scheme's default port (Twilio's own validators try both)."""
    parts = urlsplit(url)
    default = {"wss": 443, "https": 443, "ws": 80, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    variants = [url]
    try:
        port = parts.port
    except ValueError:  # a Host header with a port that is not a number
        return variants
    if default is not None:
        if port is None:
            variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
        elif port == default:
            variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return variants


def signature_ok(auth_token: str, urls: Iterable[str], header: str | None) -> bool:
    if not header:
        return False
    return any(hmac.compare_digest(signature(auth_token, variant).encode(),
                                   header.strip().encode())
               for url in urls for variant in url_variants(url))


__all__ = [
    "BIDIRECTIONAL_PARAMETER", "PROVIDER", "RATE", "SIGNATURE_HEADER", "TwilioCodec",
    "TwilioPlayer", "render_clear", "render_mark", "render_media", "signature",
    "signature_ok", "url_variants",
]
