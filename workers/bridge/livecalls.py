"""The liveCalls protocol (``GET /ws/v1/liveCalls``), pure: no sockets, no Kafka.

Modelled on Hiya's AI Voice Platform endpoint. Pieces, in the order a connection uses them:

* :func:`check_handshake` — the HTTP upgrade request → :class:`Handshake`, or
  :class:`HandshakeRejected` carrying the HTTP status and JSON body to answer with.
* :func:`parse_client_message` — a client frame → :class:`ClientCommand`, or
  :class:`ClientMessageError` (answered with ``error``; close 1008 after
  :data:`MAX_CLIENT_ERRORS`).
* :class:`RateLimiter` — how many client frames a connection may send (close
  :data:`RATE_LIMIT_CLOSE_CODE` beyond that).
* Server message builders (:func:`ack`, :func:`error`, :func:`event_start`, :func:`event_end`,
  :func:`event_call_end`, :func:`transcript`, :func:`transcript_interim`) and :func:`to_client`,
  which turns a transcripts-topic record into the message a client sees.
* :func:`joined_message` and :func:`control_failed_message` — the outcome of a client command
  (a calls-topic ``call.joined`` or ``call.control_failed`` record) as the history record of
  the ``event:end`` or ``error`` message it becomes.

Errors::

    CallscribeError
    ├── ProtocolError
    │   └── ClientMessageError   a client frame we cannot accept (close 1008)
    └── HandshakeRejected        the upgrade request is refused with ``status`` and ``body``
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

from workers.bridge.tokens import TokenMalformed
from workers.errors import AuthError, CallscribeError, ProtocolError
from workers.records import RECORD_ONLY_KEYS, ROLES, SCHEMA_VERSION

PATH = "/ws/v1/liveCalls"
MAX_CLIENT_MESSAGE_BYTES = 4096
#: Malformed messages a client may send (each answered with ``error``) before close 1008.
MAX_CLIENT_ERRORS = 20
#: Client frames a connection may send per second on average, and in one burst; beyond that
#: the connection is closed with :data:`RATE_LIMIT_CLOSE_CODE` (a UI sends a handful).
CLIENT_MESSAGES_PER_S = 10.0
CLIENT_MESSAGES_BURST = 30
#: RFC 6455 1008 (policy violation), with the reason :data:`RATE_LIMIT_REASON`.
RATE_LIMIT_CLOSE_CODE = 1008
RATE_LIMIT_REASON = "rate limit: too many client messages"
MAX_ID_CHARS = 128
MAX_RESUME_AFTER_CHARS = 512
#: Browsers cannot set ``Authorization`` on a WebSocket; they offer ``[SUBPROTOCOL,
#: BEARER_SUBPROTOCOL_PREFIX + key]`` and the server selects :data:`SUBPROTOCOL` (never the key).
SUBPROTOCOL = "callscribe.liveCalls"
BEARER_SUBPROTOCOL_PREFIX = "callscribe.bearer."
#: ``msg`` of the ``event:end`` sent when the user joined the call.
JOINED_MSG = "The user joined the call; the screening phase has ended."
#: Longest provider ``reason`` quoted in an ``error`` description.
MAX_REASON_CHARS = 300

ClientType = Literal["client:joinCall", "client:endCall"]
CLIENT_TYPES: tuple[ClientType, ...] = get_args(ClientType)
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


# --------------------------------------------------------------------------- server messages


def ack(ack_id: str) -> dict[str, Any]:
    """Acknowledge the client message whose ``id`` is ``ack_id``."""
    return {"type": "ack", "ackId": ack_id}


def error(description: str) -> dict[str, Any]:
    """An error the client can act on; ``description`` is a full sentence."""
    return {"type": "error", "description": description}


def event_start(phone: str, timestamp: str) -> dict[str, Any]:
    """Call start. ``phone`` is kept only if E.164; anything else (withheld, SIP URI) is ``""``."""
    phone = phone.strip()
    return {"type": "event:start", "phone": phone if _E164.fullmatch(phone) else "",
            "timestamp": timestamp}


def event_end(msg: str) -> dict[str, Any]:
    """End of the screening phase (not the end of the call)."""
    return {"type": "event:end", "msg": msg}


def event_call_end(timestamp: str) -> dict[str, Any]:
    """The call ended at ``timestamp`` (ISO 8601)."""
    return {"type": "event:callEnd", "timestamp": timestamp}


def transcript(msg: str, role: str, offset: float) -> dict[str, Any]:
    """A final utterance; ``offset`` is seconds from the start of the call's audio."""
    return {"type": "transcript", "msg": msg, "role": _role(role), "offset": _offset(offset)}


