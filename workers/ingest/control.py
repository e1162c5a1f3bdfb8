"""The provider-neutral call-control port: play a prompt, stop playback, end the stream,
hang up, transfer — each mapped to the provider's socket command where one exists, or to its
REST API where not.

=============  ====================  =====================  ==================  ==============
command        jambonz               Plivo                  Twilio              Bland
=============  ====================  =====================  ==================  ==============
PlayPrompt     ``playAudio`` (JSON)  ``playAudio`` +        ``media`` + ``mark``  unsupported
               or binary streaming   ``checkpoint``         (bidirectional)     (listen-only)
StopPlayback   ``killAudio``         ``clearAudio``         ``clear``           unsupported
EndStream      ``disconnect``        close 1000             close 1000          close the
                                                                                listen socket
HangUp         PUT Calls/{sid}       DELETE Call/{uuid}/    POST Calls/{sid}    POST calls/
               call_status=          (REST)                 .json Status=       {id}/stop
               completed (REST)                             completed (REST)
Transfer       PUT Calls/{sid}       POST Call/{uuid}/      POST Calls/{sid}    POST calls/
               call_hook (REST)      aleg_url (REST)        .json Twiml=<Dial>  active/transfer
=============  ====================  =====================  ==================  ==============

:func:`plan_rest` renders a REST request without doing it (pure, tested); :class:`RestClient`
(aiohttp) sends it; :class:`CallControl` is the adapter that picks the path for a call.
Hang-up treats 404 as done (the call is already over), so it is safe to repeat.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import aiohttp

from workers.ingest.dialects.audio import resample_pcm16
from workers.ingest.dialects.events import CallStart, text_of
from workers.ingest.dialects.jambonz import SUPPORTED_RATES, JambonzPlayer
from workers.ingest.dialects.plivo import PlivoPlayer
from workers.ingest.dialects.twilio import TwilioPlayer
from workers.ingest.errors import (
    ControlNotConfigured,
    ControlUnsupported,
    ProviderRefused,
)
from workers.ingest.session import CallHandle

log = logging.getLogger(__name__)


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
    transfer_hook_url: str | None = None


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One provider REST call, rendered but not sent."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None

    def __repr__(self) -> str:  # never the credentials
        return f"RestRequest({self.method} {self.url})"


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _need(value: str | None, what: str) -> str:
    if not value:
        raise ControlNotConfigured(f"{what} is not set")
    return value


def _segment(value: str) -> str:
    return quote(value, safe="")


def _hook(apis: ProviderApis, target: str, call_id: str) -> str:
    template = _need(apis.transfer_hook_url, "CALLSCRIBE_TRANSFER_HOOK_URL")
    return template.replace("{target}", quote(target, safe="")).replace(
        "{call_id}", quote(call_id, safe=""))


def _twiml_dial(target: str) -> str:
    inner = f"<Sip>{escape(target)}</Sip>" if target.lower().startswith(("sip:", "sips:")) \
        else escape(target)
    return f"<Response><Dial>{inner}</Dial></Response>"


#: Where each provider's own call id is in ``call.started.metadata``.
_CALL_ID_KEYS = {"jambonz": "callSid", "plivo": "callId", "twilio": "callSid",
                 "bland": "callId"}


def plan_rest(command: HangUp | Transfer, *, provider: str, call_id: str, start: CallStart,
              apis: ProviderApis) -> RestRequest:
    """The REST request that hangs up or transfers a call (pure); raises
    :class:`ControlNotConfigured` when a URL, credential or id it needs is missing. The
    provider's own call id comes from the stream's metadata (never a generated one)."""
    meta = start.metadata
    id_key = _CALL_ID_KEYS.get(provider)
    if id_key is not None:
        call_id = _need(text_of(meta.get(id_key)), f"the call's {id_key}")
    if provider == "jambonz":
        base = _need(apis.jambonz_api_url, "CALLSCRIBE_JAMBONZ_API_URL").rstrip("/")
        account = _need(text_of(meta.get("accountSid")), "the call's accountSid")
        url = f"{base}/v1/Accounts/{_segment(account)}/Calls/{_segment(call_id)}"
        headers = {"Authorization": "Bearer " + _need(apis.jambonz_api_key,
                                                      "CALLSCRIBE_JAMBONZ_API_KEY")}
        body: dict[str, Any] = {"call_status": "completed"} if isinstance(command, HangUp) \
            else {"call_hook": {"url": _hook(apis, command.target, call_id), "method": "POST"}}
        return RestRequest("PUT", url, headers, json=body)
    if provider == "plivo":
        auth_id = _need(apis.plivo_auth_id or text_of(meta.get("accountId")),
                        "CALLSCRIBE_PLIVO_AUTH_ID")
        token = _need(apis.plivo_auth_token, "CALLSCRIBE_PLIVO_AUTH_TOKEN")
        url = (f"{apis.plivo_api_url.rstrip('/')}/v1/Account/{_segment(auth_id)}/Call/"
               f"{_segment(call_id)}/")
        if isinstance(command, HangUp):
            return RestRequest("DELETE", url, _basic(auth_id, token))
        return RestRequest("POST", url, _basic(auth_id, token), json={
            "legs": "aleg", "aleg_url": _hook(apis, command.target, call_id),
            "aleg_method": "POST"})
    if provider == "twilio":
        account = _need(apis.twilio_account_sid or text_of(meta.get("accountSid")),
                        "CALLSCRIBE_TWILIO_ACCOUNT_SID")
        token = _need(apis.twilio_auth_token, "CALLSCRIBE_TWILIO_AUTH_TOKEN")
        url = (f"{apis.twilio_api_url.rstrip('/')}/2010-04-01/Accounts/{_segment(account)}/"
               f"Calls/{_segment(call_id)}.json")
        form = {"Status": "completed"} if isinstance(command, HangUp) \
            else {"Twiml": _twiml_dial(command.target)}
        return RestRequest("POST", url, _basic(account, token), form=form)
    if provider == "bland":
        base = apis.bland_api_url.rstrip("/")
        headers = {"authorization": _need(apis.bland_api_key, "CALLSCRIBE_BLAND_API_KEY")}
        if isinstance(command, HangUp):
            return RestRequest("POST", f"{base}/v1/calls/{_segment(call_id)}/stop", headers)
        return RestRequest("POST", f"{base}/v1/calls/active/transfer", headers,
                           json={"call_id": call_id, "transfer_number": command.target})
    raise ControlUnsupported(f"no REST call control for provider {provider!r}")


def check_response(request: RestRequest, status: int, body: bytes, *,
                   gone_is_done: bool) -> None:
    """Raise :class:`ProviderRefused` unless the provider accepted the request. Bland may
    answer 200 with ``"status": "error"``; ``gone_is_done``: 404 means already over."""
    if status == 404 and gone_is_done:
        return
    detail = ""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if isinstance(data, dict):
        detail = text_of(data.get("message") or data.get("error") or data.get("errors"))[:200]
        if status < 300 and data.get("status") != "error":
            return
    elif status < 300:
        return
    raise ProviderRefused(f"{request.method} {request.url.split('?')[0]} answered {status}"
                          + (f": {detail}" if detail else ""), status=status)


class RestClient:
    """Sends :class:`RestRequest` with aiohttp (one connection pool per worker)."""

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: RestRequest, *, gone_is_done: bool = False) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(
                    request.method, request.url, headers=request.headers, json=request.json,
                    data=request.form) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderRefused(f"{request.method} {request.url.split('?')[0]} failed: "
                                  f"{type(exc).__name__} {exc}", retriable=True) from exc
        check_response(request, status, body, gone_is_done=gone_is_done)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class CallControl:
    """Carries out a :data:`Command` on a call this worker owns (the adapter)."""

    def __init__(self, apis: ProviderApis, rest: RestClient | None = None) -> None:
        self.apis = apis
        self.rest = rest or RestClient()

    async def execute(self, handle: CallHandle, command: Command) -> None:
        start, call_id = handle.start, handle.call_id
        if start is None or call_id is None:
            raise ControlUnsupported("the call has not started")
        if isinstance(command, HangUp | Transfer):
            request = plan_rest(command, provider=handle.provider, call_id=call_id,
                                start=start, apis=self.apis)
            log.info("%s call %s: %s", handle.provider, call_id, request)
            await self.rest.send(request, gone_is_done=isinstance(command, HangUp))
        elif isinstance(command, EndStream):
            await handle.end_stream()
        elif isinstance(command, StopPlayback):
            await handle.send(self._stop_frames(handle))
        else:
            await handle.send(self._play_frames(handle, command, start))

    @staticmethod
    def _player(handle: CallHandle) -> JambonzPlayer | PlivoPlayer | TwilioPlayer:
        if handle.player is None:
            raise ControlUnsupported(f"{handle.provider} streams take no audio back")
        return handle.player

    def _stop_frames(self, handle: CallHandle) -> list[str | bytes]:
        player = self._player(handle)
        if isinstance(player, JambonzPlayer):
            return [player.kill()]
        if isinstance(player, PlivoPlayer):
            return [player.clear()[0]]
        return [player.clear()]

    def _play_frames(self, handle: CallHandle, command: PlayPrompt,
                     start: CallStart) -> list[str | bytes]:
        player = self._player(handle)
        if isinstance(player, JambonzPlayer):
            if player.streaming:
                assert player.streaming_rate is not None
                pcm = resample_pcm16(command.pcm, command.rate, player.streaming_rate)
                frames: list[str | bytes] = [player.stream(pcm)]
                return frames + ([player.mark(command.name)] if command.name else [])
            rate = command.rate if command.rate in SUPPORTED_RATES else 16000
            pcm = resample_pcm16(command.pcm, command.rate, rate)
            return [player.play(pcm, content_type="raw", sample_rate=rate, id=command.name)]
        pcm = resample_pcm16(command.pcm, command.rate, start.rate)
        if isinstance(player, PlivoPlayer):
            plays: list[str | bytes] = list(player.play(pcm))
            return plays + ([player.checkpoint(command.name)] if command.name else [])
        media: list[str | bytes] = list(player.play(pcm))
        return media + ([player.mark(command.name)] if command.name else [])

    async def close(self) -> None:
        await self.rest.close()


__all__ = ["CallControl", "Command", "EndStream", "HangUp", "PlayPrompt", "ProviderApis",
           "RestClient", "RestRequest", "StopPlayback", "Transfer", "check_response",
           "plan_rest"]
