"""Twilio Media Streams (``/twilio``): ``X-Twilio-Signature`` (403 at the handshake),
``media`` + ``mark`` playback on bidirectional streams, hang-up and transfer over REST."""

from __future__ import annotations

from http import HTTPStatus
from xml.sax.saxutils import escape

from workers.ingest.dialects import twilio
from workers.ingest.dialects.audio import resample_pcm16
from workers.ingest.dialects.events import CallStart, MarkEvent, Reply, text_of
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
    basic_header,
    need,
    segment,
)
from workers.ingest.providers.registry import register


class TwilioCallPlayer:
    """:class:`~workers.ingest.providers.base.Player` over :class:`twilio.TwilioPlayer`."""

    def __init__(self, player: twilio.TwilioPlayer) -> None:
        self.player = player

    def play_frames(self, command: PlayPrompt, start: CallStart) -> list[str | bytes]:
        pcm = resample_pcm16(command.pcm, command.rate, start.rate)
        media: list[str | bytes] = list(self.player.play(pcm))
        return media + ([self.player.mark(command.name)] if command.name else [])

    def stop_frames(self) -> list[str | bytes]:
        return [self.player.clear()]

    def end_frames(self) -> list[str | bytes] | None:
        return None

    def hangup_frames(self) -> list[str | bytes] | None:
        return None

    def on_reply(self, event: Reply) -> str:
        if isinstance(event, MarkEvent):
            return f"mark {event.name} {self.player.on_reply(event).event}"
        return repr(event)


def check(handshake: Handshake, options: ProviderOptions) -> Verdict:
    if options.twilio_auth_token and not twilio.signature_ok(
            options.twilio_auth_token, list(handshake.urls),
            handshake.headers.get(twilio.SIGNATURE_HEADER)):
        return Refuse(HTTPStatus.FORBIDDEN, b"bad signature\n",
                      log="bad or missing X-Twilio-Signature")
    return None


def twiml_dial(target: str) -> str:
    inner = f"<Sip>{escape(target)}</Sip>" if target.lower().startswith(("sip:", "sips:")) \
        else escape(target)
    return f"<Response><Dial>{inner}</Dial></Response>"


def plan(command: HangUp | Transfer, call_id: str, start: CallStart,
         apis: ProviderApis) -> RestRequest:
    account = need(apis.twilio_account_sid or text_of(start.metadata.get("accountSid")),
                   "CALLSCRIBE_TWILIO_ACCOUNT_SID")
    token = need(apis.twilio_auth_token, "CALLSCRIBE_TWILIO_AUTH_TOKEN")
    url = (f"{apis.twilio_api_url.rstrip('/')}/2010-04-01/Accounts/{segment(account)}/"
           f"Calls/{segment(call_id)}.json")
    form = {"Status": "completed"} if isinstance(command, HangUp) \
        else {"Twiml": twiml_dial(command.target)}
    return RestRequest("POST", url, basic_header(account, token), form=form)


PROVIDER = register(Provider(
    name="twilio", paths=("/twilio",),
    codec=lambda options: twilio.TwilioCodec(bidirectional=options.twilio_bidirectional),
    check=check, configured=lambda options: bool(options.twilio_auth_token),
    credential_settings=("CALLSCRIBE_TWILIO_AUTH_TOKEN",),
    player=lambda start, codec: TwilioCallPlayer(twilio.TwilioPlayer.for_start(start)),
    plan=plan, call_id_key="callSid"))
