"""jambonz ``listen`` (``/jambonz``): HTTP Basic at the handshake, JSON or streamed playback,
``disconnect`` to end the stream, hang-up and transfer through the jambonz REST API."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from workers.ingest.dialects import jambonz
from workers.ingest.dialects.audio import resample_pcm16
from workers.ingest.dialects.events import CallStart, MarkEvent, PlayDone, Reply, text_of
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
    basic_auth_ok,
    need,
    segment,
    transfer_hook,
)
from workers.ingest.providers.registry import register

_CHALLENGE = (("WWW-Authenticate", 'Basic realm="callscribe"'),)


class JambonzCallPlayer:
    """:class:`~workers.ingest.providers.base.Player` over :class:`jambonz.JambonzPlayer`."""

    def __init__(self, player: jambonz.JambonzPlayer) -> None:
        self.player = player

    def play_frames(self, command: PlayPrompt, start: CallStart) -> list[str | bytes]:
        player = self.player
        if player.streaming:
            assert player.streaming_rate is not None
            pcm = resample_pcm16(command.pcm, command.rate, player.streaming_rate)
            frames: list[str | bytes] = [player.stream(pcm)]
            return frames + ([player.mark(command.name)] if command.name else [])
        rate = command.rate if command.rate in jambonz.SUPPORTED_RATES else 16000
        pcm = resample_pcm16(command.pcm, command.rate, rate)
        return [player.play(pcm, content_type="raw", sample_rate=rate, id=command.name)]

    def stop_frames(self) -> list[str | bytes]:
        return [self.player.kill()]

    def end_frames(self) -> list[str | bytes] | None:
        return [self.player.disconnect()]  # jambonz closes; the call goes on

    def hangup_frames(self) -> list[str | bytes] | None:
        return None

    def on_reply(self, event: Reply) -> str:
        if isinstance(event, PlayDone | MarkEvent):
            return self.player.on_reply(event)
        return repr(event)


def check(handshake: Handshake, options: ProviderOptions) -> Verdict:
    if options.jambonz_auth and not basic_auth_ok(handshake.headers.get("Authorization"),
                                                  *options.jambonz_auth):
        return Refuse(HTTPStatus.UNAUTHORIZED, b"bad credentials\n", headers=_CHALLENGE,
                      log="bad or missing Basic credentials")
    return None


def plan(command: HangUp | Transfer, call_id: str, start: CallStart,
         apis: ProviderApis) -> RestRequest:
    base = need(apis.jambonz_api_url, "CALLSCRIBE_JAMBONZ_API_URL").rstrip("/")
    account = need(text_of(start.metadata.get("accountSid")), "the call's accountSid")
    url = f"{base}/v1/Accounts/{segment(account)}/Calls/{segment(call_id)}"
    headers = {"Authorization": "Bearer " + need(apis.jambonz_api_key,
                                                 "CALLSCRIBE_JAMBONZ_API_KEY")}
    body: dict[str, Any] = {"call_status": "completed"} if isinstance(command, HangUp) \
        else {"call_hook": {"url": transfer_hook(apis, command.target, call_id),
                            "method": "POST"}}
    return RestRequest("PUT", url, headers, json=body)


PROVIDER = register(Provider(
    name="jambonz", paths=("/jambonz",), subprotocols=jambonz.SUBPROTOCOLS,
    codec=lambda options: jambonz.JambonzCodec(), check=check,
    configured=lambda options: bool(options.jambonz_auth),
    anonymous=lambda: Refuse(HTTPStatus.UNAUTHORIZED, b"credentials required\n",
                             "anonymous", headers=_CHALLENGE),
    credential_settings=("CALLSCRIBE_JAMBONZ_USERNAME/_PASSWORD",),
    player=lambda start, codec: JambonzCallPlayer(jambonz.JambonzPlayer.for_start(start)),
    plan=plan, call_id_key="callSid"))
