"""Telnyx Media Streaming over WebSockets (Call Control ``stream_url``, TeXML ``<Stream>``), as
Telnyx speaks it: a pure codec.

Telnyx is the WebSocket client; every frame is JSON text, with ``stream_id`` and a
``sequence_number`` string at the top level:

* ``connected`` (``version``; with ``connected.x-telnyx-streaming-auth-token`` when the stream
  has an auth token: that value is never kept), then ``start`` once: ``start.call_control_id``
  (the Call Control id, our call id and the id of the REST commands), ``call_session_id``,
  ``user_id``, ``from``, ``to``, ``client_state``, ``tags``, ``custom_parameters`` and
  ``media_format`` (``encoding`` PCMU, PCMA, L16, G722, OPUS or AMR-WB; ``sample_rate``;
  ``channels``).
* ``media``: ``media.track`` ``inbound``/``outbound``, ``chunk`` and ``timestamp``, base64
  ``payload``: the RTP payload without its header (G.711 bytes, or L16 in RTP's network byte
  order, big-endian). Telnyx does not guarantee the order of media frames.
* ``dtmf`` (``dtmf.digit``), ``mark`` (the echo of one we sent: played, or returned by a
  ``clear``), ``error`` (``payload`` with ``code``, ``title``, ``detail``), ``stop``.

Each track is its own channel: inbound (the caller) = ``other``, outbound = ``assistant``.
``start`` does not say which tracks (``stream_track``) the stream carries, nor whether it is
bidirectional (``stream_bidirectional_mode``): both come from a ``tracks``/``stream_track``
field of ``start`` if Telnyx sends one, else the custom parameters ``callscribeTracks`` /
``callscribeBidirectional``, else the configured defaults. Media of a track not announced is
ignored (counted), never guessed into a channel.

Bad input: a first frame that is not a JSON object → 1007; ``media`` before ``start`` → 1008;
an encoding, rate or channel count we do not decode → 1003; anything else odd (unknown
events, bad base64, an unannounced track, a second ``start``) → :class:`Ignored`.

Outbound (RTP bidirectional streams only): ``media`` (the stream's own encoding and rate,
20 ms to 1 s per message; Telnyx takes 20 ms to 30 s), ``mark``, ``clear``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Literal

from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.audio import (
    alaw_to_pcm16,
    mulaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_mulaw,
    swap16,
)
from workers.ingest.dialects.events import (
    CallStart,
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

PROVIDER = "telnyx"
Encoding = Literal["PCMU", "PCMA", "L16"]
RATES: dict[Encoding, frozenset[int]] = {"PCMU": frozenset({8000}), "PCMA": frozenset({8000}),
                                         "L16": frozenset({8000, 16000, 24000})}
_ENCODING_NAMES: dict[str, Encoding] = {
    "pcmu": "PCMU", "g711u": "PCMU", "mulaw": "PCMU", "audio/x-mulaw": "PCMU",
    "audio/pcmu": "PCMU", "pcma": "PCMA", "g711a": "PCMA", "alaw": "PCMA",
    "audio/x-alaw": "PCMA", "audio/pcma": "PCMA", "l16": "L16", "audio/l16": "L16",
}
#: The header (and ``connected`` field) carrying the stream's auth token.
TOKEN_HEADER = "x-telnyx-streaming-auth-token"
#: Custom parameters that say what ``start`` does not (case-insensitive names).
TRACKS_PARAMETER = "callscribeTracks"
BIDIRECTIONAL_PARAMETER = "callscribeBidirectional"
#: Outbound media per message: at most 1 s, at least 20 ms (Telnyx's lower bound).
PLAY_CHUNK_MS = 1000
MIN_PLAY_MS = 20
_DIGIT = re.compile(r"[0-9*#A-D]")


def parse_media_format(start: dict[str, Any]) -> tuple[Encoding, int]:
    """(encoding, rate) of ``start.media_format``; missing = PCMU 8000 (Telnyx's default is
    the call's codec, PCMU on most calls). Anything else we cannot decode closes 1003."""
    media_format = start.get("media_format")
    media_format = media_format if isinstance(media_format, dict) else {}
    raw = text_of(media_format.get("encoding")).strip() or "PCMU"
    encoding = _ENCODING_NAMES.get(raw.lower())
    if encoding is None:
        raise UnsupportedAudio(f"media_format encoding {raw[:40]!r} is not supported; expected "
                               "PCMU, PCMA or L16 (set stream_codec on the stream)")
    rate_value = media_format.get("sample_rate", 8000)
    rate = int_of(rate_value)
    if rate not in RATES[encoding]:
        allowed = ", ".join(str(r) for r in sorted(RATES[encoding]))
        raise UnsupportedAudio(f"{encoding} at sample_rate {str(rate_value)[:20]!r} is not "
                               f"supported; expected {allowed}")
    channels = media_format.get("channels", 1)
    if int_of(channels) != 1:
        raise UnsupportedAudio(f"media_format channels {str(channels)[:20]!r} is not "
                               "supported; Telnyx streams one track per media frame (1)")
    return encoding, rate


def parse_custom_parameters(value: Any) -> dict[str, str]:
    """``custom_parameters`` as a flat dict: an object (the docs' example) or a list of
    ``{"name", "value"}`` (the shape Call Control takes them in)."""
    if isinstance(value, dict):
        return {str(k): text_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return {text_of(item.get("name")): text_of(item.get("value")) for item in value
                if isinstance(item, dict) and text_of(item.get("name"))}
    return {}


def decode(payload: bytes, encoding: Encoding) -> bytes:
    """An RTP payload → PCM16 LE (L16: whole samples only)."""
    if encoding == "PCMU":
        return mulaw_to_pcm16(payload)
    if encoding == "PCMA":
        return alaw_to_pcm16(payload)
    return swap16(payload)


def encode(pcm: bytes, encoding: Encoding) -> bytes:
    """PCM16 LE → an RTP payload in ``encoding``."""
    if encoding == "PCMU":
        return pcm16_to_mulaw(pcm)
    if encoding == "PCMA":
        return pcm16_to_alaw(pcm)
    return swap16(pcm)


class TelnyxCodec:
    """One Telnyx stream's inbound state: ``connected``, ``start``, then media and notices.
    ``tracks`` (``inbound_track``, ``outbound_track``, ``both_tracks``) and ``bidirectional``
    are the defaults for what ``start`` does not say."""

    provider = PROVIDER

    def __init__(self, *, tracks: str = "inbound_track", bidirectional: bool = False) -> None:
        self._default_tracks = parse_tracks(tracks)
        self._bidirectional_default = bidirectional
        self._start: CallStart | None = None
        self._connected: dict[str, str] = {}
        self._encoding: Encoding = "PCMU"
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
        if event == "connected":
            self._connected = {"version": text_of(message.get("version"))}
            return []
        if event == "start":
            if self._start is not None:
                return [Ignored("a second start event")]
            self._start = self._parse_start(message)
            return [self._start]
        if self._start is None:
            if event == "media":
                raise ProtocolError("media before the start event; Telnyx sends connected "
                                    "and start first", close_code=1008)
            return [Ignored(f"{str(event)[:40]!r} before the start event")]
        return self._notice(event, message)

    def receive_binary(self, data: bytes) -> list[Event]:
        return [Ignored("binary frame; Telnyx sends audio as base64 in JSON media events")]

    def flush(self) -> bytes:
        left = b"".join(self._carry.values())
        self._carry.clear()
        return left

    def _parse_start(self, message: dict[str, Any]) -> CallStart:
        body = message.get("start")
        if not isinstance(body, dict):
            raise ProtocolError("start event without a start object", close_code=1008)
        self._encoding, rate = parse_media_format(body)
        custom = parse_custom_parameters(body.get("custom_parameters"))
        lowered = {k.lower(): v for k, v in custom.items()}
        announced = body.get("tracks", body.get("stream_track"))
        if announced is None:
            announced = lowered.get(TRACKS_PARAMETER.lower())
        tracks = parse_tracks(announced) if announced else self._default_tracks
        self._channels = {track: index for index, track in enumerate(tracks)}
        self._clock = TrackClock(rate, epoch=True)
        override = lowered.get(BIDIRECTIONAL_PARAMETER.lower(), "").strip().lower()
        bidirectional = {"true": True, "rtp": True, "false": False, "mp3": False}.get(
            override, self._bidirectional_default)
        tags = body.get("tags")
        metadata = {
            "provider": PROVIDER, "call_control_id": text_of(body.get("call_control_id")),
            "call_session_id": text_of(body.get("call_session_id")),
            "call_leg_id": text_of(body.get("call_leg_id")),
            "user_id": text_of(body.get("user_id")),
            "stream_id": text_of(message.get("stream_id") or body.get("stream_id")),
            "tracks": list(tracks),
            "media_format": {"encoding": self._encoding, "sample_rate": rate, "channels": 1},
            "custom_parameters": custom, "client_state": text_of(body.get("client_state")),
            "tags": [text_of(t) for t in tags] if isinstance(tags, list) else [],
            "bidirectional": bidirectional,
            **({"connected": self._connected} if self._connected else {}),
        }
        return CallStart(
            call_id=text_of(body.get("call_control_id")), from_=text_of(body.get("from")),
            to=text_of(body.get("to")),
            direction=text_of(body.get("direction")) or lowered.get("direction", ""),
            rate=rate, mix="mono" if len(tracks) == 1 else "tracks", channels=len(tracks),
            roles=tuple(TRACK_ROLES[t] for t in tracks), metadata=metadata,
        )

    def _notice(self, event: Any, message: dict[str, Any]) -> list[Event]:
        if event == "media":
            return self._media(message)
        found = message.get(event) if isinstance(event, str) else None
        body: dict[str, Any] = found if isinstance(found, dict) else {}
        if event in ("dtmf", "mark") and not isinstance(found, dict):
            return [Ignored(f"{event} event without a {event} object")]
        if event == "dtmf":
            digit = text_of(body.get("digit")).strip().upper()
            if not _DIGIT.fullmatch(digit):
                return [Ignored("dtmf event without a digit 0-9, *, #, A-D")]
            return [DtmfPressed(digit, None)]
        if event == "mark":
            return [MarkEvent(text_of(body.get("name")), "playout")]
        if event == "error":
            return [ProviderError("error", error_reason(message))]
        if event == "stop":
            return [Stop("stop")]
        if event is None:
            return [Ignored("text frame without an event")]
        return [Ignored(f"unknown event {str(event)[:40]!r}")]

    def _media(self, message: dict[str, Any]) -> list[Event]:
        assert self._clock is not None
        media = message.get("media")
        if not isinstance(media, dict):
            return [Ignored("media event without a media object")]
        raw_track = media.get("track")
        track = track_name(raw_track) if raw_track is not None else next(iter(self._channels))
        channel = self._channels.get(track) if track else None
        if channel is None:
            return [Ignored(f"track not announced: media for {str(raw_track)[:20]!r}; the stream "
                            f"was taken as {'+'.join(self._channels)} (CALLSCRIBE_TELNYX_TRACKS"
                            f" or a {TRACKS_PARAMETER} custom parameter says otherwise)")]
        payload = decode_payload(media.get("payload"))
        if payload is None:
            return [Ignored("media payload is not base64")]
        if self._encoding == "L16":
            data = self._carry.pop(channel, b"") + payload
            whole = len(data) - len(data) % 2
            if data[whole:]:
                self._carry[channel] = data[whole:]
            payload = data[:whole]
        pcm = decode(payload, self._encoding)
        at = self._clock.place(channel, timestamp=media.get("timestamp"),
                               chunk=media.get("chunk"), samples=len(pcm) // 2)
        return [TrackAudio(channel, pcm, at)] if pcm else []


def error_reason(message: dict[str, Any]) -> str:
    """``code title: detail`` of an ``error`` frame (its ``payload``, else an ``error`` object,
    else the frame itself)."""
    body: dict[str, Any] = next((found for key in ("payload", "error")
                                 if isinstance(found := message.get(key), dict)), message)
    code, title = text_of(body.get("code")), text_of(body.get("title"))
    detail = text_of(body.get("detail") or body.get("message"))
    head = " ".join(part for part in (code, title) if part) or "error"
    return (f"{head}: {detail}" if detail else head)[:300]


# --------------------------------------------------------------------------- outbound


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def render_media(payload: bytes) -> str:
    """RTP payload bytes to play (no RTP header), base64."""
    return _dumps({"event": "media",
                   "media": {"payload": base64.b64encode(payload).decode("ascii")}})


def render_mark(name: str) -> str:
    """Telnyx sends the mark back when the media before it has played (or on ``clear``)."""
    if not name:
        raise ValueError("a mark needs a non-empty name")
    return _dumps({"event": "mark", "mark": {"name": name}})


def render_clear() -> str:
    """Stop what plays and drop what is queued; Telnyx sends the queued marks back."""
    return _dumps({"event": "clear"})


class TelnyxPlayer:
    """What an RTP bidirectional Telnyx stream has outstanding (pure). A mark returned by a
    ``clear`` looks like a played one: marks pending when we sent ``clear`` are the cleared
    ones. On a stream that is not RTP bidirectional every method raises
    :class:`ControlUnsupported`."""

    def __init__(self, *, encoding: Encoding, rate: int, bidirectional: bool) -> None:
        self.encoding = encoding
        self.rate = rate
        self.bidirectional = bidirectional
        self._pending: list[str] = []
        self._clearing: list[str] = []

    @classmethod
    def for_start(cls, start: CallStart) -> TelnyxPlayer:
        media_format = start.metadata.get("media_format") or {}
        raw = text_of(media_format.get("encoding") if isinstance(media_format, dict) else "")
        encoding = _ENCODING_NAMES.get(raw.lower(), "PCMU")
        return cls(encoding=encoding, rate=start.rate,
                   bidirectional=bool(start.metadata.get("bidirectional")))

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(self._pending)

    def _require(self) -> None:
        if not self.bidirectional:
            raise ControlUnsupported(
                "this Telnyx stream is not RTP bidirectional (stream_bidirectional_mode=rtp); "
                "set CALLSCRIBE_TELNYX_BIDIRECTIONAL=true or a callscribeBidirectional=true "
                "custom parameter when it is")

    def play(self, pcm: bytes) -> list[str]:
        """PCM16 LE at the stream's rate → ``media`` messages in the stream's encoding, each
        1 s at most and 20 ms at least (the last padded with silence)."""
        self._require()
        step = self.rate * PLAY_CHUNK_MS // 1000 * 2
        least = self.rate * MIN_PLAY_MS // 1000 * 2
        pcm = pcm[:len(pcm) - len(pcm) % 2]
        return [render_media(encode(pcm[i:i + step].ljust(least, b"\x00"), self.encoding))
                for i in range(0, len(pcm), step)]

    def mark(self, name: str) -> str:
        self._require()
        frame = render_mark(name)
        self._pending.append(name)
        return frame

    def clear(self) -> str:
        self._require()
        self._clearing += self._pending
        self._pending = []
        return render_clear()

    def on_reply(self, event: MarkEvent) -> MarkEvent:
        """The echo as what it means: ``cleared`` if it was pending at a ``clear``."""
        if event.name in self._clearing:
            self._clearing.remove(event.name)
            return MarkEvent(event.name, "cleared")
        if event.name in self._pending:
            self._pending.remove(event.name)
        return MarkEvent(event.name, "playout")


__all__ = [
    "BIDIRECTIONAL_PARAMETER", "PROVIDER", "RATES", "TOKEN_HEADER", "TRACKS_PARAMETER",
    "TelnyxCodec", "TelnyxPlayer", "decode", "encode", "error_reason",
    "parse_custom_parameters", "parse_media_format", "render_clear", "render_mark",
    "render_media",
]
