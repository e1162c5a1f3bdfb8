"""Domain records that travel over Kafka, and their one versioned wire codec each.

Topics (``<prefix>`` is ``CALLSCRIBE_TOPIC_PREFIX``, default ``callscribe``), every record keyed by
call id (UTF-8) so that all records of one call stay in order on one partition:

``<prefix>.audio``
    :class:`AudioChunk`: value = raw PCM16 little-endian mono samples of one channel at the source
    rate; everything else in headers (see :meth:`AudioChunk.headers`). The last chunk of each
    channel carries ``last=1`` (its value may be empty) so consumers know the channel is complete.
``<prefix>.calls``
    Call lifecycle JSON: :class:`CallStarted`, :class:`CallEnded`, :class:`Dtmf`.
``<prefix>.transcripts``
    liveCalls server messages as JSON plus ``callId``, a deterministic ``id`` and timing fields
    (:func:`transcript_record`).
``<prefix>.control``
    Client commands from the bridge (:class:`ControlCommand`).
``<prefix>.subscriptions``
    Requests to subscribe to a provider's outbound stream (Bland live listen), from
    ``POST /v1/subscriptions`` on any ingest replica; one replica (consumer group) takes each
    (``workers/ingest/subscriptions.py``). Not part of :meth:`Topics.all`; ingest creates it.
``<prefix>.transcripts.redacted``, ``<prefix>.assist``, ``<prefix>.summaries``
    Written by the assist worker (``workers/assist``): the transcripts with PII/PCI replaced by
    placeholders plus assist messages, the assist messages alone, and end-of-call summaries.
    Not part of :meth:`Topics.all`; the assist worker creates them.

JSON Schemas for each value live in ``schemas/``; tests validate produced records against them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from workers.errors import RecordError
from workers.vocabulary import MAX_CALL_TERMS, normalize_terms, split_terms

#: Version of every JSON record below; bumped only on incompatible change.
SCHEMA_VERSION = 1

Role = Literal["assistant", "other", "user"]
ROLES: tuple[Role, ...] = ("assistant", "other", "user")


def utc_now_iso() -> str:
    """The current instant as ISO 8601 UTC with milliseconds, e.g. ``2026-01-15T10:30:00.123Z``."""
    return iso_from_epoch_ms(int(datetime.now(UTC).timestamp() * 1000))


def iso_from_epoch_ms(epoch_ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names derived from one prefix."""

    prefix: str = "callscribe"

    @property
    def audio(self) -> str:
        return f"{self.prefix}.audio"

    @property
    def calls(self) -> str:
        return f"{self.prefix}.calls"

    @property
    def transcripts(self) -> str:
        return f"{self.prefix}.transcripts"

    @property
    def control(self) -> str:
        return f"{self.prefix}.control"

    @property
    def subscriptions(self) -> str:
        """Outbound-stream subscription requests (Bland live listen), taken by one ingest."""
        return f"{self.prefix}.subscriptions"

    @property
    def transcripts_redacted(self) -> str:
        """The transcripts topic with PII/PCI redacted, plus assist messages (assist worker)."""
        return f"{self.prefix}.transcripts.redacted"

    @property
    def assist(self) -> str:
        """Hints, knowledge articles and alerts for agents (assist worker)."""
        return f"{self.prefix}.assist"

    @property
    def summaries(self) -> str:
        """One end-of-call summary per call (assist worker)."""
        return f"{self.prefix}.summaries"

    @property
    def interest(self) -> str:
        """Which calls a bridge's clients watch with interims (co-partitioned with audio)."""
        return f"{self.prefix}.interest"

    def all(self) -> tuple[str, ...]:
        return (self.audio, self.calls, self.transcripts, self.control, self.interest)


