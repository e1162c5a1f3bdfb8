"""Helpers shared by the track-based dialects, Plivo and Twilio (pure).

Both send each leg ("track") in its own JSON ``media`` message, base64 payload, with the
provider's clock beside it: Plivo an epoch-ms ``timestamp`` string, Twilio a ms-since-start
``timestamp`` string, and both a ``chunk`` counter (protocols.md §2.2, §3.2, §8.1-2).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from workers.errors import ProtocolError
from workers.ingest.dialects.events import int_of
from workers.records import Role

#: A track's name → its channel's role: inbound is what the caller says (``other``), outbound
#: what is played to the caller (the screening assistant, ``assistant``).
TRACK_ROLES: dict[str, Role] = {"inbound": "other", "outbound": "assistant"}
_TRACK_ALIASES = {"inbound": "inbound", "inbound_track": "inbound", "outbound": "outbound",
                  "outbound_track": "outbound"}


def parse_object(text: str, *, started: bool, provider: str) -> dict[str, Any] | str:
    """A text frame as a JSON object, or the reason it is not one. Before the start event
    a frame that is not a JSON object closes the connection (1007)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        reason = "text frame is not JSON"
    else:
        if isinstance(message, dict):
            return message
        reason = f"text frame is JSON {type(message).__name__}, not an object"
    if not started:
        raise ProtocolError(f"{reason}; expected the {provider} start event", close_code=1007)
    return reason


def track_name(value: Any) -> str | None:
    """``inbound``/``outbound`` from any spelling a provider uses (``inbound_track``...)."""
    return _TRACK_ALIASES.get(str(value).strip().lower()) if isinstance(value, str) else None


def parse_tracks(value: Any) -> tuple[str, ...]:
    """``start.tracks`` as ordered track names (inbound first); ``both`` means the two.
    Missing or unusable → inbound only, the default of both providers."""
    names: list[Any] = value if isinstance(value, list) else [value]
    found: set[str] = set()
    for name in names:
        if isinstance(name, str) and name.strip().lower() in ("both", "both_tracks"):
            found |= {"inbound", "outbound"}
        elif (track := track_name(name)) is not None:
            found.add(track)
    return tuple(t for t in ("inbound", "outbound") if t in found) or ("inbound",)


def decode_payload(value: Any) -> bytes | None:
    """A base64 ``media.payload`` (None when it is missing or not base64)."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


class TrackClock:
    """Where each track's messages start on the stream's timeline, in samples.

    ``epoch=True``: timestamps are absolute (Plivo, Unix ms), so the first one seen on any
    track is the origin; ``epoch=False``: they count from the stream's start (Twilio). A
    message without a timestamp is placed from its ``chunk`` number when the previous message
    of its track was placed; otherwise it is not placed (None: appended as it comes).
    """

    def __init__(self, rate: int, *, epoch: bool) -> None:
        self.rate = rate
        self._epoch = epoch
        self._origin: int | None = None if epoch else 0
        self._last: dict[int, tuple[int, int, int]] = {}  # channel → (chunk, at, samples)

    @property
    def origin_ms(self) -> int | None:
        return self._origin

    def offset_ms(self, timestamp: Any) -> int | None:
        """A provider timestamp as ms from the origin (None if unusable or before it)."""
        value = int_of(timestamp)
        if value is None:
            return None
        if self._origin is None:
            self._origin = value
        offset = value - self._origin
        return offset if 0 <= offset < 10**12 else None

    def place(self, channel: int, *, timestamp: Any, chunk: Any, samples: int) -> int | None:
        offset = self.offset_ms(timestamp)
        number = int_of(chunk)
        at: int | None = None
        if offset is not None:
            at = offset * self.rate // 1000
        elif number is not None and channel in self._last:
            last_chunk, last_at, last_samples = self._last[channel]
            if 0 < number - last_chunk <= 50 * 3600:  # an hour of 20 ms chunks at most
                at = last_at + (number - last_chunk) * last_samples
        if number is not None and at is not None:
            self._last[channel] = (number, at, samples)
        return at


__all__ = ["TRACK_ROLES", "TrackClock", "decode_payload", "parse_object", "parse_tracks",
           "track_name"]
