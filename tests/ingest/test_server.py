"""The ingest server on real loopback sockets with the real embedded broker: jambonz input that
is wrong in every way we know, auth, probes and metrics, calls that end badly, and drain."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.conftest import FIXTURES, RunningStack, seconds
from tests.kafka_util import read_records
from tests.schema_util import validate
from workers.broker import EmbeddedBroker
from workers.ingest.server import IngestServer
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.records import AudioChunk, Topics
from workers.simulate.jambonz import prepare_audio, read_wav, simulate_jambonz

JAMBONZ = [Subprotocol("audio.jambonz.org")]
SPEECH = FIXTURES / "speech"


# --------------------------------------------------------------------------- helpers


def metadata(call_id: str, *, rate: Any = 8000, mix: str = "stereo") -> str:
    return json.dumps({"sampleRate": rate, "mixType": mix, "callSid": call_id,
                       "direction": "inbound", "from": "+15083084809", "to": "+15083728299"})


def rejected(reason: str, provider: str = "jambonz") -> float:
    value = REGISTRY.get_sample_value("callscribe_ingest_rejected_total",
                                      {"provider": provider, "reason": reason})
    return value or 0.0


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """The close code and reason the server sent, once the connection is closed."""
    async with asyncio.timeout(seconds(10)):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason


async def settle(ws: ClientConnection) -> None:
    """Return once the server has received everything sent so far (a ping's pong)."""
    pong = await ws.ping()
    await asyncio.wait_for(pong, seconds(5))


def last_chunks(channels: int) -> Callable[[list[Any]], bool]:
    def done(records: list[Any]) -> bool:
        return sum(1 for r in records if dict(r.headers).get("last") == b"1") >= channels
    return done


async def audio_of(bootstrap: str, topics: Topics, call_id: str,
                   channels: int) -> list[AudioChunk]:
    records = await read_records(bootstrap, topics.audio, call_id, until=last_chunks(channels))
    return [AudioChunk.from_kafka(r.key, r.value, r.headers) for r in records]


async def call_events(bootstrap: str, topics: Topics, call_id: str) -> list[dict[str, Any]]:
    """The calls-topic records of a call, up to and including ``call.ended``."""
    def ended(records: list[Any]) -> bool:
        return any(json.loads(r.value)["type"] == "call.ended" for r in records)
    records = await read_records(bootstrap, topics.calls, call_id, until=ended)
    events = [json.loads(r.value) for r in records]
    for event in events:
        validate("calls", event)
    return events


def assert_complete(chunks: list[AudioChunk], channels: int, samples: int) -> None:
    """Per channel: seq from 0 without gaps, every sample sent, one last chunk at the end."""
    assert {c.channel for c in chunks} == set(range(channels))
    for channel in range(channels):
        mine = [c for c in chunks if c.channel == channel]
        assert [c.seq for c in mine] == list(range(len(mine)))
        assert sum(c.samples for c in mine) == samples
        assert [c.last for c in mine] == [False] * (len(mine) - 1) + [True]


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").removesuffix("/jambonz")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def aux(broker: EmbeddedBroker) -> AsyncIterator[tuple[AIOKafkaProducer, Topics]]:
    """A producer and topics of its own, for ingest servers built by a test."""
    topics = Topics(f"ti{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, topics.all(), partitions=2)
    producer = new_producer(broker.bootstrap, client_id="test-ingest-aux")
    await start_producer(producer)
    try:
        yield producer, topics
    finally:
        await producer.stop()


async def started_server(aux: tuple[AIOKafkaProducer, Topics], **kwargs: Any) -> IngestServer:
    producer, topics = aux
    server = IngestServer(producer=producer, topics=topics, host="127.0.0.1", port=0, **kwargs)
    await server.start()
    return server


# --------------------------------------------------------------------------- bad input


async def test_binary_before_metadata_is_closed_1008(stack: RunningStack) -> None:
    before = rejected("ProtocolError")
    async with connect(stack.ingest_url, subprotocols=JAMBONZ) as ws:
        await ws.send(bytes(640))
        code, reason = await closed_with(ws)
    assert code == 1008
    assert reason and "metadata" in reason
    assert rejected("ProtocolError") == before + 1


async def test_a_client_offering_compression_gets_none(stack: RunningStack) -> None:
    # websockets offers permessage-deflate by default, as Node's ws does: audio frames would
    # be deflated by the provider and inflated by ingest, for nothing.
    async with connect(stack.ingest_url, subprotocols=JAMBONZ) as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers.get("Sec-WebSocket-Extensions", "")
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []


async def test_unsupported_sample_rate_is_closed_1003(stack: RunningStack) -> None:
    before = rejected("UnsupportedAudio")
    async with connect(stack.ingest_url, subprotocols=JAMBONZ) as ws:
        await ws.send(metadata("bad-rate", rate=11025))
        code, reason = await closed_with(ws)
    assert code == 1003
    assert reason and "11025" in reason
    assert rejected("UnsupportedAudio") == before + 1


async def test_non_json_metadata_is_closed_1007(stack: RunningStack) -> None:
    before = rejected("ProtocolError")
    async with connect(stack.ingest_url, subprotocols=JAMBONZ) as ws:
        await ws.send("hello, not json")
        code, reason = await closed_with(ws)
    assert code == 1007
    assert reason and "JSON" in reason
    assert rejected("ProtocolError") == before + 1


async def test_a_message_over_max_size_is_closed_1009(
        aux: tuple[AIOKafkaProducer, Topics], broker: EmbeddedBroker) -> None:
    server = await started_server(aux, max_frame_bytes=4096)
    before = rejected("message_too_big")
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/jambonz", subprotocols=JAMBONZ) as ws:
            await ws.send(metadata("too-big", mix="mono"))
            await ws.send(bytes(1600))
            await ws.send(bytes(8192))
            code, _ = await closed_with(ws)
        assert code == 1009
        # The audio taken before the bad frame is still published, and the call ended.
        events = await call_events(broker.bootstrap, aux[1], "too-big")
        # (counted before call.ended is published, so by now)
        assert rejected("message_too_big") == before + 1
        assert [e["type"] for e in events] == ["call.started", "call.ended"]
        assert events[-1]["reason"] == "protocol_error"
        chunks = await audio_of(broker.bootstrap, aux[1], "too-big", 1)
        assert_complete(chunks, 1, 800)
    finally:
        await server.drain(1)


async def test_unknown_path_is_404(stack: RunningStack) -> None:
    before = rejected("unknown_path", provider="unknown")
    with pytest.raises(InvalidStatus) as caught:
        await connect(stack.ingest_url.replace("/jambonz", "/nexmo"), subprotocols=JAMBONZ)
    assert caught.value.response.status_code == 404
    async with aiohttp.ClientSession() as http:
        async with http.get(http_base(stack.ingest_url) + "/nope") as response:
            assert response.status == 404
    assert rejected("unknown_path", provider="unknown") == before + 2


async def test_basic_auth(aux: tuple[AIOKafkaProducer, Topics]) -> None:
    server = await started_server(aux, jambonz_auth=("jambonz", "s3cret-pw"))
    url = f"ws://127.0.0.1:{server.port}/jambonz"
    before = rejected("auth")

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode())
                .decode()}
    try:
        for headers in ({}, basic("jambonz", "wrong"), basic("other", "s3cret-pw"),
                        {"Authorization": "Bearer s3cret-pw"},
                        {"Authorization": "Basic !!not-base64!!"}):
            with pytest.raises(InvalidStatus) as caught:
                await connect(url, subprotocols=JAMBONZ, additional_headers=headers)
            response = caught.value.response
            assert response.status_code == 401, headers
            assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert rejected("auth") == before + 5
        async with connect(url, subprotocols=JAMBONZ,
                           additional_headers=basic("jambonz", "s3cret-pw")) as ws:
            assert ws.subprotocol == "audio.jambonz.org"
            await ws.send(metadata("auth-ok", mix="mono"))
            await settle(ws)
        assert rejected("auth") == before + 5
    finally:
        await server.drain(1)


