"""The ingest server's safe defaults, against real sockets: anonymous provider connections
refused at the handshake unless allowed (401 on /jambonz and /telnyx, 403 on /plivo and
/twilio), the handshake timeout, and the cap on connections per client address (429)."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.conftest import seconds
from workers.broker import EmbeddedBroker
from workers.ingest.server import IngestServer
from workers.ingest.worker import IngestWorker
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.records import Topics
from workers.settings import IngestSettings

JAMBONZ = [Subprotocol("audio.jambonz.org")]


@pytest.fixture(scope="module")
async def aux(broker: EmbeddedBroker) -> AsyncIterator[tuple[AIOKafkaProducer, Topics]]:
    topics = Topics(f"tsec{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, topics.all(), partitions=2)
    producer = new_producer(broker.bootstrap, client_id="test-ingest-sec")
    await start_producer(producer)
    try:
        yield producer, topics
    finally:
        await producer.stop()


async def started(aux: tuple[AIOKafkaProducer, Topics], **kwargs: Any) -> IngestServer:
    producer, topics = aux
    server = IngestServer(producer=producer, topics=topics, host="127.0.0.1", port=0, **kwargs)
    await server.start()
    return server


async def refused_status(url: str, **kwargs: Any) -> tuple[int, Headers]:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=seconds(5), **kwargs):
            pass
    response = refused.value.response
    return response.status_code, response.headers


@pytest.mark.parametrize(("path", "status"), [("/jambonz", 401), ("/plivo", 403),
                                              ("/twilio", 403), ("/telnyx", 401)])
async def test_anonymous_provider_connections_are_refused_at_the_handshake(
        aux: tuple[AIOKafkaProducer, Topics], path: str, status: int) -> None:
    server = await started(aux, allow_anonymous=False)
    try:
        code, headers = await refused_status(f"ws://127.0.0.1:{server.port}{path}")
        assert code == status
        if path == "/jambonz":
            assert headers["WWW-Authenticate"] == 'Basic realm="callscribe"'
    finally:
        await server.drain(0)


async def test_configured_credentials_still_let_the_provider_in(
        aux: tuple[AIOKafkaProducer, Topics]) -> None:
    server = await started(aux, allow_anonymous=False, jambonz_auth=("jb", "pw"))
    try:
        assert server.anonymous_paths() == ["/plivo", "/telnyx", "/twilio"]
        basic = base64.b64encode(b"jb:pw").decode()
        async with connect(f"ws://127.0.0.1:{server.port}/jambonz", subprotocols=JAMBONZ,
                           additional_headers={"Authorization": f"Basic {basic}"}):
            pass
        code, _ = await refused_status(f"ws://127.0.0.1:{server.port}/jambonz")
        assert code == 401  # wrong (no) credentials: the usual refusal
    finally:
        await server.drain(0)


async def test_allow_anonymous_accepts_them(aux: tuple[AIOKafkaProducer, Topics]) -> None:
    server = await started(aux, allow_anonymous=True)
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/jambonz", subprotocols=JAMBONZ):
            pass
    finally:
        await server.drain(0)


async def test_the_standalone_worker_refuses_anonymous_by_default(
        aux: tuple[AIOKafkaProducer, Topics], monkeypatch: pytest.MonkeyPatch) -> None:
    """`callscribe ingest` with nothing configured: CALLSCRIBE_INGEST_ALLOW_ANONYMOUS is false."""
    for name in ("INGEST_ALLOW_ANONYMOUS", "JAMBONZ_USERNAME", "JAMBONZ_PASSWORD",
                 "PLIVO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(f"CALLSCRIBE_{name}", raising=False)
    monkeypatch.setenv("CALLSCRIBE_INGEST_PORT", "0")
    monkeypatch.setenv("CALLSCRIBE_INGEST_HOST", "127.0.0.1")
    settings = IngestSettings()
    assert settings.ingest_allow_anonymous is False
    worker = IngestWorker(settings, aux[0])
    await worker.server.start()  # the provider server alone (no control consumer needed)
    try:
        code, _ = await refused_status(f"ws://127.0.0.1:{worker.server.port}/jambonz")
        assert code == 401
    finally:
        await worker.server.drain(0)


def test_the_local_stack_allows_anonymous_and_says_so() -> None:
    from workers.local_stack import LocalStack

    assert LocalStack({}).env["CALLSCRIBE_INGEST_ALLOW_ANONYMOUS"] == "true"
    assert LocalStack({"CALLSCRIBE_INGEST_ALLOW_ANONYMOUS": "false"}).env[
        "CALLSCRIBE_INGEST_ALLOW_ANONYMOUS"] == "false"


@pytest.mark.parametrize("sent", [b"", b"GET /jambonz HTTP/1.1\r\nHost: x\r\n"])
async def test_a_handshake_that_never_finishes_is_dropped(
        aux: tuple[AIOKafkaProducer, Topics], sent: bytes) -> None:
    server = await started(aux, open_timeout_s=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(sent)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with asyncio.timeout(seconds(5)):
            rest = await reader.read()  # EOF once the server gives up
        assert loop.time() - began >= 0.4
        assert b"101" not in rest
        writer.close()
    finally:
        await server.drain(0)


async def test_connections_per_client_address_are_capped_with_429(
        aux: tuple[AIOKafkaProducer, Topics]) -> None:
    server = await started(aux, max_connections_per_address=2)
    url = f"ws://127.0.0.1:{server.port}/jambonz"
    try:
        first = await connect(url, subprotocols=JAMBONZ)
        second = await connect(url, subprotocols=JAMBONZ)
        code, headers = await refused_status(url, subprotocols=JAMBONZ)
        assert code == 429 and headers["Retry-After"] == "5"
        await first.close()
        await first.wait_closed()
        third = await connect(url, subprotocols=JAMBONZ)  # room again
        await second.close()
        await third.close()
    finally:
        await server.drain(0)
