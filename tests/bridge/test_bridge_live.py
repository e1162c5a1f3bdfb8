"""The complete bridge through the real broker and real sockets (the ``stack`` fixture): control
outcomes back to clients, idempotent commands, reconnect replay with interims, slow-client
isolation, the rate limit, fuzzed client messages, secrets kept out of the logs, and
supervisor live listen (every error code, and the mixed audio of a real simulated call).

Records that other workers would produce (``call.started``, ``call.joined``, transcripts) are
produced here directly, so that each test controls exactly what the bridge sees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pytest
import soxr
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.bridge.wire import RawClient, close_code, saw
from tests.conftest import FIXTURES, RunningStack, seconds
from tests.schema_util import validate
from workers.bridge.client import (
    live_calls_url,
    open_live_call,
    request_listen_url,
    resume_position,
)
from workers.bridge.listen_protocol import OUTPUT_RATE
from workers.kafka import new_producer, start_producer
from workers.records import CallEnded, CallStarted, dumps
from workers.simulate.jambonz import prepare_audio, read_wav, simulate_jambonz

Message = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait until ``condition()`` holds: it reads the in-process bridge's state or metrics,
    which offer nothing to await."""
    async with asyncio.timeout(seconds(within_s)):
        while not condition():  # noqa: ASYNC110 (no event to await, see above)
            await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
async def producer(stack: RunningStack) -> AsyncIterator[AIOKafkaProducer]:
    kafka = new_producer(stack.bootstrap, client_id="test-bridge-live")
    await start_producer(kafka)
    yield kafka
    await kafka.stop()


class Feed:
    """Produces what ingest, the transcriber and the ingest-side executor would."""

    def __init__(self, stack: RunningStack, kafka: AIOKafkaProducer) -> None:
        self.stack = stack
        self.kafka = kafka

    def call(self, prefix: str) -> str:
        """A call the bridge knows. Its ``call.started`` goes straight to the bridge's hub,
        not through the calls topic, where the stack's transcriber would answer it with an
        ``event:start`` at a moment no test controls (tests/bridge/test_server.py covers
        that path with a real call)."""
        call_id = f"{prefix}-{secrets.token_hex(4)}"
        self.stack.bridge.hub.on_call_record(CallStarted(
            call_id=call_id, provider="jambonz", from_="+15550100", to="+15550199",
            direction="inbound", rate=8000, channels=2, mix="stereo",
            roles=("other", "assistant")).to_json())
        return call_id

    async def calls(self, value: Message) -> None:
        await self.kafka.send_and_wait(self.stack.topics.calls, key=value["callId"].encode(),
                                       value=dumps(value))

    async def transcripts(self, *records: Message) -> None:
        sent = [await self.kafka.send(self.stack.topics.transcripts_redacted,
                                      key=r["callId"].encode(), value=dumps(r)) for r in records]
        await asyncio.gather(*sent)


@pytest.fixture
def feed(stack: RunningStack, producer: AIOKafkaProducer) -> Feed:
    return Feed(stack, producer)


def transcript(call_id: str, n: int, msg: str | None = None) -> Message:
    return {"v": 1, "type": "transcript", "callId": call_id, "id": f"{call_id}:0:{n}",
            "msg": msg if msg is not None else f"utterance {n}", "role": "other",
            "offset": n / 10, "producedAtMs": int(time.time() * 1000)}


def interim(call_id: str, n: int, revision: int) -> Message:
    return {"v": 1, "type": "transcript:interim", "callId": call_id, "id": f"{call_id}:0:{n}",
            "msg": f"utter {n}.{revision}", "role": "other", "offset": n / 10,
            "revision": revision, "stable": ""}


def event(call_id: str, kind: str) -> Message:
    base: Message = {"v": 1, "type": kind, "callId": call_id,
                     "id": f"{call_id}:{kind.split(':')[1]}",
                     "timestamp": "2026-01-15T10:30:00.000Z"}
    if kind == "event:start":
        base["phone"] = "+15550100"
    return base


async def client(stack: RunningStack, call_id: str, **kwargs: Any) -> ClientConnection:
    token, _ = stack.issuer.mint(call_id)
    return await open_live_call(stack.bridge_url, token, stack.api_key, **kwargs)


async def receive(ws: ClientConnection, count: int = 1) -> list[Message]:
    out: list[Message] = []
    async with asyncio.timeout(seconds(10)):
        while len(out) < count:
            message = json.loads(await ws.recv())
            validate("livecalls-server", message)
            saw("server", message)
            out.append(message)
    return out


