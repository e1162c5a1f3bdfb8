"""What a provider module declares, and the small types it declares it with (pure, no I/O).

A provider is one module under :mod:`workers.ingest.providers` that builds one
:class:`Provider` and registers it (:func:`workers.ingest.providers.register`):

* ``paths``      the ingest-port paths it answers (empty for an outbound-only provider);
* ``codec``      a factory of its pure codec (:class:`~workers.ingest.dialects.events.Codec`);
* ``check``      its handshake authentication: the request in, a :data:`Verdict` out;
* ``player``     the outbound tracker of a started call, behind :class:`Player`;
* ``plan``       its call-control plan: a hang-up or transfer rendered as a
  :class:`RestRequest` (data; :class:`~workers.ingest.control.RestClient` does the I/O, and
  asks the request's :class:`RequestSigner`, if any, for headers when it sends it).

The server, the session and the control adapter look providers up by path or name and use
only these members: they hold no provider names.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from workers.ingest.dialects.events import CallStart, Codec, Reply
from workers.ingest.errors import ControlNotConfigured, ControlUnsupported

# ------------------------------------------------------------------------ control commands


@dataclass(frozen=True, slots=True)
class PlayPrompt:
    """Play PCM16 LE mono audio at ``rate`` to the caller; ``name`` marks its end."""

    pcm: bytes
    rate: int
    name: str | None = None


@dataclass(frozen=True, slots=True)
class StopPlayback:
    """Stop what is playing and drop what is queued."""


@dataclass(frozen=True, slots=True)
class EndStream:
    """Stop streaming this call's audio to callscribe (the call goes on)."""


@dataclass(frozen=True, slots=True)
class HangUp:
    """End the call."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """Connect the caller to ``target`` (E.164 number or SIP URI) instead."""

    target: str


Command = PlayPrompt | StopPlayback | EndStream | HangUp | Transfer


@dataclass(frozen=True, slots=True)
class ProviderApis:
    """REST endpoints and credentials of each provider (from ``IngestSettings``)."""

    jambonz_api_url: str | None = None
    jambonz_api_key: str | None = None
    plivo_api_url: str = "https://api.plivo.com"
    plivo_auth_id: str | None = None
    plivo_auth_token: str | None = None
    twilio_api_url: str = "https://api.twilio.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    bland_api_url: str = "https://api.bland.ai"
    bland_api_key: str | None = None
    telnyx_api_url: str = "https://api.telnyx.com"
    telnyx_api_key: str | None = None
    vonage_api_url: str = "https://api.nexmo.com"
    vonage_application_id: str | None = None
    vonage_private_key: str | None = None  # PEM
    transfer_hook_url: str | None = None

    def __repr__(self) -> str:  # never the credentials
        return "ProviderApis(...)"


class RequestSigner(Protocol):
    """Credentials computed when a request is sent, not when it is planned (an expiring JWT
    with a unique id): ``now`` (Unix seconds) and ``nonce`` are given by the sender, so the
    signer stays pure."""

    def headers(self, *, now: float, nonce: str) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One provider REST call, rendered but not sent."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    #: Error codes of the provider's JSON error body (``{"errors": [{"code": …}]}``) that
    #: mean the call is already over: a hang-up answered with one is done, as with a 404.
    gone_codes: tuple[str, ...] = ()
    #: Headers to add when the request is sent (each send signs anew; None: ``headers`` only).
    signer: RequestSigner | None = None

    def __repr__(self) -> str:  # never the credentials
        return f"RestRequest({self.method} {self.url})"


def basic_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def need(value: str | None, what: str) -> str:
    if not value:
        raise ControlNotConfigured(f"{what} is not set")
    return value


def segment(value: str) -> str:
    return quote(value, safe="")


def transfer_hook(apis: ProviderApis, target: str, call_id: str) -> str:
    template = need(apis.transfer_hook_url, "CALLSCRIBE_TRANSFER_HOOK_URL")
    return template.replace("{target}", quote(target, safe="")).replace(
        "{call_id}", quote(call_id, safe=""))


# ------------------------------------------------------------------------ handshake


def basic_auth_ok(header: str | None, username: str, password: str) -> bool:
    """Whether an ``Authorization: Basic`` header carries exactly ``username:password``."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(given, f"{username}:{password}".encode())


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Every provider's handshake credentials and stream options (from ``IngestSettings``);
    each provider reads only its own fields. ``public_url``: the base URL providers sign."""

    jambonz_auth: tuple[str, str] | None = None
    plivo_auth_token: str | None = None
    twilio_auth_token: str | None = None
    twilio_bidirectional: bool = False
    audiohook_api_key: str | None = None
    audiohook_client_secret: str | None = None
    vonage_token: str | None = None
    telnyx_token: str | None = None
    telnyx_tracks: str = "inbound_track"
    telnyx_bidirectional: bool = False
    public_url: str | None = None


@dataclass(frozen=True, slots=True)
class Handshake:
    """What an authentication check sees of the upgrade request."""

    path: str  # with the query
    headers: Mapping[str, str]  # case-insensitive (websockets ``Headers``)
    urls: tuple[str, ...]  # the URLs the provider may have signed
    now: float  # Unix seconds


def shared_token(handshake: Handshake, header: str | None = None) -> str:
    """A shared-secret token of the upgrade: the ``header`` when given and sent, else
    ``?token=`` of the URL, else an ``Authorization: Bearer`` value ('' when none)."""
    if header and (value := handshake.headers.get(header)):
        return str(value).strip()
    query = parse_qs(urlsplit(handshake.path).query)
    if query.get("token"):
        return query["token"][0]
    auth = handshake.headers.get("Authorization") or ""
    return auth[7:].strip() if auth.lower().startswith("bearer ") else ""


def token_ok(given: str, expected: str | None) -> bool:
    """Whether a shared token matches (constant time; nothing matches an unset one)."""
    return bool(expected) and hmac.compare_digest(given.encode(), (expected or "").encode())


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the upgrade with an HTTP status (``reason`` is the metric label)."""

    status: HTTPStatus
    body: bytes
    reason: str = "auth"
    headers: tuple[tuple[str, str], ...] = ()
    log: str = ""


