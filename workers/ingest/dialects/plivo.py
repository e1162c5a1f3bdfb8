"""Plivo Audio Streams (``<Stream>`` XML / Stream API), as Plivo speaks it: a pure codec.

Plivo is the WebSocket client; every frame is JSON text (protocols.md §2):

* ``start`` once, first: ``start.callId``/``streamId``/``accountId`` (UUIDs), ``start.tracks``
  (``inbound``/``outbound``; ``both`` = two), ``start.mediaFormat`` ``audio/x-mulaw`` at 8000
  or ``audio/x-l16`` at 8000/16000/24000 (little-endian, as Plivo's own transport decodes it),
  and ``extra_headers`` in one of three shapes (``a=1,b=2``; ``a=1;b=2``; JSON).
* ``media``: ``media.track``, base64 ``media.payload``, ``timestamp`` an epoch-ms *string*,
  ``chunk``/``sequenceNumber`` *numbers* (we accept either type for each).
* ``dtmf`` (``dtmf.digit``, ``dtmf.track`` ``inbound``, ``dtmf.timestamp``), ``playedStream``
  (or the older ``played``) for a checkpoint, ``clearedAudio``, ``playFailed``/``error``
  (``reason``), and maybe ``stop``; the socket close is what ends the stream.

Each track becomes its own channel: inbound (the caller) = ``other``, outbound =
``assistant``. Bad input: a first frame that is not a JSON object → 1007; ``media`` before
``start`` → 1008; an encoding or rate Plivo does not send → 1003; anything else odd (unknown
events, bad base64, an unannounced track) → :class:`Ignored`.

Outbound (bidirectional streams only): ``playAudio`` (content type and rate of the stream,
split so that no message reaches Plivo's 64 KB limit), ``checkpoint``, ``clearAudio``,
``sendDTMF``. Auth: ``X-Plivo-Signature-V3`` over the URL and ``X-Plivo-Signature-V3-Nonce``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.audio import mulaw_to_pcm16, pcm16_to_mulaw
from workers.ingest.dialects.events import (
    CallStart,
    Cleared,
    DtmfPressed,
    Event,
    Ignored,
    MarkEvent,
    ProviderError,
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

PROVIDER = "plivo"
Encoding = Literal["mulaw", "l16"]
RATES: dict[Encoding, frozenset[int]] = {"mulaw": frozenset({8000}),
                                         "l16": frozenset({8000, 16000, 24000})}
CONTENT_TYPES: dict[Encoding, str] = {"mulaw": "audio/x-mulaw", "l16": "audio/x-l16"}
_ENCODING_NAMES: dict[str, Encoding] = {
    "audio/x-mulaw": "mulaw", "audio/mulaw": "mulaw", "audio/pcmu": "mulaw",
    "audio/x-l16": "l16", "audio/l16": "l16",
}
#: Plivo's largest WebSocket message; rendered ``playAudio`` messages stay well below it.
MAX_MESSAGE_BYTES = 64 * 1024
#: Raw audio bytes per ``playAudio`` (16 KB of base64, the size Plivo recommends).
PLAY_CHUNK_BYTES = 12_000
_DIGIT = re.compile(r"[0-9*#A-D]")
SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"


def parse_extra_headers(value: Any) -> dict[str, str]:
    """``extra_headers`` in any of its three observed shapes → a flat dict of strings:
    ``test1=12,test2=123`` (XML docs), ``userId=1;sessionId=abc-xyz`` (reference), or JSON."""
    if isinstance(value, dict):
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
    if not isinstance(value, str) or not value.strip():
        return {}
    text = value.strip()
    if text.startswith("{"):
        try:
            return parse_extra_headers(json.loads(text))
        except (ValueError, RecursionError):
            pass  # not JSON after all: try pairs
    separator = ";" if ";" in text else ","
    found: dict[str, str] = {}
    for part in text.split(separator):
        key, equals, raw = part.partition("=")
        if equals and key.strip():
            found[key.strip()] = unquote(raw.strip())
    return found


def parse_media_format(start: dict[str, Any]) -> tuple[Encoding, int]:
    """(encoding, rate) from ``start.mediaFormat`` (or a ``contentType`` MIME with ``rate=``)."""
    media_format = start.get("mediaFormat")
    media_format = media_format if isinstance(media_format, dict) else {}
    raw = text_of(media_format.get("encoding") or start.get("contentType")) or "audio/x-l16"
    base, *params = [p.strip().lower() for p in raw.split(";")]
    encoding = _ENCODING_NAMES.get(base)
    if encoding is None:
        raise UnsupportedAudio(f"encoding {raw[:60]!r} is not supported; expected "
                               "audio/x-mulaw or audio/x-l16")
    rate_value: Any = media_format.get("sampleRate")
    if rate_value is None:
        rate_value = next((p[5:] for p in params if p.startswith("rate=")), 8000)
    rate = int_of(rate_value)
    if rate not in RATES[encoding]:
        allowed = ", ".join(str(r) for r in sorted(RATES[encoding]))
        raise UnsupportedAudio(f"{CONTENT_TYPES[encoding]} at sampleRate {rate_value!r} is "
                               f"not supported; expected {allowed}")
    return encoding, rate


class PlivoCodec:
    """One Plivo stream's inbound state: ``start`` first, then media per track and notices."""

    provider = PROVIDER

    def __init__(self) -> None:
        self._start: CallStart | None = None
        self._encoding: Encoding = "l16"
        self._channels: dict[str, int] = {}
        self._carry: dict[int, bytes] = {}
        self._clock: TrackClock | None = None

    @property
    def start(self) -> CallStart | None:
        return self._start

    @property
    def encoding(self) -> Encoding:
        return self._encoding

    def receive_text(self, text: str) -> list[Event]:
        message = parse_object(text, started=self._start is not None, provider=PROVIDER)
        if isinstance(message, str):
            return [Ignored(message)]
        event = message.get("event")
        if event == "start":
            if self._start is not None:
                return [Ignored("a second start event")]
            self._start = self._parse_start(message)
            return [self._start]
        if self._start is None:
            if event == "media":
                raise ProtocolError("media before the start event; Plivo sends start first "
                                    "(protocols.md §2.2)", close_code=1008)
            return [Ignored(f"{str(event)[:40]!r} before the start event")]
        return self._notice(event, message)

    def receive_binary(self, data: bytes) -> list[Event]:
        return [Ignored("binary frame; Plivo sends audio as base64 in JSON media events")]

    def flush(self) -> bytes:
        left = b"".join(self._carry.values())
        self._carry.clear()
        return left

    def _parse_start(self, message: dict[str, Any]) -> CallStart:
        body = message.get("start")
        if not isinstance(body, dict):
            raise ProtocolError("start event without a start object", close_code=1008)
        self._encoding, rate = parse_media_format(body)
        tracks = parse_tracks(body.get("tracks"))
        self._channels = {track: index for index, track in enumerate(tracks)}
        self._clock = TrackClock(rate, epoch=True)
        extra = parse_extra_headers(message.get("extra_headers", body.get("extra_headers")))
        lowered = {k.lower(): v for k, v in extra.items()}
        stream_id = text_of(body.get("streamId") or message.get("streamId"))
        metadata = {
            "provider": PROVIDER, "callId": text_of(body.get("callId")), "streamId": stream_id,
            "accountId": text_of(body.get("accountId")), "tracks": list(tracks),
            "mediaFormat": {"encoding": CONTENT_TYPES[self._encoding], "sampleRate": rate},
            "extraHeaders": extra,
            # A bidirectional stream may only carry the inbound track (§2.1).
            "bidirectional": "outbound" not in tracks,
        }
        return CallStart(
            call_id=text_of(body.get("callId")), from_=lowered.get("from", ""),
            to=lowered.get("to", ""), direction=lowered.get("direction", ""), rate=rate,
            mix="mono" if len(tracks) == 1 else "tracks", channels=len(tracks),
            roles=tuple(TRACK_ROLES[t] for t in tracks), metadata=metadata,
        )

    def _notice(self, event: Any, message: dict[str, Any]) -> list[Event]:
        if event == "media":
            return self._media(message)
        if event == "dtmf":
            return [self._dtmf(message)]
        if event in ("playedStream", "played"):
            return [MarkEvent(text_of(message.get("name")), "playout")]
        if event == "clearedAudio":
            return [Cleared()]
        if event in ("playFailed", "error"):
            return [ProviderError(str(event), text_of(message.get("reason"))[:200])]
        if event == "stop":
            return [Stop("stop")]
        if event is None:
            return [Ignored("text frame without an event")]
        return [Ignored(f"unknown event {str(event)[:40]!r}")]

    def _media(self, message: dict[str, Any]) -> list[Event]:
        assert self._start is not None and self._clock is not None
        media = message.get("media")
        if not isinstance(media, dict):
            return [Ignored("media event without a media object")]
        raw_track = media.get("track")
        track = track_name(raw_track) if raw_track is not None else next(iter(self._channels))
        channel = self._channels.get(track) if track else None
        if channel is None:
            return [Ignored(f"media for track {str(raw_track)[:20]!r}, not in start.tracks")]
        payload = decode_payload(media.get("payload"))
        if payload is None:
            return [Ignored("media payload is not base64")]
        if self._encoding == "mulaw":
            pcm = mulaw_to_pcm16(payload)
        else:
            data = self._carry.pop(channel, b"") + payload
            whole = len(data) - len(data) % 2
            pcm, rest = data[:whole], data[whole:]
            if rest:
                self._carry[channel] = rest
        at = self._clock.place(channel, timestamp=media.get("timestamp"),
                               chunk=media.get("chunk"), samples=len(pcm) // 2)
        return [TrackAudio(channel, pcm, at)] if pcm else []

    def _dtmf(self, message: dict[str, Any]) -> Event:
        assert self._clock is not None
        body = message.get("dtmf")
        if not isinstance(body, dict):
            return Ignored("dtmf event without a dtmf object")
        digit = text_of(body.get("digit")).strip().upper()
        if not _DIGIT.fullmatch(digit):
            return Ignored("dtmf event without a digit 0-9, *, #, A-D")
        return DtmfPressed(digit, None, self._clock.offset_ms(body.get("timestamp")))


# --------------------------------------------------------------------------- outbound


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def render_play_audio(payload: bytes, *, encoding: Encoding, sample_rate: int,
                      chunk_bytes: int = PLAY_CHUNK_BYTES) -> list[str]:
    """``playAudio`` messages for ``payload`` (already in the stream's encoding and rate),
    split into chunks of at most ``chunk_bytes`` raw bytes (whole samples), each well under
    Plivo's 64 KB message limit."""
    if sample_rate not in RATES[encoding]:
        raise ValueError(f"{CONTENT_TYPES[encoding]} at {sample_rate} Hz is not a Plivo format")
    width = 1 if encoding == "mulaw" else 2
    if len(payload) % width:
        raise ValueError("L16 audio needs whole 16-bit samples")
    step = max(width, chunk_bytes - chunk_bytes % width)
    if (step + 2) // 3 * 4 + 200 > MAX_MESSAGE_BYTES:
        raise ValueError(f"chunks of {chunk_bytes} bytes would pass Plivo's 64 KB limit")
    frames = []
    for start in range(0, len(payload), step):
        frames.append(_dumps({"event": "playAudio", "media": {
            "contentType": CONTENT_TYPES[encoding], "sampleRate": sample_rate,
            "payload": base64.b64encode(payload[start:start + step]).decode("ascii")}}))
    return frames


def render_checkpoint(stream_id: str, name: str) -> str:
    """Plivo answers ``playedStream`` once everything sent before it has played."""
    if not name:
        raise ValueError("a checkpoint needs a non-empty name")
    return _dumps({"event": "checkpoint", "streamId": stream_id, "name": name})


def render_clear_audio(stream_id: str) -> str:
    """Empty Plivo's playback buffer; it answers ``clearedAudio``."""
    return _dumps({"event": "clearAudio", "streamId": stream_id})


def render_send_dtmf(digits: str) -> str:
    """Play DTMF tones into the call."""
    if not digits or not all(_DIGIT.fullmatch(d) for d in digits.upper()):
        raise ValueError(f"digits {digits!r}; expected 0-9, *, #, A-D")
    return _dumps({"event": "sendDTMF", "dtmf": digits.upper()})


class PlivoPlayer:
    """What a bidirectional Plivo stream has outstanding (pure): checkpoints not yet acked.
    After ``clearAudio`` pending checkpoints are never acknowledged (§2.3), so they are
    reported cleared at once."""

    def __init__(self, *, stream_id: str, encoding: Encoding, rate: int,
                 bidirectional: bool = True) -> None:
        self.stream_id = stream_id
        self.encoding = encoding
        self.rate = rate
        self.bidirectional = bidirectional
        self._pending: list[str] = []

    @classmethod
    def for_start(cls, start: CallStart) -> PlivoPlayer:
        media_format = start.metadata.get("mediaFormat") or {}
        encoding: Encoding = "mulaw" if media_format.get("encoding") == "audio/x-mulaw" \
            else "l16"
        return cls(stream_id=text_of(start.metadata.get("streamId")), encoding=encoding,
                   rate=start.rate, bidirectional=bool(start.metadata.get("bidirectional")))

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(self._pending)

    def _require(self) -> None:
        if not self.bidirectional:
            raise ControlUnsupported("this Plivo stream is not bidirectional (it carries the "
                                     "outbound track); Plivo accepts nothing on it")

    def play(self, pcm: bytes) -> list[str]:
        """PCM16 LE at the stream's rate → ``playAudio`` messages in the stream's encoding."""
        self._require()
        payload = pcm16_to_mulaw(pcm) if self.encoding == "mulaw" else pcm
        return render_play_audio(payload, encoding=self.encoding, sample_rate=self.rate)

    def checkpoint(self, name: str) -> str:
        self._require()
        frame = render_checkpoint(self.stream_id, name)
        self._pending.append(name)
        return frame

    def clear(self) -> tuple[str, list[str]]:
        """``clearAudio``, and the checkpoints it cancels (never acknowledged by Plivo)."""
        self._require()
        cancelled, self._pending = self._pending, []
        return render_clear_audio(self.stream_id), cancelled

    def on_reply(self, event: MarkEvent | Cleared | ProviderError) -> str:
        if isinstance(event, MarkEvent):
            if event.name in self._pending:
                self._pending.remove(event.name)
            return f"checkpoint {event.name} played"
        if isinstance(event, Cleared):
            return "playback cleared"
        return f"{event.kind}: {event.reason}"


# --------------------------------------------------------------------------- signature


def canonical_url(url: str) -> str:
    """The URL Plivo signs for a GET: ``scheme://host/path`` plus ``?`` and the sorted query
    (plivo-python ``construct_get_url``)."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    params = parse_qs(parts.query, keep_blank_values=True)
    query = "&".join("&".join(f"{key}={v}" for v in sorted(params[key]))
                     for key in sorted(params))
    return f"{base}?{query}" if query else base


def signature_v3(auth_token: str, url: str, nonce: str) -> str:
    """base64(HMAC-SHA256(auth token, canonical URL + "." + nonce))."""
    message = f"{canonical_url(url)}.{nonce}".encode()
    digest = hmac.new(auth_token.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_ok(auth_token: str, urls: Iterable[str], nonce: str | None,
                 header: str | None) -> bool:
    """Whether any of the comma-separated signatures matches any candidate URL."""
    if not nonce or not header:
        return False
    given = [s.strip() for s in header.split(",") if s.strip()]
    return any(hmac.compare_digest(signature_v3(auth_token, url, nonce).encode(),
                                   candidate.encode())
               for url in urls for candidate in given)


__all__ = [
    "CONTENT_TYPES", "MAX_MESSAGE_BYTES", "NONCE_HEADER", "PROVIDER", "RATES",
    "SIGNATURE_HEADER", "PlivoCodec", "PlivoPlayer", "canonical_url", "parse_extra_headers",
    "parse_media_format", "render_checkpoint", "render_clear_audio", "render_play_audio",
    "render_send_dtmf", "signature_ok", "signature_v3",
]
