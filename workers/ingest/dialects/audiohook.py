"""Genesys Cloud AudioHook (protocol version 2), as Genesys speaks it: a pure codec.

Genesys Cloud is the WebSocket client and always opens and ends the session; we are the
server (protocols.md §5). Every text frame is a JSON envelope ``{"version": "2", "id":
<session>, "type", "seq", "parameters"}``; client messages add ``serverseq`` (the last of
ours it saw) and ``position`` (ISO-8601 ``PT…S``: audio sent so far), ours add
``clientseq`` (the last of theirs we saw). Binary frames are audio in the media we selected
in ``opened``, PCMU 8000 Hz, sample-interleaved in the order of its ``channels``.

Client → server: ``open`` (we answer ``opened`` with one selected media), ``ping``
(``pong``; ``rtt`` is the round trip the client measured), ``update`` (``updated``),
``paused``/``resumed`` (paused audio is not on the timeline: nothing is filled), ``discarded``
(audio Genesys dropped: silence of that length keeps the timeline true), ``close``
(``closed``), ``error`` (the client's error, logged), ``dtmf`` (sent by the bot variant).
Server → client we render: ``opened``, ``pong``, ``updated``, ``closed``, ``disconnect``, and
``event`` with one ``transcript`` entity per final utterance
(:meth:`AudioHookCodec.transcript_event`: ``channelId`` the channel's index in the media
selected at open, ``offset``/``duration`` as ``PT…S`` on the session's audio timeline).

Channels: ``external`` (the customer) → ``other``, ``internal`` (the agent) → ``assistant``.
An ``open`` whose ``conversationId`` is all zeros is a connection probe: answered, no call.

Errors in the client's messages (bad JSON, a ``seq`` that does not follow, a wrong session
id, ``serverseq`` ahead of ours, audio before ``opened``) are answered with ``disconnect``
``reason: "error"`` as the reference server does; the client then closes the session.

Auth (at the handshake, :func:`signature_ok`): ``X-API-KEY``, and when the integration has a
client secret, an HTTP Message Signature (HMAC-SHA256 over the ``Signature-Input``
components, key = the base64-decoded secret, ``keyid`` = the API key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from workers.ingest.dialects.audio import mulaw_to_pcm16
from workers.ingest.dialects.events import (
    Audio,
    CallStart,
    DtmfPressed,
    Event,
    Ignored,
    Outgoing,
    ProviderError,
    Stop,
    int_of,
    text_of,
)
from workers.records import Role

PROVIDER = "audiohook"
VERSION = "2"
RATE = 8000
MAX_TEXT = 65535
API_KEY_HEADER = "X-API-KEY"
SESSION_HEADER = "Audiohook-Session-Id"
PROBE_CONVERSATION = "00000000-0000-0000-0000-000000000000"
CHANNEL_ROLES: dict[str, Role] = {"external": "other", "internal": "assistant"}
#: Client message types we act on (others are ignored, counted).
CLIENT_TYPES = ("open", "ping", "update", "paused", "resumed", "discarded", "close", "error",
                "dtmf")

_DURATION = re.compile(r"^P(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?"
                       r"(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(value: Any) -> float | None:
    """``PT1H2M3.5S`` (any of the parts) as seconds; None when it is not one."""
    if not isinstance(value, str) or value in ("P", "PT"):
        return None
    match = _DURATION.match(value.strip())
    if match is None:
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    return total if total < 10**9 else None


def format_duration(samples: int, rate: int = RATE) -> str:
    """A position in samples as Genesys writes it (``PT12.34S``)."""
    return format_ms(samples * 1000 // rate)


def format_ms(ms: int) -> str:
    """Milliseconds as an ISO-8601 duration in seconds (``PT1.23S``, ``PT0S``)."""
    whole, rest = divmod(max(0, ms), 1000)
    return "PT" + f"{whole}.{rest:03d}".rstrip("0").rstrip(".") + "S"


def select_media(offered: Any) -> dict[str, Any] | None:
    """The media entry we take: PCMU at 8000 Hz, both channels if offered, else one."""
    best: dict[str, Any] | None = None
    for entry in offered if isinstance(offered, list) else []:
        if not isinstance(entry, dict) or entry.get("type", "audio") != "audio":
            continue
        if str(entry.get("format", "")).upper() != "PCMU" or int_of(entry.get("rate")) != RATE:
            continue
        channels = entry.get("channels")
        if not isinstance(channels, list) or not channels or len(channels) > 2 \
                or len(set(map(str, channels))) != len(channels) \
                or any(c not in CHANNEL_ROLES for c in channels):
            continue
        if best is None or len(channels) > len(best["channels"]):
            best = {"type": "audio", "format": "PCMU", "channels": list(channels),
                    "rate": RATE}
    return best


class AudioHookCodec:
    """One AudioHook session's state: sequence numbers both ways, media, position."""

    provider = PROVIDER

    def __init__(self) -> None:
        self._start: CallStart | None = None
        self.session_id: str | None = None
        self.seq = 0  # the last server seq sent
        self.clientseq = 0  # the last client seq seen
        self.state = "new"  # new → active ⇄ paused → closed; or → disconnected
        self.channels: tuple[str, ...] = ()
        self.samples = 0  # per channel, audio received + discarded gaps
        self.probe = False
        self.rtt_s: float | None = None
        self.client_position_s: float | None = None
        self.language: str | None = None  # open's (or the last update's) language
        self._carry = b""

    @property
    def start(self) -> CallStart | None:
        return self._start

    # ------------------------------------------------------------------ rendering

    def render(self, type_: str, parameters: Mapping[str, Any] | None = None) -> str:
        """A server message, with the next ``seq`` and the ``clientseq`` we saw."""
        self.seq += 1
        return json.dumps({"version": VERSION, "type": type_, "seq": self.seq,
                           "clientseq": self.clientseq, "id": self.session_id or "",
                           "parameters": dict(parameters or {})}, separators=(",", ":"))

    def disconnect(self, reason: str, info: str | None = None) -> str:
        """``disconnect`` (``completed`` | ``unauthorized`` | ``error``): the client closes."""
        parameters: dict[str, Any] = {"reason": reason}
        if info:
            parameters["info"] = info[:500]
        if self.state != "closed":
            self.state = "disconnected"
        return self.render("disconnect", parameters)

    def transcript_event(self, record: Mapping[str, Any]) -> str | None:
        """One of our final transcript records (``workers/records.py``: ``type: "transcript"``,
        ``msg``, ``channel``, ``audioStartMs``/``audioEndMs`` or ``offset``, ``id``) as an
        ``event`` with a ``transcript`` entity, numbered like every server message; None when
        the session takes no more messages (before open, a probe, after ``disconnect`` or
        ``closed``) or the record is not a final for one of its channels. Interims are not
        sent: Genesys keeps what it is given, and an interim is revised (and repeated) a few
        times per utterance."""
        if self.state not in ("active", "paused") or self._start is None:
            return None
        text = record.get("msg")
        channel = int_of(record.get("channel"))
        if record.get("type") != "transcript" or not isinstance(text, str) or not text.strip() \
                or channel is None or not 0 <= channel < len(self.channels):
            return None
        start_ms = int_of(record.get("audioStartMs"))
        if start_ms is None and isinstance(record.get("offset"), int | float):
            start_ms = round(float(record["offset"]) * 1000)
        end_ms = int_of(record.get("audioEndMs"))
        data: dict[str, Any] = {
            # Genesys wants a UUID; ours is <callId>:<channel>:<startMs>, deterministic, so
            # the UUID derived from it is too (a record delivered twice keeps its id).
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"callscribe:{record.get('id', '')}")),
            "channelId": channel, "isFinal": True}
        if start_ms is not None and start_ms >= 0:
            data["offset"] = format_ms(start_ms)
            if end_ms is not None and end_ms >= start_ms:
                data["duration"] = format_ms(end_ms - start_ms)
        alternative: dict[str, Any] = {
            # Our ASR gives no utterance confidence; the field is required: 1.0 (as sure as
            # anything we send).
            "confidence": 1.0,
            "interpretations": [{"type": "display", "transcript": text.strip()}]}
        if self.language:
            alternative["languages"] = [self.language]
        data["alternatives"] = [alternative]
        return self.render("event", {"entities": [{"type": "transcript", "data": data}]})

    def _error(self, info: str) -> list[Event]:
        if self.state in ("disconnected", "closed"):
            return [Ignored(f"after disconnect: {info}")]
        return [Outgoing((self.disconnect("error", f"Client Error: {info}"),)),
                Ignored(f"protocol error: {info}")]

    # ------------------------------------------------------------------ text

    def receive_text(self, text: str) -> list[Event]:
        if len(text) > MAX_TEXT:
            return self._error(f"text message of {len(text)} characters (at most {MAX_TEXT})")
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return self._error("text message is not JSON")
        if not isinstance(message, dict):
            return self._error(f"text message is JSON {type(message).__name__}, not an object")
        if self.state == "disconnected" and message.get("type") == "close":
            # We ended it: whatever its seq says, the client's close gets its closed.
            seq = int_of(message.get("seq"))
            self.clientseq = seq if seq is not None and seq >= 0 else self.clientseq
            parameters = message.get("parameters")
            return self._close(parameters if isinstance(parameters, dict) else {})
        problem = self._check_envelope(message)
        if problem:
            return self._error(problem)
        self.clientseq = int(message["seq"])
        position = parse_duration(message.get("position"))
        if position is not None:
            self.client_position_s = position
        type_ = message["type"]
        parameters = message.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        if self.state in ("disconnected", "closed") and type_ != "close":
            return [Ignored(f"{type_} after the session ended")]
        if type_ == "open":
            return self._open(message, parameters)
        if self.state == "new":
            return self._error(f"{type_} before open")
        return self._notice(type_, parameters)

    def _check_envelope(self, message: dict[str, Any]) -> str:
        type_, seq = message.get("type"), message.get("seq")
        if not isinstance(type_, str) or not type_:
            return "message without a type"
        if isinstance(seq, bool) or not isinstance(seq, int):
            return f"{type_} without an integer seq"
        if seq != self.clientseq + 1:
            return (f"Invalid seq value (not monotonically increasing): {seq} after "
                    f"{self.clientseq}")
        serverseq = message.get("serverseq", 0)
        if isinstance(serverseq, int) and not isinstance(serverseq, bool) \
                and serverseq > self.seq:
            return f"serverseq {serverseq} is ahead of ours ({self.seq})"
        session = message.get("id")
        if self.session_id is not None and session is not None and session != self.session_id:
            return f"session id {text_of(session)[:60]!r} is not this session's"
        return ""

    def _open(self, message: dict[str, Any], parameters: dict[str, Any]) -> list[Event]:
        if self.state != "new":
            return self._error("a second open")
        self.session_id = text_of(message.get("id")) or None
        media = select_media(parameters.get("media"))
        conversation = text_of(parameters.get("conversationId"))
        self.probe = conversation == PROBE_CONVERSATION
        if media is None and not self.probe:
            # 415 in the client's words; we say it in a disconnect (reference server).
            return self._error("no offered media is PCMU at 8000 Hz with external/internal "
                               "channels")
        self.state = "active"
        self.channels = tuple(media["channels"]) if media else ()
        self.language = text_of(parameters.get("language")) or None
        opened = self.render("opened", {"startPaused": False,
                                        "media": [media] if media else []})
        if self.probe:
            return [Outgoing((opened,)), Ignored("connection probe (no call)")]
        assert media is not None
        participant = parameters.get("participant")
        participant = participant if isinstance(participant, dict) else {}
        metadata: dict[str, Any] = {key: parameters[key] for key in (
            "organizationId", "conversationId", "participant", "language", "customConfig")
            if key in parameters}
        metadata.update(sessionId=self.session_id or "", media=media)
        self._start = CallStart(
            call_id=conversation or (self.session_id or ""),
            from_=text_of(participant.get("ani")), to=text_of(participant.get("dnis")),
            direction="inbound", rate=RATE,
            mix="stereo" if len(self.channels) == 2 else "mono",
            channels=len(self.channels),
            roles=tuple(CHANNEL_ROLES[c] for c in self.channels), metadata=metadata)
        return [Outgoing((opened,)), self._start]

    def _notice(self, type_: str, parameters: dict[str, Any]) -> list[Event]:
        if type_ == "ping":
            self.rtt_s = parse_duration(parameters.get("rtt"))
            return [Outgoing((self.render("pong"),))]
        if type_ == "update":
            self.language = text_of(parameters.get("language")) or self.language
            return [Outgoing((self.render("updated"),))]
        if type_ == "paused":
            self.state = "paused"
            return []
        if type_ == "resumed":
            self.state = "active"
            return []  # the paused stretch is not on the timeline
        if type_ == "discarded":
            return self._gap(parameters)
        if type_ == "close":
            return self._close(parameters)
        if type_ == "error":
            code = text_of(parameters.get("code")) or "?"
            return [ProviderError(f"error {code}"[:40],
                                  text_of(parameters.get("message"))[:300])]
        if type_ == "dtmf":
            digit = text_of(parameters.get("digit"))
            if len(digit) == 1 and digit in "0123456789*#ABCDabcd":
                return [DtmfPressed(digit.upper(), None)]
            return [Ignored("dtmf without a digit")]
        return [Ignored(f"unknown type {type_[:40]!r}")]

    def _gap(self, parameters: dict[str, Any]) -> list[Event]:
        seconds = parse_duration(parameters.get("discarded"))
        if seconds is None or self._start is None:
            return [Ignored("discarded without a usable duration")]
        samples = min(int(seconds * RATE), RATE * 3600)
        if samples <= 0:
            return []
        self.samples += samples
        silence = bytes(2 * samples)
        return [Audio(tuple(silence for _ in self.channels))]

    def _close(self, parameters: dict[str, Any]) -> list[Event]:
        if self.state == "closed":
            return [Ignored("a second close")]
        self.state = "closed"
        closed = self.render("closed")
        reason = text_of(parameters.get("reason")) or "end"
        told = self.client_position_s
        ours = format_duration(self.samples)
        return [Outgoing((closed,)), Stop(
            f"close ({reason[:20]}) at {ours}"
            + (f" (Genesys: PT{told:g}S)" if told is not None else "")
            + (f"; last rtt {self.rtt_s * 1000:.0f} ms" if self.rtt_s is not None else ""))]

    # ------------------------------------------------------------------ audio

    def receive_binary(self, data: bytes) -> list[Event]:
        if self.state == "new":
            return self._error("audio before open")
        if self.state != "active" or self._start is None:
            return [Ignored(f"audio while {self.state}")]
        if not data:
            return []
        buf = self._carry + bytes(data) if self._carry else bytes(data)
        width = len(self.channels)
        whole = len(buf) - len(buf) % width
        self._carry = buf[whole:]
        if not whole:
            return []
        self.samples += whole // width
        if width == 1:
            return [Audio((mulaw_to_pcm16(buf[:whole]),))]
        frames = np.frombuffer(buf, dtype=np.uint8, count=whole).reshape(-1, width)
        return [Audio(tuple(mulaw_to_pcm16(frames[:, i].tobytes()) for i in range(width)))]

    def flush(self) -> bytes:
        left, self._carry = self._carry, b""
        return left


