"""Plivo Audio Streams (``/plivo``): ``X-Plivo-Signature-V3`` (accepted, then closed 1008 as
Plivo's SDK does), ``playAudio`` + ``checkpoint`` playback, hang-up and transfer over REST."""

from __future__ import annotations

from workers.ingest.dialects import plivo
from workers.ingest.dialects.audio import resample_pcm16
from workers.ingest.dialects.events import CallStart, PlayDone, Reply, text_of
from workers.ingest.providers.base import (
    CloseAfterAccept,
    Handshake,
    HangUp,
    PlayPrompt,
    Provider,
    ProviderApis,
    ProviderOptions,
    RestRequest,
    Transfer,
    Verdict,
    basic_header,
    need,
    segment,
    transfer_hook,
)
from workers.ingest.providers.registry import register


class PlivoCallPlayer:
    """:class:`~workers.ingest.providers.base.Player` over :class:`plivo.PlivoPlayer`."""

    def __init__(self, player: plivo.PlivoPlayer) -> None:
        self.player = player

    def play_frames(self, command: PlayPrompt, start: CallStart) -> list[str | bytes]:
        pcm = resample_pcm16(command.pcm, command.rate, start.rate)
        plays: list[str | bytes] = list(self.player.play(pcm))
        return plays + ([self.player.checkpoint(command.name)] if command.name else [])

    def stop_frames(self) -> list[str | bytes]:
        return [self.player.clear()[0]]

    def end_frames(self) -> list[str | bytes] | None:
        return None

    def hangup_frames(self) -> list[str | bytes] | None:
        return None

    def on_reply(self, event: Reply) -> str:
        if isinstance(event, PlayDone):
            return repr(event)
        return self.player.on_reply(event)


def check(handshake: Handshake, options: ProviderOptions) -> Verdict:
    if options.plivo_auth_token and not plivo.signature_ok(
            options.plivo_auth_token, list(handshake.urls),
            handshake.headers.get(plivo.NONCE_HEADER),
            handshake.headers.get(plivo.SIGNATURE_HEADER)):
        return CloseAfterAccept(1008, "Signature validation failed")
    return None


def plan(command: HangUp | Transfer, call_id: str, start: CallStart,
         apis: ProviderApis) -> RestRequest:
    auth_id = need(apis.plivo_auth_id or text_of(start.metadata.get("accountId")),
                   "CALLSCRIBE_PLIVO_AUTH_ID")
    token = need(apis.plivo_auth_token, "CALLSCRIBE_PLIVO_AUTH_TOKEN")
    url = (f"{apis.plivo_api_url.rstrip('/')}/v1/Account/{segment(auth_id)}/Call/"
           f"{segment(call_id)}/")
    if isinstance(command, HangUp):
        return RestRequest("DELETE", url, basic_header(auth_id, token))
    return RestRequest("POST", url, basic_header(auth_id, token), json={
        "legs": "aleg", "aleg_url": transfer_hook(apis, command.target, call_id),
        "aleg_method": "POST"})


PROVIDER = register(Provider(
    name="plivo", paths=("/plivo",), codec=lambda options: plivo.PlivoCodec(), check=check,
    configured=lambda options: bool(options.plivo_auth_token),
    credential_settings=("CALLSCRIBE_PLIVO_AUTH_TOKEN",),
    player=lambda start, codec: PlivoCallPlayer(plivo.PlivoPlayer.for_start(start)),
    plan=plan, call_id_key="callId"))