def transcript_interim(msg: str, role: str, offset: float, *, revision: int,
                       stable: str) -> dict[str, Any]:
    """A revisable partial utterance (our extension): ``stable`` is the prefix of ``msg`` that
    later revisions keep; the final ``transcript`` with the same record ``id`` replaces it."""
    if revision < 0:
        raise ValueError(f"interim revision {revision}; expected 0 or more")
    return {"type": "transcript:interim", "msg": msg, "role": _role(role),
            "offset": _offset(offset), "revision": revision, "stable": stable}


def _role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"transcript role {role!r}; expected one of {', '.join(ROLES)}")
    return role


def _offset(offset: float) -> float:
    if not math.isfinite(offset) or offset < 0:
        raise ValueError(f"transcript offset {offset!r}; expected seconds >= 0")
    return round(float(offset), 3)


def to_client(record: dict[str, Any], *, interim: bool) -> dict[str, Any] | None:
    """What a client sees of a transcripts-topic record: without ``v``, ``callId`` and internal
    ``...Ms`` timing fields; ``id`` and other extensions kept. ``None`` for interim
    transcripts unless the client asked for them."""
    if record.get("type") == "transcript:interim" and not interim:
        return None
    return {k: v for k, v in record.items()
            if k not in RECORD_ONLY_KEYS and not k.endswith("Ms")}


# --------------------------------------------------------------------------- control outcomes


def joined_message(record: dict[str, Any]) -> dict[str, Any]:
    """The ``event:end`` history record for a ``call.joined`` calls-topic record (one per call:
    its id is ``<call>:end``, however many join commands led to it)."""
    call_id = record["callId"]
    return {"v": SCHEMA_VERSION, **event_end(JOINED_MSG), "callId": call_id,
            "id": f"{call_id}:end"}


def control_failed_message(record: dict[str, Any]) -> dict[str, Any]:
    """The ``error`` history record for a ``call.control_failed`` calls-topic record."""
    call_id = record["callId"]
    command_id = str(record.get("commandId") or "")
    command = record.get("command") or record.get("commandType")
    what = f"The {command} command" if isinstance(command, str) and command else "The command"
    given = record.get("description") or record.get("reason") or "no reason given"
    reason = " ".join(str(given).split())
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS] + "..."
    advice = ("It may work if sent again with a new id." if record.get("retriable")
              else "The call continues as before.")
    description = f"{what} {command_id} could not be carried out: {reason.rstrip('.')}. {advice}"
    return {"v": SCHEMA_VERSION, **error(description), "callId": call_id,
            "id": f"{call_id}:control_failed:{command_id}"}


# --------------------------------------------------------------------------- client messages


