"""The bridge's plain HTTP routes: ``POST /v1/tokens`` (mint a conversation token),
``GET /v1/calls`` (live calls), both behind a Bearer API key; ``GET /`` (the live web view, with
a strict Content-Security-Policy); the probes ``/healthz`` and ``/readyz``, and ``/metrics``."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Callable
from importlib import resources

from aiohttp import web

from workers import metrics
from workers.bridge.hub import CallHub
from workers.bridge.tokens import TokenIssuer

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@functools.cache
def _inline_hashes(page: str) -> tuple[str, str]:
    """CSP source lists allowing exactly the page's own inline scripts and styles."""
    found: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        found[kind].append(f"'sha256-{digest}'")
    return " ".join(found["script"]) or "'none'", " ".join(found["style"]) or "'none'"


def page_security_headers(page: str, host: str) -> dict[str, str]:
    """A strict Content-Security-Policy for the web view: nothing but its own inline script
    and style (by hash: no other inline code, no eval, no third-party origin), connections to
    this bridge only, no framing; and no MIME sniffing or referrers."""
    scripts, styles = _inline_hashes(page)
    policy = "; ".join((
        "default-src 'none'", f"script-src {scripts}", f"style-src {styles}",
        f"connect-src 'self' ws://{host} wss://{host}", "img-src 'self' data:",
        "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"))
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


class RestRoutes:
    """Tokens, the live-call list, the web view, probes and metrics."""

    def __init__(self, *, hub: CallHub, issuer: TokenIssuer, api_keys: frozenset[str],
                 ready: Callable[[], bool]) -> None:
        self._hub = hub
        self._issuer = issuer
        self._api_keys = api_keys
        self._ready = ready

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/tokens", self.mint_token)
        app.router.add_get("/v1/calls", self.list_calls)

    def add_pages(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/", self.index)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        given = key.strip().encode()
        return any(hmac.compare_digest(given, k.encode()) for k in self._api_keys)

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response(
            {"error": "unauthorized", "description": "Send 'Authorization: Bearer <api key>'."},
            status=401, headers={"WWW-Authenticate": 'Bearer realm="callscribe"'})

    async def mint_token(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            metrics.BRIDGE_AUTH_FAILURES.labels("tokens").inc()
            return self._unauthorized()
        try:
            body = await request.json()
        except ValueError:
            body = None
        call_id = body.get("call_id") if isinstance(body, dict) else None
        if not isinstance(call_id, str) or not call_id:
            return web.json_response(
                {"error": "invalid_request",
                 "description": 'Send a JSON body {"call_id": "<call id>"}.'}, status=400)
        token, expires_at = self._issuer.mint(call_id)
        return web.json_response({"token": token, "expires_at": expires_at})

    async def list_calls(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            metrics.BRIDGE_AUTH_FAILURES.labels("calls").inc()
            return self._unauthorized()
        return web.json_response({"calls": self._hub.live_calls()})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(text="not ready\n", status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def index(self, request: web.Request) -> web.Response:
        page = resources.files("workers.bridge").joinpath("web/index.html").read_text()
        return web.Response(text=page, content_type="text/html",
                            headers=page_security_headers(page, request.host))


__all__ = ["RestRoutes", "page_security_headers"]
