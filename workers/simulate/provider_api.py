"""A local stand-in for the providers' call-control REST APIs, recording every hang-up and
transfer it receives so tests (and the demo) can see what callscribe asked for.

Routes (the paths :func:`workers.ingest.control.plan_rest` renders)::

    jambonz  PUT    /v1/Accounts/{account}/Calls/{call}        call_status | call_hook  → 204
    Plivo    DELETE /v1/Account/{auth_id}/Call/{call}/                                   → 204
             POST   /v1/Account/{auth_id}/Call/{call}/          legs=aleg, aleg_url      → 202
    Twilio   POST   /2010-04-01/Accounts/{account}/Calls/{call}.json  Status | Twiml     → 200
    Bland    POST   /v1/calls/{call}/stop                                               → 200
             POST   /v1/calls/active/transfer                   call_id, transfer_number → 200
    Telnyx   POST   /v2/calls/{call}/actions/hangup                                     → 200
             POST   /v2/calls/{call}/actions/transfer           to                       → 200
    Vonage   PUT    /v1/calls/{uuid}                            action (+ destination)   → 204

Calls listed in ``refuse`` are answered with the provider's error shape (Bland: 200 with
``"status": "error"``; Telnyx: 422 with error 90018, "call has already ended"; Vonage: 404,
an RFC 7807 problem; others 4xx), to exercise ``call.control_failed``.

Vonage requests must carry ``Authorization: Bearer <application JWT>``: RS256, claims
``application_id``, ``iat``, ``exp`` (in the future) and ``jti``, verified with
``vonage_public_key`` when given (else only decoded); 401 otherwise, as Vonage answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jwt
from aiohttp import web


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0: any free port); its runner and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp: _server is None until start()
    return runner, f"http://{host}:{bound}"


@dataclass(frozen=True, slots=True)
class ProviderAction:
    """One call-control request received."""

    provider: str
    action: str  # "hangup" | "transfer"
    call_id: str
    method: str
    path: str
    body: dict[str, Any]
    authorization: str | None


class ProviderApiSimulator:
    """Records call-control REST requests; :meth:`add_routes` mounts it on an aiohttp app."""

    def __init__(self, *, refuse: Collection[str] = (),
                 vonage_public_key: str | None = None) -> None:
        self.refuse = set(refuse)
        self.vonage_public_key = vonage_public_key
        self.actions: list[ProviderAction] = []
        self._changed = asyncio.Condition()
        self._ended: dict[str, asyncio.Event] = {}
        self.on_action: list[Callable[[ProviderAction], None]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def ended(self, call_id: str) -> asyncio.Event:
        """Set once a hang-up for ``call_id`` is accepted (the call is over: simulators stop
        streaming). A transfer does not set it: the stream goes on, now with the user."""
        return self._ended.setdefault(call_id, asyncio.Event())

    async def wait_for(self, count: int = 1, *, call_id: str | None = None,
                       wait_s: float = 10.0) -> list[ProviderAction]:
        """The actions (for ``call_id``) once there are at least ``count``."""
        def mine() -> list[ProviderAction]:
            return [a for a in self.actions if call_id is None or a.call_id == call_id]
        async with asyncio.timeout(wait_s), self._changed:
            await self._changed.wait_for(lambda: len(mine()) >= count)
        return mine()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_put("/v1/Accounts/{account}/Calls/{call}", self._jambonz)
        app.router.add_delete("/v1/Account/{account}/Call/{call}/", self._plivo)
        app.router.add_post("/v1/Account/{account}/Call/{call}/", self._plivo)
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", self._twilio)
        app.router.add_post("/v1/calls/active/transfer", self._bland_transfer)
        app.router.add_post("/v1/calls/{call}/stop", self._bland_stop)
        app.router.add_post("/v2/calls/{call}/actions/{action}", self._telnyx)
        app.router.add_put("/v1/calls/{call}", self._vonage)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        self.add_routes(app)
        self._runner, self.base_url = await serve(app, host, port)
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request, provider: str, action: str, call_id: str,
                      body: dict[str, Any]) -> bool:
        """Record; whether the request is accepted (not in ``refuse``)."""
        recorded = ProviderAction(provider, action, call_id, request.method, request.path,
                                  body, request.headers.get("Authorization"))
        accepted = call_id not in self.refuse
        async with self._changed:
            self.actions.append(recorded)
            self._changed.notify_all()
        if accepted and action == "hangup":
            self.ended(call_id).set()
        if accepted:
            for callback in self.on_action:
                callback(recorded)
        return accepted

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.text()
        if request.content_type == "application/x-www-form-urlencoded":
            return dict(parse_qsl(raw, keep_blank_values=True))
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            return {"raw": raw}
        return data if isinstance(data, dict) else {"raw": data}

    async def _jambonz(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        action = "hangup" if body.get("call_status") == "completed" else "transfer"
        if await self._record(request, "jambonz", action, request.match_info["call"], body):
            return web.Response(status=204)
        return web.json_response({"msg": "call not found"}, status=404 if action ==
                                 "transfer" else 422)

    async def _plivo(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        action = "hangup" if request.method == "DELETE" else "transfer"
        if await self._record(request, "plivo", action, request.match_info["call"], body):
            if action == "hangup":
                return web.Response(status=204)
            return web.json_response({"api_id": "sim", "message": "call transferred"},
                                     status=202)
        return web.json_response({"api_id": "sim", "error": "call not in progress"},
                                 status=400)

    async def _twilio(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        action = "hangup" if body.get("Status") == "completed" else "transfer"
        call = request.match_info["call"]
        if await self._record(request, "twilio", action, call, body):
            return web.json_response({"sid": call, "status": "completed" if action == "hangup"
                                      else "in-progress"})
        return web.json_response({"code": 21220, "message": "Call is not in-progress.",
                                  "status": 400}, status=400)

    async def _bland_stop(self, request: web.Request) -> web.Response:
        call = request.match_info["call"]
        if await self._record(request, "bland", "hangup", call, await self._body(request)):
            return web.json_response({"status": "success", "message": "Call ended successfully."})
        return web.json_response({"status": "error",
                                  "message": "SID not found for the given c_id."})

    async def _bland_transfer(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        call = str(body.get("call_id", ""))
        if await self._record(request, "bland", "transfer", call, body):
            return web.json_response({"data": {"message": f"Call {call} transferred to "
                                               f"{body.get('transfer_number')} successfully"},
                                      "errors": None})
        return web.json_response({"data": None, "errors": [
            {"error": "NOT_FOUND", "message": "Call not found"}]}, status=404)

    async def _telnyx(self, request: web.Request) -> web.Response:
        action, call = request.match_info["action"], request.match_info["call"]
        if action not in ("hangup", "transfer"):
            return web.json_response({"errors": [{"code": "10005", "title": "Resource not "
                                                  "found"}]}, status=404)
        if await self._record(request, "telnyx", action, call, await self._body(request)):
            return web.json_response({"data": {"result": "ok"}})
        return web.json_response({"errors": [{"code": "90018", "title": "Call has already "
                                              "ended", "detail": "This call is no longer "
                                              "active and can't receive commands."}]},
                                 status=422)

    def _vonage_jwt_error(self, authorization: str | None) -> str | None:
        """Why the Bearer application JWT is not acceptable (None: it is)."""
        if not authorization or not authorization.startswith("Bearer "):
            return "no Bearer JWT"
        token = authorization[7:]
        try:
            if jwt.get_unverified_header(token).get("alg") != "RS256":
                return "the JWT is not RS256"
            claims = jwt.decode(
                token, self.vonage_public_key or "", algorithms=["RS256"],
                options={"verify_signature": self.vonage_public_key is not None,
                         "require": ["application_id", "iat", "exp", "jti"]})
        except jwt.PyJWTError as exc:
            return f"invalid JWT: {exc}"
        return None if claims.get("application_id") else "no application_id"

    async def _vonage(self, request: web.Request) -> web.Response:
        call = request.match_info["call"]
        problem = self._vonage_jwt_error(request.headers.get("Authorization"))
        if problem is not None:
            return web.json_response(
                {"type": "https://developer.nexmo.com/api-errors#unauthorized",
                 "title": "Unauthorized", "detail": problem}, status=401,
                content_type="application/problem+json")
        body = await self._body(request)
        action = body.get("action")
        if action not in ("hangup", "transfer"):
            return web.json_response(
                {"type": "https://developer.nexmo.com/api-errors#bad-request",
                 "title": "Bad Request", "detail": f"action {action!r} is not simulated"},
                status=400, content_type="application/problem+json")
        if await self._record(request, "vonage", str(action), call, body):
            return web.Response(status=204)
        return web.json_response(
            {"type": "https://developer.nexmo.com/api-errors#not-found", "title": "Not Found",
             "detail": f"call {call} was not found"}, status=404,
            content_type="application/problem+json")


__all__ = ["ProviderAction", "ProviderApiSimulator", "serve"]