async def ids(ws: ClientConnection, count: int) -> list[str]:
    """The ids of the next ``count`` messages, read as fast as they come."""
    out: list[str] = []
    async with asyncio.timeout(seconds(20)):
        while len(out) < count:
            out.append(json.loads(await ws.recv())["id"])
    return out


async def send(ws: ClientConnection, frame: Message | str | bytes) -> None:
    if isinstance(frame, dict):
        saw("client", frame)
        frame = json.dumps(frame)
    await ws.send(frame)


async def read_until_closed(ws: ClientConnection) -> list[Message]:
    out: list[Message] = []
    try:
        async with asyncio.timeout(seconds(20)):
            async for raw in ws:
                message = json.loads(raw)
                saw("server", message)
                out.append(message)
    except ConnectionClosed:
        pass
    return out


async def control_ids(stack: RunningStack, call_id: str, last: str) -> list[str]:
    """Command ids on the control topic for ``call_id``, up to the one with id ``last``."""
    consumer = AIOKafkaConsumer(stack.topics.control, bootstrap_servers=stack.bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                fetch_max_wait_ms=20)
    await consumer.start()
    found: list[str] = []
    try:
        async with asyncio.timeout(seconds(20)):
            while last not in found:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    found += [json.loads(m.value)["id"] for m in batch
                              if m.key == call_id.encode()]
    finally:
        await consumer.stop()
    return found


# --------------------------------------------------------------------------- control


async def test_join_and_its_outcomes_reach_every_client(stack: RunningStack, feed: Feed) -> None:
    call_id = feed.call("control")
    agent, other = await client(stack, call_id), await client(stack, call_id)
    async with agent, other:
        await send(agent, {"type": "client:joinCall", "id": "j1"})
        assert await receive(agent) == [{"type": "ack", "ackId": "j1"}]
        await send(agent, {"type": "client:joinCall", "id": "j1"})  # the same command again
        assert await receive(agent) == [{"type": "ack", "ackId": "j1"}]
        await send(other, {"type": "client:joinCall", "id": "j1"})  # from another client too
        assert await receive(other) == [{"type": "ack", "ackId": "j1"}]
        await send(agent, {"type": "client:endCall", "id": "j1"})  # an id reused for another
        [reused] = await receive(agent)
        assert reused["type"] == "error" and "already used" in reused["description"]
        await send(agent, {"type": "client:endCall", "id": "e1"})
        assert await receive(agent) == [{"type": "ack", "ackId": "e1"}]
        assert await control_ids(stack, call_id, "e1") == ["j1", "e1"]  # j1 published once

        # The ingest-side executor carried out j1 (twice: a redelivery) and failed e1.
        joined = {"v": 1, "type": "call.joined", "callId": call_id, "commandId": "j1",
                  "channels": [1], "role": "user", "timestamp": "2026-01-15T10:30:00.000Z"}
        await feed.calls(joined)
        await feed.calls(joined)
        await feed.calls({"v": 1, "type": "call.control_failed", "callId": call_id,
                          "commandId": "e1", "command": "client:endCall",
                          "description": "the provider refused to hang up",
                          "retriable": False, "timestamp": "2026-01-15T10:30:00.000Z"})
        for ws in (agent, other):
            end, error = await receive(ws, 2)
            assert end == {"type": "event:end", "id": f"{call_id}:end",
                           "msg": "The user joined the call; the screening phase has ended."}
            assert error["type"] == "error" and error["id"] == f"{call_id}:control_failed:e1"
            assert "the provider refused to hang up" in error["description"]
    # A client that connects later finds both in the replay, once.
    async with await client(stack, call_id) as late:
        assert [m["type"] for m in await receive(late, 2)] == ["event:end", "error"]
    assert sample("callscribe_bridge_control_duplicates_total",
                  {"type": "client:joinCall"}) >= 2


# --------------------------------------------------------------------------- reconnect