# --------------------------------------------------------------------------- signature

#: What the signature must cover (the components Genesys signs).
REQUIRED_COMPONENTS = ("@request-target", "@authority", "audiohook-organization-id",
                       "audiohook-session-id", "audiohook-correlation-id", "x-api-key")
MAX_SIGNATURE_AGE_S = 10
CLOCK_SKEW_S = 3
_TOKEN = re.compile(r'\s*([a-z*][a-z0-9_.*-]*)\s*=\s*')
_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"|(-?\d{1,15})|:([A-Za-z0-9+/=]*):')


def decode_secret(value: str) -> bytes:
    """The client secret's bytes: base64, standard or URL-safe alphabet, padding optional
    (Genesys shows standard base64; a pasted secret may have lost its ``=``)."""
    text = "".join(value.split())
    text += "=" * (-len(text) % 4)
    alphabet = "-_" if ("-" in text or "_" in text) else "+/"
    decoded = base64.b64decode(text, altchars=alphabet.encode(), validate=True)
    if not decoded:
        raise ValueError("the client secret is empty")
    return decoded


def _parse_params(text: str, pos: int) -> tuple[list[tuple[str, str | int]], int]:
    params: list[tuple[str, str | int]] = []
    while pos < len(text) and text[pos] == ";":
        key = _TOKEN.match(text, pos + 1)
        if key is None:
            raise ValueError("bad parameter")
        item = _ITEM.match(text, key.end())
        if item is None or item.group(3) is not None:
            raise ValueError("bad parameter value")
        value: str | int = item.group(1) if item.group(1) is not None else int(item.group(2))
        params.append((key.group(1), value))
        pos = item.end()
    return params, pos


