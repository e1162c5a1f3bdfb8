"""The provider-neutral events every dialect codec emits, and the codec protocol (pure).

A codec turns one connection's frames into these events; the session (the I/O adapter) turns
them into the same Kafka records whatever the provider::

    CallStart      once, first: call id, parties, rate, layout (mix/channels/roles), metadata
    Audio          whole samples of every channel at once (jambonz interleaved, Bland mixed)
    TrackAudio     one channel's samples (Plivo/Twilio send each track in its own message),
                   with the provider's position so gaps can be filled with silence
    DtmfPressed    a key, with its duration and position when the provider gives them
    PlayDone       a queued prompt finished (jambonz ``playDone``)
    MarkEvent      a mark/checkpoint was played out (``playout``) or dropped (``cleared``)
    Cleared        the provider emptied its playback buffer (Plivo ``clearedAudio``)
    ProviderError  the provider reported an error on the socket (Plivo ``playFailed``/``error``)
    Stop           the provider said the stream is over (the close stays authoritative)
    Outgoing       frames the protocol itself answers with (AudioHook ``opened``, ``pong``...)
    Ignored        a frame we do not use: logged and counted, never fatal

Codecs raise only :class:`~workers.errors.ProtocolError` (and its subclass
:class:`~workers.errors.UnsupportedAudio`), each with the close code to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from workers.records import Role

#: How the legs arrive: one mix, one leg, interleaved channels, or one message per track.
Mix = Literal["mono", "mixed", "stereo", "tracks"]


@dataclass(frozen=True, slots=True)
class CallStart:
    """The start of a call's stream. ``roles[i]`` is channel ``i``'s speaker."""

    call_id: str
    from_: str
    to: str
    direction: str
    rate: int
    mix: Mix
    channels: int
    roles: tuple[Role, ...]
    metadata: dict[str, Any]
    truncated: bool = False

    @property
    def call_sid(self) -> str:
        """jambonz's name for the call id (``callSid``)."""
        return self.call_id


@dataclass(frozen=True, slots=True)
class Audio:
    """Whole samples: one PCM16 LE mono byte string per channel, all of equal length."""

    channels: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class TrackAudio:
    """One channel's PCM16 LE samples. ``at_sample`` is where the provider says they start
    on the stream's timeline (in samples at the call's rate), or None when it does not say."""

    channel: int
    pcm: bytes
    at_sample: int | None = None


@dataclass(frozen=True, slots=True)
class DtmfPressed:
    """A key pressed; ``duration_ms`` and ``at_ms`` (stream position) when known."""

    digit: str
    duration_ms: int | None
    at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PlayDone:
    """A ``playAudio`` finished; ``id`` echoes the one sent; ``data`` holds ``playback*``."""

    id: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MarkEvent:
    """A mark was reached (``playout``) or dropped by a clear/kill (``cleared``)."""

    name: str
    event: str


@dataclass(frozen=True, slots=True)
class Cleared:
    """The provider confirmed that its playback buffer was emptied."""


@dataclass(frozen=True, slots=True)
class ProviderError:
    """The provider reported an error on the socket; ``kind`` is its event name."""

    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The provider announced the end of the stream (the socket close follows)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Frames the codec's protocol answers with, sent by the session as they are."""

    frames: tuple[str | bytes, ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    """A frame we do not use; never fatal (logged, counted by reason)."""

    reason: str


Event = (CallStart | Audio | TrackAudio | DtmfPressed | PlayDone | MarkEvent | Cleared
         | ProviderError | Stop | Outgoing | Ignored)
#: Events that answer something we sent (they go to the playback tracker, not to Kafka).
Reply = PlayDone | MarkEvent | Cleared | ProviderError
REPLY_TYPES = (PlayDone, MarkEvent, Cleared, ProviderError)


class Codec(Protocol):
    """What the session needs from a dialect: frames in, neutral events out, no I/O."""

    provider: str

    @property
    def start(self) -> CallStart | None: ...

    def receive_text(self, text: str) -> list[Event]: ...

    def receive_binary(self, data: bytes) -> list[Event]: ...

    def flush(self) -> bytes:
        """Bytes of an incomplete sample left over at the end (cleared)."""
        ...


def text_of(value: Any) -> str:
    """A scalar as text ('' for None, objects and arrays): providers mix numbers and strings."""
    return "" if value is None or isinstance(value, dict | list) else str(value)


def int_of(value: Any) -> int | None:
    """A number or numeric string as an int (None when it is neither)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] == "-" else text
        if 0 < len(digits) <= 18 and digits.isascii() and digits.isdigit():
            return int(text)
    return None


__all__ = [
    "REPLY_TYPES", "Audio", "CallStart", "Cleared", "Codec", "DtmfPressed", "Event",
    "Ignored", "MarkEvent", "Mix", "Outgoing", "PlayDone", "ProviderError", "Reply", "Stop",
    "TrackAudio", "int_of", "text_of",
]
