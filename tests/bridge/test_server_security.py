"""The bridge's safe defaults, against a real bridge on a loopback port: the web view's strict
Content-Security-Policy, the cap on sockets per client address (429 before the upgrade), and
the token secret's length checked when the settings load. (Tokens other than HS256 with our
secret, ``alg: none`` included, are refused in tests/bridge/test_tokens.py; the page working
under its CSP in a real browser is tests/ops/test_webview.py.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import seconds
from workers.bridge.client import live_calls_url
from workers.bridge.hub import CallHub
from workers.bridge.server import Bridge
from workers.bridge.tokens import TokenIssuer
from workers.broker import EmbeddedBroker
from workers.kafka import ensure_topics
from workers.records import Topics
from workers.settings import BridgeSettings


@pytest.fixture(scope="module")
async def capped(broker: EmbeddedBroker) -> AsyncIterator[tuple[str, str, TokenIssuer, str]]:
    """A bridge allowing 2 sockets per address, with a live call ``cap-call``: (http base, ws
    base, issuer, api key)."""
    topics = Topics(f"tbs{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, (*topics.all(), topics.transcripts_redacted),
                        partitions=2)
    api_key, issuer = "sec-" + secrets.token_hex(8), TokenIssuer(secrets.token_urlsafe(32), 60)
    bridge = Bridge(bootstrap=broker.bootstrap, topics=topics, api_keys=frozenset({api_key}),
                    issuer=issuer, hub=CallHub(), max_connections_per_address=2,
                    close_timeout_s=1.0)
    runner = web.AppRunner(bridge.web_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp: _server is None until start()
    bridge.hub.on_call_record({"type": "call.started", "callId": "cap-call"})
    try:
        yield f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", issuer, api_key
    finally:
        await runner.cleanup()


async def test_the_web_view_sets_a_strict_content_security_policy(
        capped: tuple[str, str, TokenIssuer, str]) -> None:
    http, _, _, _ = capped
    async with aiohttp.ClientSession() as session, session.get(f"{http}/") as response:
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "*" not in policy
    assert directives["connect-src"] == f"'self' ws://{http[7:]} wss://{http[7:]}"
    # The page's own inline script and style, by hash: nothing else may run.
    for kind in ("script", "style"):
        bodies = re.findall(rf"<{kind}>(.*?)</{kind}>", page, re.DOTALL)
        assert bodies, kind
        hashes = {"'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()
                  + "'" for b in bodies}
        assert set(directives[f"{kind}-src"].split()) == hashes


async def test_sockets_per_client_address_are_capped_with_429(
        capped: tuple[str, str, TokenIssuer, str]) -> None:
    _, ws, issuer, api_key = capped
    headers = {"Authorization": f"Bearer {api_key}"}
    url = live_calls_url(ws, issuer.mint("cap-call")[0])
    first = await connect(url, additional_headers=headers, open_timeout=seconds(5))
    second = await connect(url, additional_headers=headers, open_timeout=seconds(5))
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers=headers, open_timeout=seconds(5))
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"] == "5"
    await first.close()
    await first.wait_closed()
    for _ in range(50):  # the bridge forgets the socket once its handler returns
        try:
            third = await connect(url, additional_headers=headers, open_timeout=seconds(5))
            break
        except InvalidStatus:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("a socket was closed but the address stayed at its cap")
    await third.close()
    await second.close()


def test_a_short_token_secret_stops_the_bridge_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSCRIBE_TOKEN_SECRET", "too-short-but-secret")
    with pytest.raises(ValueError, match="is 20 bytes; expected at least 32") as refused:
        BridgeSettings()
    assert "too-short-but-secret" not in str(refused.value)  # never echo a secret
    monkeypatch.setenv("CALLSCRIBE_TOKEN_SECRET", "x" * 32)
    assert BridgeSettings().token_secret == "x" * 32
