"""Health through the drain sequence, on servers of their own (not the shared stack):
``/healthz`` answers 200 for as long as the worker is alive; ``/readyz`` answers 503 from the
moment it starts draining; live work is finished (or closed 1001 at the deadline), new work
refused."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.conftest import seconds
from workers.bridge.client import open_live_call
from workers.bridge.hub import CallHub
from workers.bridge.server import Bridge
from workers.bridge.tokens import TokenIssuer
from workers.broker import EmbeddedBroker
from workers.ingest.server import IngestServer
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.records import CallStarted, Topics

SILENCE_20MS = bytes(2 * 8000 * 20 // 1000)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=seconds(5)) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def get(url: str) -> int:
    return await asyncio.to_thread(status_of, url)


async def fresh_topics(broker: EmbeddedBroker) -> Topics:
    topics = Topics(f"h{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, (*topics.all(), topics.transcripts_redacted,
                                           topics.subscriptions), partitions=2)
    return topics


# ------------------------------------------------------------------ ingest


@dataclass
class Ingest:
    server: IngestServer
    topics: Topics
    http: str
    ws: str


@pytest.fixture
async def ingest(broker: EmbeddedBroker) -> AsyncIterator[Ingest]:
    topics = await fresh_topics(broker)
    producer = new_producer(broker.bootstrap, client_id="test-health-ingest")
    await start_producer(producer)
    server = IngestServer(producer=producer, topics=topics, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield Ingest(server, topics, f"http://127.0.0.1:{server.port}",
                     f"ws://127.0.0.1:{server.port}/jambonz")
    finally:
        if server.ready:
            await server.drain(1)
        await producer.stop()


async def start_call(url: str, call_sid: str) -> ClientConnection:
    """A jambonz call that stays open: the metadata frame and a little audio."""
    ws = await connect(url, subprotocols=[Subprotocol("audio.jambonz.org")])
    await ws.send(json.dumps({"sampleRate": 8000, "mixType": "mono", "callSid": call_sid,
                              "from": "+15550100", "to": "+15550199", "direction": "inbound",
                              "callId": str(uuid.uuid4())}))
    for _ in range(10):
        await ws.send(SILENCE_20MS)
    return ws


async def call_events(bootstrap: str, topic: str, call_id: str) -> list[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    kinds: list[str] = []
    try:
        async with asyncio.timeout(seconds(10)):
            while "call.ended" not in kinds:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    kinds += [json.loads(m.value)["type"] for m in batch
                              if m.key == call_id.encode()]
    finally:
        await consumer.stop()
    return kinds


async def test_ingest_is_alive_but_not_ready_while_it_drains(ingest: Ingest) -> None:
    assert await get(f"{ingest.http}/healthz") == 200
    assert await get(f"{ingest.http}/readyz") == 200
    call = await start_call(ingest.ws, "drain-deadline")

    drain = asyncio.create_task(ingest.server.drain(seconds(2)))
    await asyncio.sleep(0)
    assert await get(f"{ingest.http}/readyz") == 503
    assert await get(f"{ingest.http}/healthz") == 200
    with pytest.raises(InvalidStatus) as refused:  # new calls go to another replica
        await start_call(ingest.ws, "drain-refused")
    assert refused.value.response.status_code == 503
    for _ in range(10):  # the live call goes on until the deadline
        await call.send(SILENCE_20MS)
    assert not drain.done()

    await asyncio.wait_for(call.wait_closed(), seconds(10))
    assert call.close_code == 1001
    await asyncio.wait_for(drain, seconds(15))
    # Its audio was flushed and the call ended on Kafka.
    kinds = await call_events(ingest.server._producer.client._bootstrap_servers,
                              ingest.topics.calls, "drain-deadline")
    assert kinds == ["call.started", "call.ended"]


async def test_ingest_drain_ends_as_soon_as_live_calls_end(ingest: Ingest) -> None:
    call = await start_call(ingest.ws, "drain-early")
    started = time.monotonic()
    drain = asyncio.create_task(ingest.server.drain(seconds(30)))
    await asyncio.sleep(seconds(0.3))
    assert await get(f"{ingest.http}/readyz") == 503
    assert await get(f"{ingest.http}/healthz") == 200
    await call.close(1000)
    await asyncio.wait_for(drain, seconds(10))
    assert time.monotonic() - started < seconds(10)


# ------------------------------------------------------------------ bridge


@dataclass
class BridgeUnderTest:
    bridge: Bridge
    runner: web.AppRunner
    http: str
    ws: str
    api_key: str
    issuer: TokenIssuer


@pytest.fixture
async def bridge(broker: EmbeddedBroker) -> AsyncIterator[BridgeUnderTest]:
    topics = await fresh_topics(broker)
    api_key = "health-" + secrets.token_hex(8)
    issuer = TokenIssuer(secrets.token_urlsafe(32), 600)
    server = Bridge(bootstrap=broker.bootstrap, topics=topics, api_keys=frozenset({api_key}),
                    issuer=issuer, hub=CallHub())
    runner = web.AppRunner(server.web_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp: _server is None until start()
    try:
        yield BridgeUnderTest(server, runner, f"http://127.0.0.1:{port}",
                              f"ws://127.0.0.1:{port}", api_key, issuer)
    finally:
        await runner.cleanup()


def live_call(bridge: Bridge, call_id: str) -> None:
    """Make ``call_id`` a live call of the bridge, as its calls-topic consumer would."""
    bridge.hub.on_call_record(CallStarted(
        call_id=call_id, provider="jambonz", from_="+15550100", to="+15550199",
        direction="inbound", rate=8000, channels=1, mix="mono", roles=("other",)).to_json())


async def drain_bridge(b: BridgeUnderTest) -> None:
    """What SIGTERM runs (aiohttp's shutdown: the bridge's on_shutdown), with the listener
    still open so that the probes can be observed."""
    await b.runner.shutdown()


async def test_bridge_is_alive_but_not_ready_while_it_drains(bridge: BridgeUnderTest) -> None:
    assert await get(f"{bridge.http}/healthz") == 200
    assert await get(f"{bridge.http}/readyz") == 200
    live_call(bridge.bridge, "bridge-drain")
    token, _ = bridge.issuer.mint("bridge-drain")
    client = await open_live_call(bridge.ws, token, bridge.api_key)

    await drain_bridge(bridge)
    assert await get(f"{bridge.http}/readyz") == 503
    assert await get(f"{bridge.http}/healthz") == 200
    # A connected liveCalls client is told to reconnect elsewhere (1001 ends iteration).
    async with asyncio.timeout(seconds(5)):
        async for _ in client:
            pass
    assert client.close_code == 1001


async def test_bridge_refuses_new_live_calls_while_it_drains(bridge: BridgeUnderTest) -> None:
    live_call(bridge.bridge, "bridge-drain-new")
    token, _ = bridge.issuer.mint("bridge-drain-new")
    await drain_bridge(bridge)
    with pytest.raises(InvalidStatus) as refused:
        client = await open_live_call(bridge.ws, token, bridge.api_key)
        await client.close()
    assert refused.value.response.status_code == 503
