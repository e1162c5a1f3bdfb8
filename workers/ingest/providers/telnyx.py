"""Telnyx Media Streaming (``/telnyx``): the stream's auth token at the handshake
(``x-telnyx-streaming-auth-token``, or ``?token=`` / Bearer; 401), ``media`` + ``mark`` +
``clear`` playback on RTP bidirectional streams, hang-up and transfer over Call Control REST."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import quote

from workers.ingest.dialects import telnyx
from workers.ingest.dialects.audio import resample_pcm16
from workers.ingest.dialects.events import CallStart, MarkEvent, Reply
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
    shared_token,
    token_ok,
)
from workers.ingest.providers.registry import register

#: Call Control's error code for a command on a call that has already ended.
CALL_ENDED = "90018"


class TelnyxCallPlayer:
    """:class:`~workers.ingest.providers.base.Player` over :class:`telnyx.TelnyxPlayer`."""

    def __init__(self, player: telnyx.TelnyxPlayer) -> None:
        self.player = player

    def play_frames(self, command: PlayPrompt, start: CallStart) -> list[str | bytes]:
        pcm = resample_pcm16(command.pcm, command.rate, self.player.rate)
        media: list[str | bytes] = list(self.player.play(pcm))
        return media + ([self.player.mark(command.name)] if command.name else [])

    def stop_frames(self) -> list[str | bytes]:
        return [self.player.clear()]

    def end_frames(self) -> list[str | bytes] | None:
        return None  # we close 1000: the stream ends, the call goes on

    def hangup_frames(self) -> list[str | bytes] | None:
        return None

    def on_reply(self, event: Reply) -> str:
        if isinstance(event, MarkEvent):
            return f"mark {event.name} {self.player.on_reply(event).event}"
        return repr(event)


def check(handshake: Handshake, options: ProviderOptions) -> Verdict:
    """With ``CALLSCRIBE_TELNYX_TOKEN`` set, 401 unless the stream's auth token (the header
    Telnyx sends), ``?token=`` or a Bearer value matches it."""
    if options.telnyx_token and not token_ok(
            shared_token(handshake, telnyx.TOKEN_HEADER), options.telnyx_token):
        return Refuse(HTTPStatus.UNAUTHORIZED, b"bad or missing token\n",
                      log=f"bad or missing token ({telnyx.TOKEN_HEADER}, ?token= or "
                          "Authorization: Bearer)")
    return None


def plan(command: HangUp | Transfer, call_id: str, start: CallStart,
         apis: ProviderApis) -> RestRequest:
    """``POST /v2/calls/{call_control_id}/actions/hangup`` (or ``transfer`` with ``to``)."""
    key = need(apis.telnyx_api_key, "CALLSCRIBE_TELNYX_API_KEY")
    action = "hangup" if isinstance(command, HangUp) else "transfer"
    # A call control id looks like "v3:…": the colon stays (it is allowed in a path segment).
    url = (f"{apis.telnyx_api_url.rstrip('/')}/v2/calls/{quote(call_id, safe=':')}/actions/"
           f"{action}")
    body: dict[str, str] = {} if isinstance(command, HangUp) else {"to": command.target}
    return RestRequest("POST", url, {"Authorization": f"Bearer {key}"}, json=body,
                       gone_codes=(CALL_ENDED,))


PROVIDER = register(Provider(
    name=telnyx.PROVIDER, paths=("/telnyx",),
    codec=lambda options: telnyx.TelnyxCodec(tracks=options.telnyx_tracks,
                                             bidirectional=options.telnyx_bidirectional),
    check=check, configured=lambda options: bool(options.telnyx_token),
    anonymous=lambda: Refuse(HTTPStatus.UNAUTHORIZED, b"token required\n", "anonymous"),
    credential_settings=("CALLSCRIBE_TELNYX_TOKEN",),
    player=lambda start, codec: TelnyxCallPlayer(telnyx.TelnyxPlayer.for_start(start)),
    plan=plan, call_id_key="call_control_id"))
