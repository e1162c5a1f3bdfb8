"""jambonz ``listen`` / ``stream`` verb, as spoken by mod_audio_fork: a pure codec (no I/O).

jambonz is the WebSocket client (subprotocol ``audio.jambonz.org``, or the module's compiled-in
``audio.drachtio.org``). Per ``shared/reference/protocols.md`` §1 it sends:

* §1.2 one JSON text frame first: camelCase call attributes plus ``sampleRate`` (default 8000)
  and ``mixType`` (default ``mono``), with user ``metadata`` merged at the top level (it may
  overwrite either); nested in ``dial``, the B leg's raw ``CallInfo`` properties. It is cut at
  8192 bytes, so a large one is invalid JSON: we keep its complete top-level members.
* §1.3 binary PCM16 LE of no fixed size, treated as a byte stream; ``stereo`` interleaves per
  sample, first int16 = read stream (the caller), second = write stream (played to the caller).
  A zero-length frame comes at graceful shutdown. There is no end frame, only the close.
* §1.4 later text: ``{"event":"dtmf"}`` (string fields, duration in RTP units at 8 kHz),
  ``{"type":"playDone"}``, ``{"type":"mark"}``; anything else is :class:`Ignored`.
* §1.5/§8.1 outbound: ``playAudio`` with ``sampleRate`` as a JSON *number* (cJSON reads a string
  as 0 and plays at 16 kHz), ``killAudio``, ``disconnect``, ``mark``, ``clearMarks``.

Errors: :class:`~workers.errors.ProtocolError` (1008 binary before the metadata, 1007 a first
frame that is not a JSON object), :class:`~workers.errors.UnsupportedAudio` (1003 rate, mixType).

Events are the provider-neutral ones of :mod:`workers.ingest.dialects.events`.
:class:`JambonzPlayer` keeps the outbound state (pure): ``playAudio`` outstanding (at most 10,
settled by ``playDone``), marks in flight (at most 30, settled by ``playout``/``cleared``),
``killAudio``, ``clearMarks``, ``disconnect``, and binary streaming mode.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import numpy as np

from workers.errors import ProtocolError, UnsupportedAudio
from workers.ingest.dialects.events import (
    Audio,
    CallStart,
    DtmfPressed,
    Event,
    Ignored,
    MarkEvent,
    PlayDone,
)
from workers.ingest.errors import ControlUnsupported, PlaybackLimit
from workers.records import Role

SUBPROTOCOLS: tuple[str, ...] = ("audio.jambonz.org", "audio.drachtio.org")
SUPPORTED_RATES: frozenset[int] = frozenset({8000, 16000, 24000, 32000, 48000, 64000})
#: mod_audio_fork cuts the first frame at 8192 bytes; a non-JSON frame this long was cut.
TRUNCATION_THRESHOLD = 8000

Mix = Literal["mono", "mixed", "stereo"]
#: mixType -> (mix, channels, roles); stereo's first channel is the read stream (the caller).
_LAYOUTS: dict[str, tuple[Mix, int, tuple[Role, ...]]] = {
    "mono": ("mono", 1, ("other",)),
    "mixed": ("mixed", 1, ("other",)),
    "stereo": ("stereo", 2, ("other", "assistant")),
}
_ALLOWED = ", ".join(str(r) for r in sorted(SUPPORTED_RATES))
_DECODER = json.JSONDecoder()




class JambonzCodec:
    """One connection's inbound state: metadata first, then audio and notices."""

    provider = "jambonz"

    def __init__(self, *, default_rate: int = 8000, default_mix: str = "mono") -> None:
        if default_rate not in SUPPORTED_RATES or default_mix not in _LAYOUTS:
            raise ValueError(f"bad defaults {default_rate!r}/{default_mix!r}")
        self._default_rate = default_rate
        self._default_mix = default_mix
        self._start: CallStart | None = None
        self._carry = b""

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def start(self) -> CallStart | None:
        return self._start

    def receive_text(self, text: str) -> list[Event]:
        """Feed one text frame: the first must be the metadata object."""
        if self._start is None:
            self._start = self._parse_start(text)
            return [self._start]
        return [_notice(text)]

    def receive_binary(self, data: bytes) -> list[Event]:
        """Feed one binary frame; returns :class:`Audio` once a whole sample frame is here."""
        if self._start is None:
            raise ProtocolError(
                "binary audio frame before the metadata text frame; jambonz sends one JSON "
                "text frame first (protocols.md §1.2)",
                close_code=1008,
            )
        if not data:
            return []
        buf = self._carry + bytes(data) if self._carry else bytes(data)
        width = 2 * self._start.channels
        whole = len(buf) - len(buf) % width
        self._carry = buf[whole:]
        if not whole:
            return []
        if self._start.channels == 1:
            return [Audio((buf[:whole],))]
        samples = np.frombuffer(buf, dtype="<i2", count=whole // 2).reshape(-1, 2)
        return [Audio((samples[:, 0].tobytes(), samples[:, 1].tobytes()))]

    def flush(self) -> bytes:
        """The bytes of an incomplete sample frame left over (at close); clears them."""
        left, self._carry = self._carry, b""
        return left

    def _parse_start(self, text: str) -> CallStart:
        truncated = False
        try:
            meta = json.loads(text)
        except (ValueError, RecursionError) as exc:
            size = len(text.encode("utf-8", "surrogatepass"))
            meta = _salvage(text) if size >= TRUNCATION_THRESHOLD else {}
            if not meta:
                raise ProtocolError(
                    f"first text frame ({size} bytes) is not JSON ({exc}); expected the jambonz "
                    "metadata object",
                    close_code=1007,
                ) from None
            truncated = True
        if not isinstance(meta, dict):
            raise ProtocolError(
                f"first text frame is JSON {type(meta).__name__}; expected the metadata object",
                close_code=1007,
            )
        rate = meta.get("sampleRate")
        rate = _parse_rate(self._default_rate if rate is None else rate)
        mix_type = meta.get("mixType")
        layout = _LAYOUTS.get(self._default_mix if mix_type is None else str(mix_type).lower())
        if layout is None:
            raise UnsupportedAudio(
                f"mixType {mix_type!r} is not supported; expected mono, mixed or stereo"
            )
        mix, channels, roles = layout
        return CallStart(
            call_id=_text(meta.get("callSid")),
            from_=_text(meta.get("from")),
            to=_text(meta.get("to")),
            direction=_text(meta.get("direction")),
            rate=rate,
            mix=mix,
            channels=channels,
            roles=roles,
            metadata=meta,
            truncated=truncated,
        )


def _text(value: Any) -> str:
    return "" if value is None or isinstance(value, dict | list) else str(value)


def _parse_rate(value: Any) -> int:
    """``sampleRate`` as a number or numeric string, one of :data:`SUPPORTED_RATES`."""
    rate: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        rate = value
    elif isinstance(value, float) and value.is_integer():
        rate = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        rate = int(value.strip())
    if rate is None or rate not in SUPPORTED_RATES:
        raise UnsupportedAudio(f"sampleRate {value!r} is not supported; expected one of {_ALLOWED}")
    return rate


def _salvage(text: str) -> dict[str, Any]:
    """The complete top-level members of a JSON object that was cut off (§1.2)."""
    found: dict[str, Any] = {}
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        return found
    pos += 1
    while True:
        try:
            key, pos = _DECODER.raw_decode(text, _skip(text, pos))
            pos = _skip(text, pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                return found
            value, pos = _DECODER.raw_decode(text, _skip(text, pos + 1))
        except (ValueError, RecursionError):
            return found
        pos = _skip(text, pos)
        if text[pos : pos + 1] not in (",", "}"):  # e.g. a number cut short
            return found
        found[key] = value
        if text[pos] == "}":
            return found
        pos += 1


def _skip(text: str, pos: int) -> int:
    """The position of the next non-whitespace character (JSON whitespace)."""
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _notice(text: str) -> Event:
    """A text frame after the metadata; never raises."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return Ignored("text frame is not JSON")
    if not isinstance(msg, dict):
        return Ignored(f"text frame is JSON {type(msg).__name__}, not an object")
    data = msg.get("data")
    data = data if isinstance(data, dict) else {}
    if msg.get("event") == "dtmf":
        digit = msg.get("dtmf")
        if not isinstance(digit, str | int) or isinstance(digit, bool) or digit == "":
            return Ignored("dtmf event without a digit")
        return DtmfPressed(str(digit), _rtp_ms(msg.get("duration")))
    kind = msg.get("type")
    if kind == "playDone":
        play_id = data.get("id")
        return PlayDone(None if play_id is None else str(play_id), data)
    if kind == "mark":
        name, event = data.get("name"), data.get("event")
        if not isinstance(name, str) or not isinstance(event, str):
            return Ignored("mark without data.name and data.event")
        return MarkEvent(name, event)
    label = kind if kind is not None else msg.get("event")
    if label is None:
        return Ignored("text frame without a type or event")
    return Ignored(f"unknown text frame {str(label)[:40]!r}")


def _rtp_ms(value: Any) -> int | None:
    """RTP timestamp units at 8 kHz to ms (1600 -> 200), as jambonz does; None if unusable."""
    if isinstance(value, bool):
        return None
    try:
        units = float(value)
    except (TypeError, ValueError):
        return None
    return int(units // 8) if 0 <= units < float("inf") else None


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def render_play_audio(
    audio: bytes,
    *,
    content_type: Literal["raw", "wav"],
    sample_rate: int | None,
    id: str | None = None,  # the wire field's name
    queue_play: bool = False,
) -> str:
    """A non-streaming ``playAudio`` command; ``raw`` is headerless L16 at ``sample_rate``."""
    if content_type not in ("raw", "wav"):
        raise ValueError(f"content_type {content_type!r}; expected 'raw' or 'wav'")
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or sample_rate not in SUPPORTED_RATES
    ):
        raise ValueError(f"sample_rate {sample_rate!r} not supported; expected one of {_ALLOWED}")
    if content_type == "raw" and (sample_rate is None or len(audio) % 2):
        raise ValueError("raw audio needs a sample_rate and whole 16-bit samples")
    data: dict[str, Any] = {
        "audioContent": base64.b64encode(audio).decode("ascii"),
        "audioContentType": content_type,
    }
    if sample_rate is not None:
        data["sampleRate"] = int(sample_rate)
    if id is not None:
        data["id"] = id
    if queue_play:
        data["queuePlay"] = True
    return _dumps({"type": "playAudio", "data": data})


def render_kill_audio() -> str:
    """Stop playback now; outstanding marks come back ``cleared``."""
    return _dumps({"type": "killAudio"})


def render_disconnect() -> str:
    """Ask jambonz to close the socket and end the listen (the call goes on)."""
    return _dumps({"type": "disconnect"})


def render_mark(name: str) -> str:
    """A mark that fires when playback reaches the *next* audio sent (at most 30 in flight)."""
    if not name:
        raise ValueError("a mark needs a non-empty name")
    return _dumps({"type": "mark", "data": {"name": name}})


def render_clear_marks() -> str:
    """Forget outstanding marks; no events come back for them."""
    return _dumps({"type": "clearMarks"})


#: jambonz queues at most 10 ``playAudio`` (listen.js MAX_PLAY_AUDIO_QUEUE_SIZE); we keep
#: 10 outstanding (the one playing included), so nothing is ever dropped silently.
MAX_PLAY_QUEUE = 10
#: mod_audio_fork keeps at most 30 marks in flight (MAX_MARKS); extras are dropped.
MAX_MARKS = 30


class JambonzPlayer:
    """What one bidirectional listen has outstanding (pure): plays awaiting ``playDone`` and
    marks awaiting ``playout``/``cleared``. Each method returns the frame to send, or raises
    :class:`~workers.ingest.errors.PlaybackLimit` / :class:`ControlUnsupported` instead of
    letting jambonz drop the command silently (§1.5)."""

    def __init__(self, *, bidirectional: bool = True, streaming: bool = False,
                 streaming_rate: int | None = None) -> None:
        if streaming and streaming_rate not in SUPPORTED_RATES:
            raise ValueError(f"streaming needs a bidirectionalAudio.sampleRate; got "
                             f"{streaming_rate!r}")
        self.bidirectional = bidirectional
        self.streaming = streaming
        self.streaming_rate = streaming_rate
        self._plays: list[str | None] = []
        self._marks: list[str] = []
        self._carry = b""

    @classmethod
    def for_start(cls, start: CallStart) -> JambonzPlayer:
        """The player for a call, from a ``bidirectionalAudio`` object the app echoed into
        the verb's metadata (jambonz does not send its own config); default non-streaming."""
        config = start.metadata.get("bidirectionalAudio")
        if not isinstance(config, dict):
            return cls()
        enabled = config.get("enabled", True) not in (False, "false", 0)
        streaming = config.get("streaming", False) in (True, "true", 1)
        rate = config.get("sampleRate")
        rate = rate if isinstance(rate, int) and rate in SUPPORTED_RATES else None
        if streaming and rate is None:
            streaming = False  # jambonz itself needs the rate to stream; it plays JSON instead
        return cls(bidirectional=enabled, streaming=streaming, streaming_rate=rate)

    @property
    def queued(self) -> tuple[str | None, ...]:
        """Plays sent and not yet reported done, oldest first."""
        return tuple(self._plays)

    @property
    def marks(self) -> tuple[str, ...]:
        """Marks sent and not yet reported, oldest first."""
        return tuple(self._marks)

    def _require(self, *, streaming: bool | None = None) -> None:
        if not self.bidirectional:
            raise ControlUnsupported("this jambonz listen is not bidirectional")
        if streaming is True and not self.streaming:
            raise ControlUnsupported("binary audio needs bidirectionalAudio.streaming")
        if streaming is False and self.streaming:
            raise ControlUnsupported("jambonz ignores playAudio in streaming mode; "
                                     "stream binary audio instead")

    def play(self, audio: bytes, *, content_type: Literal["raw", "wav"] = "raw",
             sample_rate: int | None = None, id: str | None = None,  # the wire field's name
             queue: bool = True) -> str:
        """A ``playAudio``; ``queue=False`` flushes jambonz's queue and plays at once."""
        self._require(streaming=False)
        if queue and len(self._plays) >= MAX_PLAY_QUEUE:
            raise PlaybackLimit(f"{len(self._plays)} playAudio already queued; jambonz "
                                f"drops more than {MAX_PLAY_QUEUE} silently")
        frame = render_play_audio(audio, content_type=content_type, sample_rate=sample_rate,
                                  id=id, queue_play=queue)
        if not queue:
            self._plays.clear()
        self._plays.append(id)
        return frame

    def stream(self, pcm: bytes) -> bytes:
        """Streaming mode: L16 at ``streaming_rate`` as one binary frame (odd bytes carried)."""
        self._require(streaming=True)
        data = self._carry + pcm
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        return data[:whole]

    def kill(self) -> str:
        """``killAudio``: playback stops; marks come back ``cleared`` (so they stay tracked)."""
        self._require()
        self._plays.clear()
        self._carry = b""
        return render_kill_audio()

    def disconnect(self) -> str:
        """``disconnect``: jambonz closes the socket and the listen verb ends."""
        return render_disconnect()

    def mark(self, name: str) -> str:
        """A ``mark``; refuses a 31st in flight (mod_audio_fork would drop it)."""
        self._require()
        if len(self._marks) >= MAX_MARKS:
            raise PlaybackLimit(f"{MAX_MARKS} marks already in flight; jambonz drops more")
        frame = render_mark(name)
        self._marks.append(name)
        return frame

    def clear_marks(self) -> str:
        """``clearMarks``: jambonz forgets them and reports nothing, so neither do we."""
        self._require()
        self._marks.clear()
        return render_clear_marks()

    def on_reply(self, event: PlayDone | MarkEvent) -> str:
        """Account for a ``playDone`` or ``mark`` notice; returns what it settled."""
        if isinstance(event, PlayDone):
            if event.id in self._plays:
                self._plays.remove(event.id)
            elif self._plays:
                self._plays.pop(0)
            return f"play {event.id or '-'} done"
        if event.name in self._marks:
            self._marks.remove(event.name)
        return f"mark {event.name} {event.event}"


__all__ = [
    "MAX_MARKS",
    "MAX_PLAY_QUEUE",
    "SUBPROTOCOLS",
    "SUPPORTED_RATES",
    "Audio",
    "CallStart",
    "DtmfPressed",
    "Event",
    "Ignored",
    "JambonzCodec",
    "JambonzPlayer",
    "MarkEvent",
    "PlayDone",
    "render_clear_marks",
    "render_disconnect",
    "render_kill_audio",
    "render_mark",
    "render_play_audio",
]