class ClientMessageError(ProtocolError):
    """A client frame that is not a valid liveCalls client message (close 1008)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """A parsed ``client:joinCall`` or ``client:endCall``; ``id`` is echoed in the ``ack``."""

    type: ClientType
    id: str


def parse_client_message(text: str | bytes) -> ClientCommand:
    """Parse one client frame; raise :class:`ClientMessageError` saying what to fix."""
    if not isinstance(text, str):
        raise ClientMessageError("Binary frames are not accepted; send each message as a "
                                 "JSON object in a text frame.")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CLIENT_MESSAGE_BYTES:
        raise ClientMessageError(f"Message is {size} bytes; client messages must be at most "
                                 f"{MAX_CLIENT_MESSAGE_BYTES} bytes of UTF-8 JSON.")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ClientMessageError("Message is not valid JSON; send a JSON object such as "
                                 '{"type": "client:joinCall", "id": "<unique id>"}.') from None
    if not isinstance(data, dict):
        raise ClientMessageError(f"Message is a JSON {_json_kind(data)}; send a JSON object "
                                 'with "type" and "id" fields.')
    kind = data.get("type")
    accepted = " or ".join(CLIENT_TYPES)
    if not isinstance(kind, str) or not kind:
        raise ClientMessageError(f'Message has no "type" string; set "type" to {accepted}.')
    if kind not in CLIENT_TYPES:
        raise ClientMessageError(f'Message type {_short(kind)} is not supported; '
                                 f"accepted types are {accepted}.")
    ident = data.get("id")
    if not isinstance(ident, str) or not ident:
        raise ClientMessageError(f'Message {kind} has no "id" string; set "id" to a unique, '
                                 "non-empty string that the ack will echo.")
    if len(ident) > MAX_ID_CHARS:
        raise ClientMessageError(f'Message "id" is {len(ident)} characters; ids must be at '
                                 f"most {MAX_ID_CHARS} characters.")
    if not _is_utf8(ident):
        raise ClientMessageError('Message "id" contains an unpaired surrogate escape; use '
                                 "an id of valid Unicode text.")
    return ClientCommand(type=kind, id=ident)


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _json_kind(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


class RateLimiter:
    """A token bucket: ``rate`` frames per second on average, at most ``burst`` at once.

    Pure: the caller passes the time (seconds, any monotonic origin) to :meth:`allow`.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float = CLIENT_MESSAGES_PER_S,
                 burst: int = CLIENT_MESSAGES_BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit {rate}/s burst {burst}; expected rate > 0, burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        """Whether one more frame at ``now`` is within the limit (and count it if so)."""
        if self._last is not None:
            self._tokens = min(float(self.burst),
                               self._tokens + max(0.0, now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0 - 1e-9:  # floating-point refills of exactly one frame
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


# --------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class Handshake:
    """An accepted upgrade: the call to follow, whether to send interim transcripts, and the
    id of the last message the client already has (replay starts after it)."""

    call_id: str
    interim: bool
    resume_after: str | None


class HandshakeRejected(CallscribeError):
    """Refuse the upgrade with HTTP ``status`` and JSON ``body`` ``{"error", "description"}``."""

    def __init__(self, status: int, body: dict[str, str], *, retry_after_s: int | None = None,
                 ) -> None:
        super().__init__(f"{status} {body.get('error')}: {body.get('description')}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Extra response headers: a ``WWW-Authenticate`` challenge on 401, ``Retry-After``
        on 503."""
        extra = [("WWW-Authenticate", 'Bearer realm="callscribe"')] if self.status == 401 else []
        if self.retry_after_s is not None:
            extra.append(("Retry-After", str(self.retry_after_s)))
        return extra


def _reject(status: int, code: str, description: str) -> HandshakeRejected:
    return HandshakeRejected(status, {"error": code, "description": description})


def draining(retry_after_s: int = 5) -> HandshakeRejected:
    """503: this bridge is shutting down (or not started yet); another replica serves the call."""
    return HandshakeRejected(503, {"error": "unavailable", "description": "This bridge is "
                                   "shutting down; reconnect (another replica serves the call)."},
                             retry_after_s=retry_after_s)


def internal_error() -> HandshakeRejected:
    """500: an unexpected failure while accepting the connection (logged on the server)."""
    return _reject(500, "internal_error", "The server failed while accepting this connection; "
                   "try again.")


def bearer_from_subprotocols(header_value: str | None) -> str | None:
    """The API key a browser put in ``Sec-WebSocket-Protocol`` as ``callscribe.bearer.<key>``."""
    for offered in (header_value or "").split(","):
        offered = offered.strip()
        if offered.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return offered[len(BEARER_SUBPROTOCOL_PREFIX):] or None
    return None


def select_subprotocol(header_value: str | None) -> str | None:
    """The subprotocol to answer with: :data:`SUBPROTOCOL` if offered (browsers fail the
    connection when they offered some and none is selected)."""
    offered = {p.strip() for p in (header_value or "").split(",")}
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def check_handshake(path: str, authorization: str | None, *, api_keys: frozenset[str],
                    verify_token: Callable[[str], str],
                    call_known: Callable[[str], bool],
                    can_resume: Callable[[str, str], bool] | None = None) -> Handshake:
    """Check an upgrade request (``path`` with its query string) in order: path (404), API key
    (401), query (400), token (400 malformed / 401 rejected), call (404). A call that has
    ended is still accepted when ``resumeAfter`` names a message of it that
    ``can_resume(call_id, resume_after)`` still holds: the client gets what it missed."""
    url = urlsplit(path)
    if url.path != PATH:
        raise _reject(404, "not_found", f"No WebSocket endpoint at {_short(url.path)}; "
                      f"connect to {PATH}.")
    _check_api_key(authorization, api_keys)
    query = parse_qs(url.query, keep_blank_values=True)
    token = _single(query, "conversationToken")
    if not token:
        raise _reject(400, "invalid_request", "Query parameter conversationToken is missing "
                      "or empty; pass the liveConversationToken of the call.")
    interim = _single(query, "interim")
    if interim is not None and interim not in ("true", "false"):
        raise _reject(400, "invalid_request", f"Query parameter interim is {_short(interim)}; "
                      "use true or false.")
    resume_after = _single(query, "resumeAfter")
    if resume_after is not None and not 0 < len(resume_after) <= MAX_RESUME_AFTER_CHARS:
        raise _reject(400, "invalid_request", "Query parameter resumeAfter must be the id of "
                      f"a message you received (1 to {MAX_RESUME_AFTER_CHARS} characters).")
    try:
        call_id = verify_token(token)
    except TokenMalformed:
        raise _reject(400, "invalid_token", "The conversationToken is not a valid token; "
                      "pass it exactly as issued.") from None
    except AuthError:
        raise _reject(401, "token_rejected", "The conversationToken is expired or was not "
                      "issued by this server; ask for a new one.") from None
    resumable = resume_after is not None and can_resume is not None and can_resume(
        call_id, resume_after)
    if not call_known(call_id) and not resumable:
        raise _reject(404, "unknown_call", "The call for this conversationToken is not known "
                      "or has ended.")
    return Handshake(call_id=call_id, interim=interim == "true", resume_after=resume_after)


def _check_api_key(authorization: str | None, api_keys: frozenset[str]) -> None:
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _reject(401, "unauthorized", "The Authorization header is missing or not a "
                      "Bearer key; send 'Authorization: Bearer <api key>'.")
    given = key.encode("utf-8", "surrogatepass")
    matched = False
    for known in api_keys:  # no early exit: time does not depend on which key matched
        matched |= hmac.compare_digest(given, known.encode("utf-8", "surrogatepass"))
    if not matched:
        raise _reject(401, "unauthorized", "The API key is not valid for this server.")


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise _reject(400, "invalid_request", f"Query parameter {name} is given "
                      f"{len(values)} times; give it once.")
    return values[0]


__all__ = [
    "BEARER_SUBPROTOCOL_PREFIX",
    "CLIENT_MESSAGES_BURST",
    "CLIENT_MESSAGES_PER_S",
    "CLIENT_TYPES",
    "JOINED_MSG",
    "MAX_CLIENT_ERRORS",
    "MAX_CLIENT_MESSAGE_BYTES",
    "MAX_ID_CHARS",
    "MAX_REASON_CHARS",
    "PATH",
    "RATE_LIMIT_CLOSE_CODE",
    "RATE_LIMIT_REASON",
    "SUBPROTOCOL",
    "ClientCommand",
    "ClientMessageError",
    "ClientType",
    "Handshake",
    "HandshakeRejected",
    "RateLimiter",
    "ack",
    "bearer_from_subprotocols",
    "check_handshake",
    "control_failed_message",
    "draining",
    "error",
    "event_call_end",
    "event_end",
    "event_start",
    "internal_error",
    "joined_message",
    "parse_client_message",
    "select_subprotocol",
    "to_client",
    "transcript",
    "transcript_interim",
]