@dataclass(frozen=True, slots=True)
class CloseAfterAccept:
    """Accept the upgrade, then close with ``code`` (Plivo's own server SDK does this)."""

    code: int
    reason: str


Verdict = Refuse | CloseAfterAccept | None  # None: accepted


# ------------------------------------------------------------------------ player


class Player(Protocol):
    """The outbound side of a started call (pure): frames to send for each command, and
    what a reply from the provider means. Methods raise
    :class:`~workers.ingest.errors.ControlError` subclasses when the stream cannot do it."""

    def play_frames(self, command: PlayPrompt, start: CallStart) -> list[str | bytes]: ...

    def stop_frames(self) -> list[str | bytes]: ...

    def end_frames(self) -> list[str | bytes] | None:
        """Frames that end the stream (None: callscribe closes the socket 1000)."""
        ...

    def hangup_frames(self) -> list[str | bytes] | None:
        """Frames that end the call on the socket (None: the provider's REST plan does)."""
        ...

    def on_reply(self, event: Reply) -> str:
        """What the provider's reply settled, for the log."""
        ...


# ------------------------------------------------------------------------ the provider


def _no_plan(command: HangUp | Transfer, call_id: str, start: CallStart,
             apis: ProviderApis) -> RestRequest:
    raise ControlUnsupported("this provider has no REST call control")


def _no_check(handshake: Handshake, options: ProviderOptions) -> Verdict:
    return None


def _forbidden() -> Refuse:
    return Refuse(HTTPStatus.FORBIDDEN, b"signature required\n", "anonymous")


@dataclass(frozen=True)
class Provider:
    """One provider, declared once (see the module docstring)."""

    name: str
    codec: Callable[[ProviderOptions], Codec]
    paths: tuple[str, ...] = ()
    #: WebSocket subprotocols it offers (the first offered one we know is echoed).
    subprotocols: tuple[str, ...] = ()
    check: Callable[[Handshake, ProviderOptions], Verdict] = _no_check
    #: Whether its handshake credential is configured (unconfigured = anonymous).
    configured: Callable[[ProviderOptions], bool] = lambda options: False
    #: The refusal of an anonymous connection when anonymous ones are not allowed.
    anonymous: Callable[[], Refuse] = _forbidden
    #: The settings that configure its credential (named in the refusal's log line).
    credential_settings: tuple[str, ...] = ()
    #: The outbound side of a started call, from its start and its codec (None: listen-only).
    player: Callable[[CallStart, Codec], Player | None] = lambda start, codec: None
    #: False: an unconfigured credential refuses the path even when anonymous connections
    #: are allowed (AudioHook: ``CALLSCRIBE_AUDIOHOOK_API_KEY`` unset = refused).
    anonymous_allowed: bool = True
    plan: Callable[[HangUp | Transfer, str, CallStart, ProviderApis], RestRequest] = _no_plan
    #: Where the provider's own call id is in ``call.started.metadata`` (None: ours).
    call_id_key: str | None = None