async def test_reconnect_mid_call_gets_every_missed_message_once(stack: RunningStack,
                                                                 feed: Feed) -> None:
    call_id = feed.call("resume")
    first = [event(call_id, "event:start"), interim(call_id, 1, 0), interim(call_id, 1, 1),
             transcript(call_id, 1), interim(call_id, 2, 0)]
    later = [interim(call_id, 2, 1), transcript(call_id, 2), interim(call_id, 3, 0),
             transcript(call_id, 3), event(call_id, "event:callEnd")]
    await feed.transcripts(*first)
    watcher = await client(stack, call_id, interim=True)  # stays connected throughout
    finals_only = await client(stack, call_id)
    flaky = await client(stack, call_id, interim=True)
    seen_before = await receive(flaky, 5)  # ends on an interim: its resume names the revision
    finals_before = await receive(finals_only, 2)
    await flaky.close()
    await finals_only.close()
    await feed.transcripts(*first, *later)  # the first ones again: a redelivery
    everything = await read_until_closed(watcher)
    assert len(everything) == 10 and everything[-1]["type"] == "event:callEnd"

    async with await client(stack, call_id, interim=True,
                            resume_after=resume_position(seen_before[-1])) as back:
        rest = await read_until_closed(back)
    assert seen_before + rest == everything
    keys = [resume_position(m) for m in everything]
    assert len(keys) == len(set(keys))

    async with await client(stack, call_id,
                            resume_after=resume_position(finals_before[-1])) as back:
        rest = await read_until_closed(back)
    assert finals_before + rest == [m for m in everything if m["type"] != "transcript:interim"]


# --------------------------------------------------------------------------- slow clients


async def test_a_client_that_stops_reading_is_closed_1013_and_delays_no_one(
        stack: RunningStack, feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    # Long enough for the close frame to wait until the stalled client reads again.
    monkeypatch.setattr(stack.bridge, "close_timeout_s", seconds(30))
    call_id = feed.call("slow")
    token, _ = stack.issuer.mint(call_id)
    url = urlsplit(live_calls_url(stack.bridge_url, token))
    stalled = await RawClient.connect(url.hostname or "", url.port or 0,
                                      f"{url.path}?{url.query}",
                                      {"Authorization": f"Bearer {stack.api_key}"})
    readers = [await client(stack, call_id) for _ in range(3)]
    closes = sample("callscribe_bridge_slow_client_closes_total")
    count, words = 1000, "x" * 4000  # ~4 MB: more than the socket buffers hold
    started = time.monotonic()
    await feed.transcripts(*(transcript(call_id, n, words) for n in range(count)))
    for got in await asyncio.gather(*(ids(ws, count) for ws in readers)):
        assert got == [f"{call_id}:0:{n}" for n in range(count)]
    delivered_s = time.monotonic() - started
    await until(lambda: sample("callscribe_bridge_slow_client_closes_total") == closes + 1)
    frames = await asyncio.wait_for(stalled.read_all(), seconds(30))
    assert close_code(frames) == 1013
    texts = [json.loads(p) for op, p in frames if op == 0x1]
    assert 0 < len(texts) < count  # it got some, then was closed instead of stalling anyone
    assert delivered_s < seconds(20)
    for ws in readers:
        await ws.close()


# --------------------------------------------------------------------------- abuse


async def test_a_client_over_the_rate_limit_is_closed_1008(stack: RunningStack,
                                                           feed: Feed) -> None:
    call_id = feed.call("rate")
    limited = sample("callscribe_bridge_rate_limited_total")
    ws = await client(stack, call_id)
    try:
        for _ in range(100):
            await send(ws, {"type": "client:joinCall", "id": "again"})
    except ConnectionClosed:
        pass  # closed while it was still sending
    replies = await read_until_closed(ws)
    assert ws.close_code == 1008
    assert ws.close_reason == "rate limit: too many client messages"
    assert 25 <= len(replies) <= 40 and {m["type"] for m in replies} == {"ack"}
    assert sample("callscribe_bridge_rate_limited_total") == limited + 1
    assert await control_ids(stack, call_id, "again") == ["again"]


client_frames = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=64),
    st.text(min_size=4097, max_size=5000),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["client:joinCall", "client:endCall", "client:hold", ""]),
         "id": st.one_of(st.text(min_size=1, max_size=20), st.integers(), st.none(),
                         st.text(min_size=129, max_size=140))},
        optional={"extra": st.text(max_size=10)}).map(json.dumps),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=8).map(json.dumps),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frames=st.lists(client_frames, min_size=1, max_size=6))
async def test_fuzzed_client_messages_get_one_reply_each_on_a_real_socket(
        stack: RunningStack, frames: list[str | bytes]) -> None:
    token, _ = stack.issuer.mint("fuzz-call")
    async with await open_live_call(stack.bridge_url, token, stack.api_key) as ws:
        for frame in frames:
            await ws.send(frame)
            [reply] = await receive(ws)
            assert reply["type"] in ("ack", "error")
            if reply["type"] == "ack":
                assert json.loads(frame)["id"] == reply["ackId"]
        assert ws.close_code is None  # a few bad messages never cost the connection


@pytest.fixture(scope="module", autouse=True)
def fuzz_call(stack: RunningStack) -> None:
    stack.bridge.hub.on_call_record({"type": "call.started", "callId": "fuzz-call"})


