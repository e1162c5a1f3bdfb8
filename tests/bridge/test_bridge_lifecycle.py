"""A bridge of its own on the session broker (the shared stack's must outlive this module):
ping/pong keepalive, and the drain that SIGTERM runs (not ready, new handshakes refused with
503 and Retry-After, connected clients told to reconnect elsewhere with 1001)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import RunningStack, seconds
from workers.bridge.client import live_calls_url, open_live_call, request_listen_url
from workers.bridge.hub import CallHub
from workers.bridge.server import Bridge
from workers.bridge.tokens import TokenIssuer
from workers.simulate.provider_api import serve

HEARTBEAT_S = 0.4


@dataclass
class OwnBridge:
    bridge: Bridge
    runner: web.AppRunner
    http: str
    ws: str
    api_key: str
    issuer: TokenIssuer
    call_id: str


@pytest.fixture
async def own(stack: RunningStack) -> AsyncIterator[OwnBridge]:
    api_key, issuer = "own-" + secrets.token_hex(8), TokenIssuer(secrets.token_urlsafe(32), 60)
    bridge = Bridge(bootstrap=stack.bootstrap, topics=stack.topics, api_keys=frozenset({api_key}),
                    issuer=issuer, hub=CallHub(), heartbeat_s=HEARTBEAT_S, close_timeout_s=1.0)
    runner, http = await serve(bridge.web_app(), "127.0.0.1", 0)
    call_id = f"own-{secrets.token_hex(4)}"
    bridge.hub.on_call_record({"type": "call.started", "callId": call_id})
    try:
        yield OwnBridge(bridge, runner, http, http.replace("http://", "ws://", 1),
                        api_key, issuer, call_id)
    finally:
        await runner.cleanup()


async def test_the_server_pings_and_drops_a_client_that_never_pongs(own: OwnBridge) -> None:
    token, _ = own.issuer.mint(own.call_id)
    url = live_calls_url(own.ws, token)
    headers = {"Authorization": f"Bearer {own.api_key}"}
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(url, headers=headers, autoping=False) as mute:
        polite = await connect(url, additional_headers=headers)  # answers pings itself
        async with asyncio.timeout(seconds(5)):
            first = await mute.receive()
            assert first.type is WSMsgType.PING  # keepalive, every HEARTBEAT_S
            while (message := await mute.receive()).type is WSMsgType.PING:
                pass  # never answered
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                WSMsgType.ERROR)
        # The one that answers stays connected through several heartbeats.
        await asyncio.sleep(4 * HEARTBEAT_S)
        await polite.send(json.dumps({"type": "client:joinCall", "id": "still-here"}))
        async with asyncio.timeout(seconds(5)):
            assert json.loads(await polite.recv()) == {"type": "ack", "ackId": "still-here"}
        await polite.close()


async def test_draining_refuses_new_clients_503_and_moves_connected_ones_1001(
        own: OwnBridge) -> None:
    token, _ = own.issuer.mint(own.call_id)
    connected = await open_live_call(own.ws, token, own.api_key)
    status, _ = await request_listen_url(own.http, own.call_id, own.api_key)
    assert status == 200

    await own.runner.shutdown()  # what SIGTERM runs, with the listener still open
    async with asyncio.timeout(seconds(5)):
        async for _ in connected:
            pass
    assert connected.close_code == 1001
    with pytest.raises(InvalidStatus) as refused:
        await open_live_call(own.ws, token, own.api_key)
    response = refused.value.response
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert json.loads(response.body)["error"] == "unavailable"
    status, body = await request_listen_url(own.http, own.call_id, own.api_key)
    assert status == 503 and body["errors"][0]["error"] == "SERVICE_UNAVAILABLE"
    async with aiohttp.ClientSession() as http, http.get(own.http + "/readyz") as ready:
        assert ready.status == 503
