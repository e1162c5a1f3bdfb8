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

Genesys AudioHook (monitor, listen-only): play/stop unsupported; end stream and hang up are
``disconnect`` on the socket; no REST transfer. Vonage: 20 ms L16 frames + ``notify``,
``clear``, close 1000; ``PUT /v1/calls/{uuid}`` ``{"action": "hangup"}`` or ``"transfer"`` to
an NCCO (Bearer application JWT, RS256, signed by the request's signer when it is sent).
Telnyx: ``media`` (the stream's PCMU, PCMA or L16) + ``mark``, ``clear`` on RTP bidirectional
streams, close 1000; ``POST /v2/calls/{call_control_id}/actions/hangup`` and ``…/transfer``
(Bearer API key; error 90018 "call has already ended" counts as hung up).

Each provider module (:mod:`workers.ingest.providers`) supplies its frames (its ``Player``)
and its REST plan; :func:`plan_rest` renders a REST request without doing it (pure, tested);
:class:`RestClient` (aiohttp) sends it; :class:`CallControl` is the adapter that picks the path
for a call, with no provider names.
Hang-up treats 404 as done (the call is already over), so it is safe to repeat.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import aiohttp

from workers.ingest import providers
from workers.ingest.dialects.events import CallStart, text_of
from workers.ingest.errors import (
    ControlUnsupported,
    ProviderRefused,
)
from workers.ingest.providers.base import (
    Command,
    EndStream,
    HangUp,
    PlayPrompt,
    ProviderApis,
    RestRequest,
    StopPlayback,
    Transfer,
    need,
)
from workers.ingest.session import CallHandle

log = logging.getLogger(__name__)


def plan_rest(command: HangUp | Transfer, *, provider: str, call_id: str, start: CallStart,
              apis: ProviderApis) -> RestRequest:
    """The REST request that hangs up or transfers a call (pure), as the provider's module
    plans it; raises :class:`ControlNotConfigured` when a URL, credential or id it needs is
    missing. The provider's own call id comes from the stream's metadata (never a generated
    one)."""
    found = providers.by_name(provider)
    if found is None:
        raise ControlUnsupported(f"no REST call control for provider {provider!r}")
    if found.call_id_key is not None:
        call_id = need(text_of(start.metadata.get(found.call_id_key)),
                       f"the call's {found.call_id_key}")
    return found.plan(command, call_id, start, apis)


#: What an ``errors`` entry may say, in the order it is shown.
_ERROR_KEYS = ("code", "title", "detail", "error", "message")


def _errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of a JSON:API-style ``errors`` list (empty when there is none)."""
    found = data.get("errors")
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def check_response(request: RestRequest, status: int, body: bytes, *,
                   gone_is_done: bool) -> None:
    """Raise :class:`ProviderRefused` unless the provider accepted the request. Bland may
    answer 200 with ``"status": "error"``; ``gone_is_done``: 404, or an error code the
    request names in ``gone_codes``, means already over."""
    if status == 404 and gone_is_done:
        return
    detail = ""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if isinstance(data, dict):
        errors = _errors(data)
        if gone_is_done and status >= 400 and any(
                text_of(e.get("code")) in request.gone_codes for e in errors):
            return
        detail = text_of(data.get("message") or data.get("error") or data.get("errors"))
        if not detail and (data.get("title") or data.get("detail")):  # RFC 7807 problem
            detail = " ".join(text_of(data.get(k)) for k in ("title", "detail")
                              if text_of(data.get(k)))
        if not detail and errors:
            first = errors[0]
            detail = " ".join(text_of(first.get(key)) for key in _ERROR_KEYS
                              if text_of(first.get(key)))
        detail = detail[:200]
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
        headers = request.headers
        if request.signer is not None:  # signed now: a fresh iat and a unique id per send
            headers = {**headers, **request.signer.headers(now=time.time(),
                                                           nonce=uuid.uuid4().hex)}
        try:
            async with self._session.request(
                    request.method, request.url, headers=headers, json=request.json,
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
        hangup = handle.player.hangup_frames() \
            if isinstance(command, HangUp) and handle.player is not None else None
        if hangup is not None:
            log.info("%s call %s: hanging up on the socket", handle.provider, call_id)
            await handle.send(hangup)
        elif isinstance(command, HangUp | Transfer):
            request = plan_rest(command, provider=handle.provider, call_id=call_id,
                                start=start, apis=self.apis)
            log.info("%s call %s: %s", handle.provider, call_id, request)
            await self.rest.send(request, gone_is_done=isinstance(command, HangUp))
        elif isinstance(command, EndStream):
            await handle.end_stream()
        elif handle.player is None:
            raise ControlUnsupported(f"{handle.provider} streams take no audio back")
        elif isinstance(command, StopPlayback):
            await handle.send(handle.player.stop_frames())
        else:
            await handle.send(handle.player.play_frames(command, start))

    async def close(self) -> None:
        await self.rest.close()


__all__ = ["CallControl", "Command", "EndStream", "HangUp", "PlayPrompt", "ProviderApis",
           "RestClient", "RestRequest", "StopPlayback", "Transfer", "check_response",
           "plan_rest"]