# --------------------------------------------------------------------------- audio


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """About 100 ms of one channel of one call, as PCM16 LE mono at the source rate."""

    call_id: str
    channel: int
    seq: int
    rate: int
    role: Role
    t_ms: int
    pcm: bytes
    channels: int = 1
    last: bool = False

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers: ``seq`` (per call and channel, from 0, no gaps), ``rate`` (Hz),
        ``channel`` (0-based), ``channels`` (count in the call), ``role``, ``t_ms`` (first sample's
        position from call start, from sample counts), ``last`` (``1`` on a channel's final chunk),
        ``v`` (schema version). All ASCII decimal or text."""
        return [
            ("v", str(SCHEMA_VERSION).encode()),
            ("seq", str(self.seq).encode()),
            ("rate", str(self.rate).encode()),
            ("channel", str(self.channel).encode()),
            ("channels", str(self.channels).encode()),
            ("role", self.role.encode()),
            ("t_ms", str(self.t_ms).encode()),
            ("last", b"1" if self.last else b"0"),
        ]

    @classmethod
    def from_kafka(
        cls, key: bytes | None, value: bytes | None, headers: Any
    ) -> AudioChunk:
        """Decode a record of the audio topic; raise :class:`RecordError` if it is malformed."""
        if not key:
            raise RecordError("audio record without a key; expected the call id")
        pcm = value or b""
        if len(pcm) % 2:
            raise RecordError(f"audio record of {len(pcm)} bytes; expected whole PCM16 samples")
        pairs = headers.items() if isinstance(headers, dict) else headers or ()
        found = {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in pairs}
        try:
            role = found["role"].decode()
            if role not in ROLES:
                raise RecordError(f"audio record with role {role!r}; expected one of {ROLES}")
            return cls(
                call_id=key.decode(),
                channel=int(found["channel"]),
                seq=int(found["seq"]),
                rate=int(found["rate"]),
                role=role,
                t_ms=int(found["t_ms"]),
                pcm=pcm,
                channels=int(found.get("channels", b"1")),
                last=found.get("last", b"0") == b"1",
            )
        except KeyError as exc:
            raise RecordError(f"audio record without header {exc.args[0]!r}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordError(f"audio record with a malformed header: {exc}") from None


# --------------------------------------------------------------------------- calls


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call's audio stream began at ingest."""

    call_id: str
    provider: str
    from_: str
    to: str
    direction: str
    rate: int
    channels: int
    mix: str
    roles: tuple[Role, ...]
    timestamp: str = field(default_factory=utc_now_iso)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The call's own custom vocabulary (:mod:`workers.vocabulary`); on the wire only when set.
    vocabulary: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": "call.started",
            "callId": self.call_id,
            "provider": self.provider,
            "from": self.from_,
            "to": self.to,
            "direction": self.direction,
            "rate": self.rate,
            "channels": self.channels,
            "mix": self.mix,
            "roles": list(self.roles),
            "timestamp": self.timestamp,
            "metadata": self.metadata,
            **({"vocabulary": list(self.vocabulary)} if self.vocabulary else {}),
        }


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call's audio stream ended; ``last_seq`` is the final ``seq`` per channel (-1: none)."""

    call_id: str
    reason: str
    duration_ms: int
    last_seq: tuple[int, ...]
    timestamp: str = field(default_factory=utc_now_iso)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": "call.ended",
            "callId": self.call_id,
            "reason": self.reason,
            "durationMs": self.duration_ms,
            "lastSeq": list(self.last_seq),
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A key pressed on the call; ``t_ms`` is its position on the call's audio timeline."""

    call_id: str
    digit: str
    duration_ms: int | None
    t_ms: int
    timestamp: str = field(default_factory=utc_now_iso)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": "dtmf",
            "callId": self.call_id,
            "digit": self.digit,
            "durationMs": self.duration_ms,
            "tMs": self.t_ms,
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True, slots=True)
class CallNotice:
    """A calls-topic record about call control rather than the audio: ``call.joined``,
    ``call.control_failed`` (the executor's outcomes, ``workers/ingest/executor.py``) and
    ``subscription.failed`` (``workers/ingest/subscriptions.py``). The bridge turns them into
    liveCalls messages; the transcriber and the assist worker let them pass."""

    call_id: str
    type: str
    data: dict[str, Any]


#: The ``type`` of every :class:`CallNotice`.
CALL_NOTICES = frozenset({"call.joined", "call.control_failed", "subscription.failed"})

CallEvent = CallStarted | CallEnded | Dtmf | CallNotice


def _call_id(data: dict[str, Any]) -> str:
    call_id = data["callId"]
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"callId {call_id!r}")
    return call_id


