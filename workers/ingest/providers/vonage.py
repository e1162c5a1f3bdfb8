"""Vonage Voice API WebSockets (``/vonage``): a shared token at the handshake (Vonage signs
nothing we can check without its keys), 20 ms L16 playback with ``notify`` marks and
``clear``; hang-up and transfer over the Voice API (``PUT /v1/calls/{uuid}``), authorized by
an application JWT (RS256, signed with the application's private key when each request is
sent: :class:`ApplicationJwt`)."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from workers.ingest.dialects import vonage
from workers.ingest.dialects.audio import resample_pcm16
from workers.ingest.dialects.events import CallStart, Codec, MarkEvent, Reply, text_of
from workers.ingest.providers.base import (
    Handshake,
    HangUp,
    PlayPrompt,
    Provider,
    ProviderApis,
    ProviderOptions,
    Refuse,
    RestRequest,
    Transfer,
    Verdict,
    need,
    segment,
    shared_token,
    token_ok,
    transfer_hook,
)
from workers.ingest.providers.registry import register

#: How long an application JWT is valid (Vonage's default when ``exp`` is left out: 15 min).
JWT_TTL_S = 900
#: Headers of the connected message that may carry the call leg's uuid (the one
#: ``PUT /v1/calls/{uuid}`` takes; a ``conversation_uuid`` is not a leg).
LEG_UUID_KEYS = ("uuid", "call_uuid", "callUuid")


class VonagePlayer:
    """:class:`~workers.ingest.providers.base.Player` of a Vonage socket (always
    bidirectional): notify names not yet played back are pending; ``clear`` drops them."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.pending: list[str] = []

    def play_frames(self, command: PlayPrompt, start: CallStart) -> list[str | bytes]:
        pcm = resample_pcm16(command.pcm, command.rate, self.rate)
        out: list[str | bytes] = list(vonage.frames(pcm, self.rate))
        if command.name:
            out.append(vonage.render_notify(command.name))
            self.pending.append(command.name)
        return out

    def stop_frames(self) -> list[str | bytes]:
        return [vonage.render_clear()]

    def end_frames(self) -> list[str | bytes] | None:
        return None  # we close 1000: the websocket leg ends, the call goes on

    def hangup_frames(self) -> list[str | bytes] | None:
        return None

    def on_reply(self, event: Reply) -> str:
        if isinstance(event, MarkEvent):
            if event.name in self.pending:
                self.pending.remove(event.name)
            return f"notify {event.name} played"
        return repr(event)


def _player(start: CallStart, codec: Codec) -> VonagePlayer:
    return VonagePlayer(start.rate)


def check(handshake: Handshake, options: ProviderOptions) -> Verdict:
    """401 unless the token matches (unset: refused, the token being the only credential)."""
    if not token_ok(shared_token(handshake), options.vonage_token):
        return Refuse(HTTPStatus.UNAUTHORIZED, b"bad or missing token\n",
                      log="bad or missing token (?token= or Authorization: Bearer)")
    return None


def check_private_key(pem: str) -> None:
    """Raise ``ValueError`` unless ``pem`` is an unencrypted PEM RSA private key (what Vonage
    gives when an application is created); the message never shows the key."""
    try:
        key = load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("the Vonage private key is not an unencrypted PEM private key (paste "
                         "the private.key file Vonage gave for the application)") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(  # noqa: TRY004  (pydantic reports a ValueError as a bad setting)
            "the Vonage private key is not an RSA key (application JWTs are RS256)")


@dataclass(frozen=True, slots=True)
class ApplicationJwt:
    """:class:`~workers.ingest.providers.base.RequestSigner` of the Voice API: a Bearer JWT
    signed RS256 with the application's private key, claims ``application_id``, ``iat``,
    ``exp`` (``iat`` + :data:`JWT_TTL_S`) and a unique ``jti`` (the sender's nonce)."""

    application_id: str
    private_key: str  # PEM
    ttl_s: int = JWT_TTL_S

    def claims(self, *, now: float, nonce: str) -> dict[str, Any]:
        issued = int(now)
        return {"application_id": self.application_id, "iat": issued,
                "exp": issued + self.ttl_s, "jti": nonce}

    def headers(self, *, now: float, nonce: str) -> dict[str, str]:
        token = jwt.encode(self.claims(now=now, nonce=nonce), self.private_key.strip(),
                           algorithm="RS256")
        return {"Authorization": f"Bearer {token}"}

    def __repr__(self) -> str:  # never the key
        return f"ApplicationJwt({self.application_id})"


def ncco_connect(target: str) -> dict[str, Any]:
    """An NCCO ``connect`` to ``target``: a SIP URI, or a phone number (E.164, its ``+``
    dropped as Vonage writes numbers)."""
    if target.lower().startswith(("sip:", "sips:")):
        endpoint: dict[str, str] = {"type": "sip", "uri": target}
    else:
        endpoint = {"type": "phone", "number": target.removeprefix("+")}
    return {"action": "connect", "endpoint": [endpoint]}


def plan(command: HangUp | Transfer, call_id: str, start: CallStart,
         apis: ProviderApis) -> RestRequest:
    """``PUT /v1/calls/{uuid}`` with ``{"action": "hangup"}``, or a transfer to the NCCO at
    CALLSCRIBE_TRANSFER_HOOK_URL when set (one that dials the target and keeps the stream),
    else to an inline NCCO ``connect`` to the target. A 404 (no such call) on a hang-up means
    already over."""
    application = need(apis.vonage_application_id, "CALLSCRIBE_VONAGE_APPLICATION_ID")
    key = need(apis.vonage_private_key, "CALLSCRIBE_VONAGE_PRIVATE_KEY")
    leg = need(next((text_of(start.metadata.get(k)) for k in LEG_UUID_KEYS
                     if text_of(start.metadata.get(k))), ""),
               "the call's uuid (a uuid header of the NCCO websocket endpoint)")
    url = f"{apis.vonage_api_url.rstrip('/')}/v1/calls/{segment(leg)}"
    body: dict[str, Any]
    if isinstance(command, HangUp):
        body = {"action": "hangup"}
    elif apis.transfer_hook_url:
        hook = transfer_hook(apis, command.target, call_id)
        body = {"action": "transfer", "destination": {"type": "ncco", "url": [hook]}}
    else:
        body = {"action": "transfer",
                "destination": {"type": "ncco", "ncco": [ncco_connect(command.target)]}}
    return RestRequest("PUT", url, json=body, signer=ApplicationJwt(application, key))


PROVIDER = register(Provider(
    name=vonage.PROVIDER, paths=("/vonage",), codec=lambda options: vonage.VonageCodec(),
    check=check, configured=lambda options: bool(options.vonage_token),
    anonymous=lambda: Refuse(HTTPStatus.UNAUTHORIZED, b"token required\n", "anonymous"),
    credential_settings=("CALLSCRIBE_VONAGE_TOKEN",), anonymous_allowed=False,
    player=_player, plan=plan))