def parse_signature_input(text: str) -> dict[str, tuple[list[str], list[tuple[str, str | int]]]]:
    """``label=("c1" "c2");k=v…`` members (a subset of RFC 8941 dictionaries)."""
    found: dict[str, tuple[list[str], list[tuple[str, str | int]]]] = {}
    pos = 0
    while pos < len(text):
        label = _TOKEN.match(text, pos)
        if label is None or text[label.end():label.end() + 1] != "(":
            raise ValueError("expected label=(...)")
        pos = label.end() + 1
        components: list[str] = []
        while True:
            while text[pos:pos + 1] == " ":
                pos += 1
            if text[pos:pos + 1] == ")":
                pos += 1
                break
            item = _ITEM.match(text, pos)
            if item is None or item.group(1) is None:
                raise ValueError("components must be strings")
            components.append(item.group(1))
            pos = item.end()
        params, pos = _parse_params(text, pos)
        found[label.group(1)] = (components, params)
        pos = _skip_comma(text, pos)
    return found


def parse_signature(text: str) -> dict[str, bytes]:
    """``label=:base64:`` members."""
    found: dict[str, bytes] = {}
    pos = 0
    while pos < len(text):
        label = _TOKEN.match(text, pos)
        item = _ITEM.match(text, label.end()) if label else None
        if label is None or item is None or item.group(3) is None:
            raise ValueError("expected label=:base64:")
        found[label.group(1)] = base64.b64decode(item.group(3), validate=True)
        pos = _skip_comma(text, _parse_params(text, item.end())[1])
    return found


