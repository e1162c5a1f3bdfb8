"""Shared fixtures: one real embedded broker per test session, the in-process ingest and bridge,
and the transcription worker as a real child process (``callscribe transcribe``).

``CALLSCRIBE_TEST_TIME_SCALE`` multiplies every timeout for slow machines.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from workers.bridge.hub import CallHub
from workers.bridge.server import Bridge
from workers.bridge.tokens import TokenIssuer
from workers.broker import EmbeddedBroker, free_port
from workers.ingest.server import IngestServer
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.local_stack import wait_ready
from workers.records import Topics

TIME_SCALE = float(os.environ.get("CALLSCRIBE_TEST_TIME_SCALE", "1"))
FIXTURES = Path(__file__).parent / "fixtures"
ARTIFACTS = Path(__file__).parent.parent / "artifacts"


def seconds(value: float) -> float:
    """A test timeout, scaled for slow machines."""
    return value * TIME_SCALE


def transcriber_env(bootstrap: str, topics: Topics, web_port: int, *,
                    partitions: int) -> dict[str, str]:
    """The environment of a ``callscribe transcribe`` child on ``topics``, its probes on
    ``web_port``, in a consumer group of its own."""
    return {**os.environ, "CALLSCRIBE_KAFKA_BOOTSTRAP": bootstrap,
            "CALLSCRIBE_TOPIC_PREFIX": topics.prefix,
            "CALLSCRIBE_TRANSCRIBE_WEB_PORT": str(web_port),
            "CALLSCRIBE_TRANSCRIBE_GROUP_ID": f"{topics.prefix}-transcribe",
            "CALLSCRIBE_LOG_FORMAT": "text",
            "CALLSCRIBE_TOPIC_PARTITIONS": str(partitions), "CALLSCRIBE_CPU_THREADS": "2"}


def spawn_worker(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``callscribe NAME`` as a child process logging to ``artifacts/NAME.log``."""
    with open(ARTIFACTS / f"{name}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "workers.cli", name], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    ARTIFACTS.mkdir(exist_ok=True)
    with EmbeddedBroker(log_path=ARTIFACTS / "broker.log") as embedded:
        yield embedded


@dataclass
class RunningStack:
    bootstrap: str
    topics: Topics
    ingest_url: str
    bridge_url: str
    bridge_http: str
    api_key: str
    issuer: TokenIssuer
    ingest: IngestServer
    bridge: Bridge
    transcriber: subprocess.Popen[bytes]
    assist: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
async def stack(broker: EmbeddedBroker) -> AsyncIterator[RunningStack]:
    """ingest + bridge in this process, the transcriber as a child process, on free ports."""
    topics = Topics(f"t{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, topics.all(), partitions=4)
    api_key, secret = "test-key-" + secrets.token_hex(8), secrets.token_urlsafe(32)

    producer = new_producer(broker.bootstrap, client_id="test-ingest")
    await start_producer(producer)
    ingest = IngestServer(producer=producer, topics=topics, host="127.0.0.1", port=0)
    await ingest.start()

    issuer = TokenIssuer(secret, 600)
    await ensure_topics(broker.bootstrap, (topics.transcripts_redacted, topics.assist,
                                           topics.summaries), partitions=4)
    bridge = Bridge(bootstrap=broker.bootstrap, topics=topics, api_keys=frozenset({api_key}),
                    issuer=issuer, hub=CallHub(), client_queue_max=64)
    runner = web.AppRunner(bridge.web_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    bridge_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp: _server is None until start()

    web_port = free_port()
    env = transcriber_env(broker.bootstrap, topics, web_port, partitions=4)
    transcriber = spawn_worker("transcribe", env)
    assist_port = free_port()
    assist = spawn_worker("assist", {
        **env, "CALLSCRIBE_ASSIST_WEB_PORT": str(assist_port),
        "CALLSCRIBE_ASSIST_GROUP_ID": f"{topics.prefix}-assist", "CALLSCRIBE_SUMMARY_GRACE_S": "2"})
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{web_port}/readyz",
                                seconds(90), transcriber)
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{assist_port}/readyz",
                                seconds(90), assist)
        yield RunningStack(
            bootstrap=broker.bootstrap, topics=topics,
            ingest_url=f"ws://127.0.0.1:{ingest.port}/jambonz",
            bridge_url=f"ws://127.0.0.1:{bridge_port}",
            bridge_http=f"http://127.0.0.1:{bridge_port}", api_key=api_key, issuer=issuer,
            ingest=ingest, bridge=bridge, transcriber=transcriber, assist=assist)
    finally:
        for worker in (transcriber, assist):
            worker.terminate()
        for worker in (transcriber, assist):
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        await runner.cleanup()
        await ingest.drain(1)
        await producer.stop()