async def test_probes_and_metrics(stack: RunningStack) -> None:
    base = http_base(stack.ingest_url)
    async with aiohttp.ClientSession() as http:
        for path, body in (("/healthz", "ok"), ("/readyz", "ready")):
            async with http.get(base + path) as response:
                assert response.status == 200
                assert (await response.text()).strip() == body
        async with http.get(base + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    assert "callscribe_ingest_calls_total" in text
    assert "callscribe_ingest_rejected_total" in text


# --------------------------------------------------------------------------- calls that go wrong


async def bad_connection(url: str, first: str | bytes) -> int | None:
    async with connect(url, subprotocols=JAMBONZ) as ws:
        await ws.send(first)
        code, _ = await closed_with(ws)
    return code


async def unknown_path(url: str) -> int:
    try:
        await connect(url.replace("/jambonz", "/genesys"))
    except InvalidStatus as exc:
        return exc.response.status_code
    raise AssertionError("connected to an unknown path")


async def test_bad_connections_do_not_disturb_a_good_call(stack: RunningStack) -> None:
    call_id = f"good-{secrets.token_hex(3)}"
    url = stack.ingest_url
    good = simulate_jambonz(url, SPEECH / "call_mono_16k.wav", rate=16000, mix="mono",
                            call_sid=call_id, realtime=False)
    call, *codes = await asyncio.gather(
        good, bad_connection(url, bytes(333)), bad_connection(url, metadata("x", rate=11025)),
        bad_connection(url, "{not json"), bad_connection(url, metadata("y", mix="quad")),
        unknown_path(url))
    assert codes == [1008, 1003, 1007, 1003, 404]
    chunks = await audio_of(stack.bootstrap, stack.topics, call_id, 1)
    assert_complete(chunks, 1, call.samples_sent)
    assert all(c.rate == 16000 and c.call_id == call_id for c in chunks)
    events = await call_events(stack.bootstrap, stack.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "call.ended"]
    assert events[-1]["reason"] == "closed"
    assert events[-1]["lastSeq"] == [len(chunks) - 1]


async def test_a_dropped_connection_still_ends_the_call(stack: RunningStack) -> None:
    call_id = f"dropped-{secrets.token_hex(3)}"
    ws = await connect(stack.ingest_url, subprotocols=JAMBONZ)
    await ws.send(metadata(call_id))
    for _ in range(12):
        await ws.send(bytes(range(256)) * 2 + bytes(128))  # 20 ms of 8 kHz stereo
    await settle(ws)
    ws.transport.abort()  # no close frame: the TCP connection just goes away
    await ws.wait_closed()

    events = await call_events(stack.bootstrap, stack.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "call.ended"]
    assert events[-1]["reason"] == "connection_lost"
    assert events[-1]["durationMs"] == 240
    chunks = await audio_of(stack.bootstrap, stack.topics, call_id, 2)
    assert_complete(chunks, 2, 12 * 160)
    assert events[-1]["lastSeq"] == [max(c.seq for c in chunks if c.channel == ch)
                                     for ch in range(2)]


@pytest.mark.parametrize(("wav", "rate", "mix"), [("call_stereo_8k.wav", 8000, "stereo"),
                                                  ("call_mono_16k.wav", 16000, "mono")])
async def test_odd_sized_frames_are_reassembled(stack: RunningStack, wav: str, rate: int,
                                                mix: str) -> None:
    call_id = f"odd-{mix}-{secrets.token_hex(3)}"
    samples, source_rate = read_wav(SPEECH / wav)
    audio = prepare_audio(samples[: source_rate * 3 // 2], source_rate, rate=rate, mix=mix)
    stream = audio.tobytes()
    async with connect(stack.ingest_url, subprotocols=JAMBONZ) as ws:
        await ws.send(metadata(call_id, rate=rate, mix=mix))
        for start in range(0, len(stream), 333):
            await ws.send(stream[start:start + 333])
        await ws.send(b"")  # the empty frame mod_audio_fork sends at a graceful shutdown
    channels = audio.shape[1]
    chunks = await audio_of(stack.bootstrap, stack.topics, call_id, channels)
    assert_complete(chunks, channels, len(audio))
    for channel in range(channels):
        received = b"".join(c.pcm for c in chunks if c.channel == channel)
        assert received == np.ascontiguousarray(audio[:, channel]).tobytes()


async def test_dtmf_becomes_a_dtmf_record(stack: RunningStack) -> None:
    call_id = f"dtmf-{secrets.token_hex(3)}"
    ignored = REGISTRY.get_sample_value("callscribe_ingest_ignored_frames_total",
                                        {"provider": "jambonz", "reason": "unknown text frame "
                                         "'somethingNew'"}) or 0.0
    async with connect(stack.ingest_url, subprotocols=JAMBONZ) as ws:
        await ws.send(metadata(call_id, mix="mono"))
        for _ in range(50):  # 1 s of audio
            await ws.send(bytes(320))
        await ws.send(json.dumps({"event": "dtmf", "dtmf": "7", "duration": "1600"}))
        await ws.send(json.dumps({"type": "somethingNew"}))  # ignored, not fatal
        for _ in range(10):
            await ws.send(bytes(320))
        await ws.send(json.dumps({"event": "dtmf", "dtmf": "#"}))
    events = await call_events(stack.bootstrap, stack.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "dtmf", "dtmf", "call.ended"]
    first, second = events[1], events[2]
    assert (first["digit"], first["durationMs"], first["tMs"]) == ("7", 200, 1000)
    assert (second["digit"], second["durationMs"], second["tMs"]) == ("#", None, 1200)
    assert events[-1]["reason"] == "closed" and events[-1]["durationMs"] == 1200
    now = REGISTRY.get_sample_value("callscribe_ingest_ignored_frames_total",
                                    {"provider": "jambonz",
                                     "reason": "unknown text frame 'somethingNew'"})
    assert now == ignored + 1


# --------------------------------------------------------------------------- drain


async def test_drain_refuses_new_calls_and_closes_live_ones_1001(
        aux: tuple[AIOKafkaProducer, Topics], broker: EmbeddedBroker) -> None:
    server = await started_server(aux)
    base = f"http://127.0.0.1:{server.port}"
    url = f"ws://127.0.0.1:{server.port}/jambonz"
    call_id = f"drained-{secrets.token_hex(3)}"
    ws = await connect(url, subprotocols=JAMBONZ)
    await ws.send(metadata(call_id, mix="mono"))
    for _ in range(5):
        await ws.send(bytes(320))
    await settle(ws)

    drain = asyncio.create_task(server.drain(seconds(1)))
    await asyncio.sleep(0)  # let drain begin: it turns not-ready before it waits
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/readyz") as response:
            assert response.status == 503
        async with http.get(base + "/healthz") as response:
            assert response.status == 200
    with pytest.raises(InvalidStatus) as caught:
        await connect(url, subprotocols=JAMBONZ)
    assert caught.value.response.status_code == 503
    assert not drain.done()  # the live call may still finish on its own

    code, _ = await closed_with(ws)
    await asyncio.wait_for(drain, seconds(15))
    assert code == 1001
    assert server.ready is False
    with pytest.raises(OSError):
        await connect(url, subprotocols=JAMBONZ)

    events = await call_events(broker.bootstrap, aux[1], call_id)
    assert [e["type"] for e in events] == ["call.started", "call.ended"]
    chunks = await audio_of(broker.bootstrap, aux[1], call_id, 1)
    assert_complete(chunks, 1, 5 * 160)


async def test_drain_returns_early_when_live_calls_end(
        aux: tuple[AIOKafkaProducer, Topics]) -> None:
    server = await started_server(aux)
    url = f"ws://127.0.0.1:{server.port}/jambonz"
    ws = await connect(url, subprotocols=JAMBONZ)
    await ws.send(metadata(f"short-{secrets.token_hex(3)}", mix="mono"))
    await settle(ws)
    drain = asyncio.create_task(server.drain(seconds(60)))
    await asyncio.sleep(0)
    await ws.close(1000)
    await asyncio.wait_for(drain, seconds(10))  # long before the 60 s deadline
    assert ws.close_code == 1000