def _skip_comma(text: str, pos: int) -> int:
    while text[pos:pos + 1] == " ":
        pos += 1
    if pos < len(text):
        if text[pos] != ",":
            raise ValueError("expected ,")
        pos += 1
        while text[pos:pos + 1] == " ":
            pos += 1
    return pos


def _serialize(components: list[str], params: list[tuple[str, str | int]]) -> str:
    inner = " ".join(json.dumps(c) for c in components)
    rendered = "".join(f";{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in params)
    return f"({inner}){rendered}"


def signature_base(components: list[str], params: list[tuple[str, str | int]], *,
                   path: str, headers: Mapping[str, str]) -> str:
    """The signature base (RFC 9421 §2.5) of a GET upgrade request."""
    lines = []
    for name in components:
        if name == "@request-target":
            value: str | None = path
        elif name == "@authority":
            value = headers.get("Host", "").strip().lower()
        elif name == "@method":
            value = "GET"
        elif name == "@path":
            value = path.split("?", 1)[0]
        elif name == "@query":
            value = "?" + (path.split("?", 1)[1] if "?" in path else "")
        elif name.startswith("@"):
            raise ValueError(f"unsupported derived component {name}")
        else:
            value = headers.get(name)
            value = value.strip() if value is not None else None
        if not value:
            raise ValueError(f"component {name} is missing")
        lines.append(f"{json.dumps(name)}: {value}")
    lines.append(f'"@signature-params": {_serialize(components, params)}')
    return "\n".join(lines)


def sign(secret_b64: str, *, path: str, headers: Mapping[str, str], api_key: str,
         nonce: str, created: int, expires: int | None = None,
         label: str = "sig1") -> dict[str, str]:
    """The ``Signature-Input`` and ``Signature`` headers Genesys sends (for simulators)."""
    params: list[tuple[str, str | int]] = [("keyid", api_key), ("nonce", nonce),
                                           ("alg", "hmac-sha256"), ("created", created)]
    if expires is not None:
        params.append(("expires", expires))
    components = list(REQUIRED_COMPONENTS)
    base = signature_base(components, params, path=path, headers=headers)
    digest = hmac.new(decode_secret(secret_b64), base.encode(), hashlib.sha256).digest()
    return {"Signature-Input": f"{label}={_serialize(components, params)}",
            "Signature": f"{label}=:{base64.b64encode(digest).decode('ascii')}:"}


def signature_problem(secret_b64: str, api_key: str, *, path: str,
                      headers: Mapping[str, str], now: float) -> str:
    """Why the request's message signature does not verify ('' when it does)."""
    try:
        inputs = parse_signature_input(headers.get("Signature-Input", ""))
        signatures = parse_signature(headers.get("Signature", ""))
    except (ValueError, binascii.Error, IndexError):
        return "unparsable Signature or Signature-Input"
    if not inputs or not signatures:
        return "unsigned request"
    label, (components, params) = next(iter(inputs.items()))
    given = signatures.get(label)
    if given is None:
        return f"no signature labelled {label}"
    values = dict(params)
    if set(values) - {"alg", "created", "expires", "keyid", "nonce"}:
        return "unknown signature parameter"
    if values.get("keyid") != api_key:
        return "keyid is not the X-API-KEY"
    if values.get("alg", "hmac-sha256") != "hmac-sha256":
        return "alg is not hmac-sha256"
    created, expires = values.get("created"), values.get("expires")
    if not isinstance(created, int) or created > now + CLOCK_SKEW_S \
            or created + MAX_SIGNATURE_AGE_S < now - CLOCK_SKEW_S:
        return "created is missing, in the future or too old"
    if isinstance(expires, int) and expires < now - CLOCK_SKEW_S:
        return "signature expired"
    if missing := [c for c in REQUIRED_COMPONENTS if c not in components]:
        return f"signature does not cover {', '.join(missing)}"
    if len(components) != len(set(components)):
        return "a component is listed twice"
    try:
        base = signature_base(components, params, path=path, headers=headers)
        key = decode_secret(secret_b64)
    except (ValueError, binascii.Error) as exc:
        return str(exc)
    digest = hmac.new(key, base.encode(), hashlib.sha256).digest()
    return "" if hmac.compare_digest(digest, given) else "signature mismatch"


__all__ = ["API_KEY_HEADER", "CHANNEL_ROLES", "PROVIDER", "AudioHookCodec", "decode_secret",
           "format_duration", "format_ms", "parse_duration", "select_media", "sign",
           "signature_base", "signature_problem"]