def call_event_from_json(data: dict[str, Any]) -> CallEvent:
    """Decode a value of the calls topic (already parsed JSON)."""
    try:
        kind = data["type"]
        if kind == "call.started":
            roles = data["roles"]
            if not isinstance(roles, list) or any(r not in ROLES for r in roles):
                raise RecordError(f"call.started roles {roles!r}; expected a list of {ROLES}")
            return CallStarted(
                call_id=data["callId"],
                provider=data["provider"],
                from_=data.get("from") or "",
                to=data.get("to") or "",
                direction=data.get("direction") or "",
                rate=int(data["rate"]),
                channels=int(data["channels"]),
                mix=data["mix"],
                roles=tuple(roles),
                timestamp=data["timestamp"],
                metadata=dict(data.get("metadata") or {}),
                vocabulary=normalize_terms(split_terms(data.get("vocabulary")),
                                           limit=MAX_CALL_TERMS),
            )
        if kind == "call.ended":
            return CallEnded(
                call_id=data["callId"],
                reason=data.get("reason") or "",
                duration_ms=int(data["durationMs"]),
                last_seq=tuple(int(s) for s in data["lastSeq"]),
                timestamp=data["timestamp"],
            )
        if kind == "dtmf":
            duration = data.get("durationMs")
            return Dtmf(
                call_id=data["callId"],
                digit=data["digit"],
                duration_ms=None if duration is None else int(duration),
                t_ms=int(data["tMs"]),
                timestamp=data["timestamp"],
            )
        if kind in CALL_NOTICES:
            return CallNotice(call_id=_call_id(data), type=kind, data=data)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"calls record is missing or has a bad field: {exc}") from None
    raise RecordError(f"calls record of unknown type {kind!r}")


# --------------------------------------------------------------------------- transcripts


def transcript_id(call_id: str, channel: int, start_ms: int) -> str:
    """Deterministic id of an utterance: the same audio always yields the same id."""
    return f"{call_id}:{channel}:{start_ms}"


def transcript_record(call_id: str, message: dict[str, Any], *, record_id: str,
                      **timing: Any) -> dict[str, Any]:
    """A value of the transcripts topic: the liveCalls ``message`` plus ``callId``, ``id``,
    ``v`` and optional timing fields (``audioStartMs``, ``audioEndMs``, ``producedAtMs``...)."""
    record = dict(message)
    record.update({"v": SCHEMA_VERSION, "callId": call_id, "id": record_id})
    record.update({k: v for k, v in timing.items() if v is not None})
    return record


#: Keys a transcripts record adds to the liveCalls message; the bridge strips them for clients
#: that only know the documented message fields, except ``id``.
RECORD_ONLY_KEYS = frozenset({"v", "callId"})


# --------------------------------------------------------------------------- control


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """A client's command for a call (``client:joinCall`` / ``client:endCall``), from the bridge."""

    call_id: str
    type: str
    id: str
    bridge: str
    received_at: str = field(default_factory=utc_now_iso)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ControlCommand:
        try:
            return cls(call_id=data["callId"], type=data["type"], id=data["id"],
                       bridge=data.get("bridge") or "", received_at=data["receivedAt"])
        except KeyError as exc:
            raise RecordError(f"control record without {exc.args[0]!r}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": self.type,
            "id": self.id,
            "callId": self.call_id,
            "bridge": self.bridge,
            "receivedAt": self.received_at,
        }


@dataclass(frozen=True, slots=True)
class InterimInterest:
    """A bridge replica's clients watch call ``call_id`` with ``interim=true`` (``watching``),
    or its last such client went (not ``watching``). Re-sent while watched; it lapses
    ``ttl_ms`` after ``at_ms`` (epoch ms), so a bridge that dies leaves no interest behind."""

    call_id: str
    bridge: str
    watching: bool
    at_ms: int
    ttl_ms: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InterimInterest:
        try:
            return cls(call_id=str(data["callId"]), bridge=str(data["bridge"]),
                       watching=bool(data["watching"]), at_ms=int(data["atMs"]),
                       ttl_ms=int(data["ttlMs"]))
        except KeyError as exc:
            raise RecordError(f"interest record without {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise RecordError(f"interest record with a bad field: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "type": "interest", "callId": self.call_id,
                "bridge": self.bridge, "watching": self.watching, "atMs": self.at_ms,
                "ttlMs": self.ttl_ms}


def dumps(value: dict[str, Any]) -> bytes:
    """The one JSON encoding used on every topic: compact UTF-8 (strings holding lone
    surrogates, which UTF-8 cannot carry, fall back to ASCII escapes)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def loads(raw: bytes | None) -> dict[str, Any]:
    """Parse a JSON record value into an object, or raise :class:`RecordError`."""
    try:
        data = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"record is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RecordError(f"record is JSON {type(data).__name__}; expected an object")
    return data


__all__ = [
    "CALL_NOTICES",
    "ROLES",
    "SCHEMA_VERSION",
    "AudioChunk",
    "CallEnded",
    "CallEvent",
    "CallNotice",
    "CallStarted",
    "ControlCommand",
    "Dtmf",
    "Role",
    "Topics",
    "call_event_from_json",
    "dumps",
    "iso_from_epoch_ms",
    "loads",
    "transcript_id",
    "transcript_record",
    "utc_now_iso",
]