# --------------------------------------------------------------------------- secrets


async def test_secrets_never_reach_the_logs(stack: RunningStack, feed: Feed,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Explicitly: workers.logs.configure (run by other tests in this process) quiets it.
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    call_id = feed.call("secret")
    bearer = {"Authorization": f"Bearer {stack.api_key}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.bridge_http}/v1/tokens", json={"call_id": call_id},
                             headers=bearer) as response:
            token = (await response.json())["token"]
    async with await open_live_call(stack.bridge_url, token, stack.api_key) as ws:
        await send(ws, {"type": "client:joinCall", "id": "secret-1"})
        await receive(ws)
    for url, headers in ((live_calls_url(stack.bridge_url, token), {"Authorization": "Bearer x"}),
                         (live_calls_url(stack.bridge_url, token + "x"), bearer)):
        with pytest.raises(InvalidStatus):
            await connect(url, additional_headers=headers)
    status, body = await request_listen_url(stack.bridge_http, call_id, stack.api_key)
    assert status == 200
    listen_url = body["data"]["url"]
    async with connect(listen_url):
        pass
    with pytest.raises(InvalidStatus):
        await connect(listen_url[:-3] + "abc")
    await request_listen_url(stack.bridge_http, call_id, "wrong-key")

    listen_token = listen_url.rsplit("/", 1)[1]
    secret_values = [stack.api_key, token, listen_token, stack.issuer._secret,
                     token.split(".")[2], listen_token.split(".")[2]]
    for record in caplog.records:
        if record.name.startswith("websockets.client"):
            continue  # this test's own client logging its requests, not the bridge
        texts = [record.getMessage(), *(str(v) for v in vars(record).values())]
        for secret in secret_values:
            assert not any(secret in text for text in texts), (record.name, record.getMessage())
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("conversationToken=<redacted>" in line for line in access)
    assert any("/v1/listen/<redacted>" in line for line in access)


# --------------------------------------------------------------------------- live listen


async def listen_status(stack: RunningStack, call_id: str, **kwargs: Any,
                        ) -> tuple[int, Message]:
    return await request_listen_url(stack.bridge_http, call_id, stack.api_key, **kwargs)


def bland_error(body: Message) -> str:
    assert body["status"] == "error" and body["data"] is None
    [error] = body["errors"]
    assert set(error) == {"error", "message"} and error["message"]
    return str(error["error"])


async def test_every_listen_error_code(stack: RunningStack, feed: Feed,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    live = feed.call("listen-err")
    ended = feed.call("listen-ended")
    await feed.calls(CallEnded(call_id=ended, reason="hangup", duration_ms=1000,
                               last_seq=(9, 9)).to_json())
    await until(lambda: stack.bridge.hub.call_state(ended) == "ended")
    http = stack.bridge_http

    async with aiohttp.ClientSession() as session:
        async def post(path: str, key: str | None = stack.api_key) -> tuple[int, Message]:
            headers = {"Authorization": key} if key is not None else {}
            async with session.post(http + path, headers=headers) as response:
                return response.status, await response.json()

        for path in ("/v1/calls//listen", "/v1/calls/%20/listen"):
            status, body = await post(path)
            assert (status, bland_error(body)) == (400, "MISSING_CALL_ID"), path
        status, body = await post(f"/v1/calls/{live}/listen", key=None)
        assert (status, bland_error(body)) == (401, "UNAUTHORIZED")
        status, body = await post("/v1/calls/never-heard-of/listen")
        assert (status, bland_error(body)) == (404, "CALL_NOT_FOUND")
        status, body = await post(f"/v1/calls/{ended}/listen")
        assert (status, bland_error(body)) == (400, "INVALID_CALL_STATUS")

    status, body = await listen_status(stack, live, bearer=True)
    assert status == 200 and body["status"] == "success" and body["errors"] is None
    listen_url = body["data"]["url"]
    assert listen_url.startswith(f"{stack.bridge_url}/v1/listen/")
    conversation_token, _ = stack.issuer.mint(live)
    for url, code in ((listen_url + "x", "INVALID_TOKEN"),
                      (f"{stack.bridge_url}/v1/listen/{conversation_token}", "INVALID_TOKEN")):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url)
        assert refused.value.response.status_code == 401
        assert bland_error(json.loads(refused.value.response.body)) == code

    monkeypatch.setattr(stack.bridge.listen, "enabled", False)
    status, body = await listen_status(stack, live)
    assert (status, bland_error(body)) == (403, "INVALID_ORG_PREFERENCES")
    with pytest.raises(InvalidStatus) as refused:
        await connect(listen_url)
    assert refused.value.response.status_code == 403
    monkeypatch.setattr(stack.bridge.listen, "enabled", True)

    async def broken(call_id: str) -> int:
        raise RuntimeError("metadata unavailable")

    monkeypatch.setattr(stack.bridge.listen.fanout, "partition_of", broken)
    status, body = await listen_status(stack, live)
    assert (status, bland_error(body)) == (500, "INTERNAL_SERVER_ERROR")
    with pytest.raises(InvalidStatus) as refused:
        await connect(listen_url)
    assert refused.value.response.status_code == 500


async def test_live_calls_handshake_answers_500_json_on_internal_errors(
        stack: RunningStack, feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    call_id = feed.call("boom")

    def broken(call_id: str) -> bool:
        raise RuntimeError("hub is broken")

    monkeypatch.setattr(stack.bridge.hub, "is_live", broken)
    token, _ = stack.issuer.mint(call_id)
    with pytest.raises(InvalidStatus) as refused:
        await open_live_call(stack.bridge_url, token, stack.api_key)
    assert refused.value.response.status_code == 500
    assert json.loads(refused.value.response.body)["error"] == "internal_error"


async def listen_to(url: str, into: list[bytes], opened: asyncio.Event | None = None,
                    ) -> tuple[int | None, float]:
    async with connect(url) as ws:
        connected = time.time()
        if opened is not None:
            opened.set()
        try:
            async for frame in ws:
                assert isinstance(frame, bytes)
                into.append(frame)
        except ConnectionClosed:
            pass
    saw("listen", b"")
    return ws.close_code, connected


async def test_listeners_hear_the_call_mixed_at_16k_until_it_ends(stack: RunningStack) -> None:
    wav = FIXTURES / "speech" / "call_stereo_8k.wav"
    call_id = f"listen-{secrets.token_hex(4)}"
    feeds_before = sample("callscribe_bridge_audio_feeds")
    call = asyncio.create_task(simulate_jambonz(stack.ingest_url, wav, rate=8000, mix="stereo",
                                                call_sid=call_id, realtime=True))
    async with asyncio.timeout(seconds(20)):
        # CALL_NOT_FOUND until call.started reaches the bridge: nothing to await but that.
        while (answer := await listen_status(stack, call_id))[0] == 404:  # noqa: ASYNC110 (above)
            await asyncio.sleep(0.05)
    status, body = answer
    assert status == 200, body
    frames: list[list[bytes]] = [[], [], []]
    opened = asyncio.Event()
    listeners = [asyncio.create_task(listen_to(body["data"]["url"], frames[0], opened))]
    await opened.wait()
    listeners += [asyncio.create_task(listen_to(body["data"]["url"], f)) for f in frames[1:]]
    simulated = await asyncio.wait_for(call, seconds(60))
    results = await asyncio.wait_for(asyncio.gather(*listeners), seconds(20))

    assert [code for code, _ in results] == [1000, 1000, 1000]  # closed when the call ended
    pcm = [b"".join(f) for f in frames]
    assert all(len(p) % 2 == 0 for p in pcm)
    assert pcm[0].endswith(pcm[1]) and pcm[0].endswith(pcm[2])  # one shared mix, joined later
    # Its length: the call's audio from when the first listener connected, ±5 %.
    duration_s = simulated.samples_sent / simulated.rate
    joined_at = next(i for i, when in simulated.frame_times if when >= results[0][1])
    expected = (duration_s - joined_at / simulated.rate) * OUTPUT_RATE
    heard = np.frombuffer(pcm[0], dtype="<i2")
    assert abs(len(heard) - expected) <= 0.05 * expected, (len(heard), expected)
    # Not silence, and both parties in it: the tail matches the call mixed offline.
    assert np.sqrt(np.mean(heard.astype(np.float64) ** 2)) > 300
    left, right = prepare_audio(*read_wav(wav), rate=8000, mix="stereo").T
    reference = np.clip(soxr.resample(left, 8000, OUTPUT_RATE).astype(np.int32)
                        + soxr.resample(right, 8000, OUTPUT_RATE), -32768, 32767)
    tail = min(len(heard), len(reference)) - OUTPUT_RATE // 10
    ours, theirs = heard[-tail:-OUTPUT_RATE // 20], reference[-tail:-OUTPUT_RATE // 20]
    correlation = np.corrcoef(ours.astype(np.float64), theirs.astype(np.float64))[0, 1]
    assert correlation > 0.95, correlation
    await until(lambda: sample("callscribe_bridge_audio_feeds") == feeds_before)
    assert sample("callscribe_bridge_listeners") == 0

