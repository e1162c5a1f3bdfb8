"""Vonage Voice API WebSockets (``/vonage``): a shared token at the handshake (Vonage signs
nothing we can check without its keys), 20 ms L16 playback with ``notify`` marks and
``clear``; no REST plan yet (Vonage's Voice API needs an RS256 application JWT)."""

from __future__ import annotations

from http import HTTPStatus

from workers.ingest.dialects import vonage
from workers.ingest.dialects.audio import resample_pcm16
from workers.ingest.dialects.events import CallStart, Codec, MarkEvent, Reply
from workers.ingest.providers.base import (
    Handshake,
    PlayPrompt,
    Provider,
    ProviderOptions,
    Refuse,
    Verdict,
    shared_token,
    token_ok,
)
from workers.ingest.providers.registry import register


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


PROVIDER = register(Provider(
    name=vonage.PROVIDER, paths=("/vonage",), codec=lambda options: vonage.VonageCodec(),
    check=check, configured=lambda options: bool(options.vonage_token),
    anonymous=lambda: Refuse(HTTPStatus.UNAUTHORIZED, b"token required\n", "anonymous"),
    credential_settings=("CALLSCRIBE_VONAGE_TOKEN",), anonymous_allowed=False,
    player=_player))
