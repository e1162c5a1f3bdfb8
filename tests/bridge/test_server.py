"""The bridge through real sockets (the ``stack`` fixture): handshake refusals, REST, probes, and
one real-time stereo call watched by several liveCalls clients at once.

The call takes ~12 s of wall time, so it is played once (the module fixture ``live``) while
every client that needs it does its part; the tests then check what each client saw.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.bridge.wire import saw
from tests.conftest import FIXTURES, RunningStack, seconds
from tests.schema_util import validate
from workers.bridge.client import live_calls_url, open_live_call
from workers.bridge.tokens import TokenIssuer
from workers.simulate.jambonz import simulate_jambonz

Message = dict[str, Any]


# --------------------------------------------------------------------------- helpers


class DestroyedTasks(logging.Handler):
    """Collects asyncio's "Task was destroyed but it is pending!" reports."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.tasks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "destroyed but it is pending" in record.getMessage():
            self.tasks.append(repr(getattr(record, "task", record.getMessage())))


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def refused(url: str, headers: dict[str, str] | None = None,
                  subprotocols: list[str] | None = None) -> tuple[int, Message | None]:
    """Status and JSON body of a refused WebSocket handshake."""
    offered = [Subprotocol(p) for p in subprotocols] if subprotocols else None
    with pytest.raises(InvalidStatus) as caught:
        await connect(url, additional_headers=headers or {}, subprotocols=offered)
    response = caught.value.response
    try:
        body = json.loads(response.body)
    except ValueError:
        body = None
    return response.status_code, body


def bearer(stack: RunningStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.api_key}"}


async def read_all(ws: ClientConnection, seen: list[Message] | None = None,
                   on_message: Callable[[Message], None] | None = None) -> list[Message]:
    """Every message until the server closes; appended to ``seen`` as they come."""
    seen = [] if seen is None else seen
    try:
        async for raw in ws:
            message = json.loads(raw)
            saw("server", message)
            seen.append(message)
            if on_message is not None:
                on_message(message)
    except ConnectionClosed:
        pass
    return seen


async def reply(ws: ClientConnection) -> Message:
    """The next ack or error (transcripts and events in between are skipped)."""
    async with asyncio.timeout(seconds(10)):
        while True:
            message = json.loads(await ws.recv())
            saw("server", message)
            if message["type"] in ("ack", "error"):
                return dict(message)


async def control_records(stack: RunningStack, call_id: str, count: int) -> list[Message]:
    consumer = AIOKafkaConsumer(stack.topics.control, bootstrap_servers=stack.bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                fetch_max_wait_ms=20)
    await consumer.start()
    found: list[Message] = []
    try:
        async with asyncio.timeout(seconds(20)):
            while len(found) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    found += [json.loads(m.value) for m in batch if m.key == call_id.encode()]
    finally:
        await consumer.stop()
    return found


# --------------------------------------------------------------------------- one live call


@dataclass
class Watch:
    messages: list[Message] = field(default_factory=list)
    close_code: int | None = None


@dataclass
class LiveCall:
    call_id: str
    first: Watch  # connected as soon as the call was known
    second: Watch  # likewise: must see exactly what first saw
    late: Watch  # connected after the first transcript
    late_connected_after: int  # messages the first watcher had when the late one connected
    resumed: Watch  # resumeAfter=<the first transcript's id>, token from POST /v1/tokens
    resume_after: str
    replies: dict[str, Message]  # what the command client got back, by what it sent
    still_open: bool  # the command client's connection after its malformed messages
    flood_errors: list[Message]
    flood_close: int | None
    browser_subprotocol: str | None
    browser_first: Message  # the reply to a joinCall sent on that connection
    listed: list[Message]  # GET /v1/calls while the call was live
    control: list[Message]
    client_errors: float  # callscribe_bridge_client_errors_total during the call
    connections_during: float  # callscribe_bridge_connections gauge while clients watched
    connections_after: float
    leaked_tasks: list[str]  # tasks left pending by relays of clients that left mid-call


async def watch(stack: RunningStack, token: str, target: Watch,
                on_message: Callable[[Message], None] | None = None, **kwargs: Any) -> None:
    ws = await open_live_call(stack.bridge_url, token, stack.api_key, wait_s=seconds(30),
                              **kwargs)
    await read_all(ws, target.messages, on_message)
    target.close_code = ws.close_code


async def command_client(stack: RunningStack, token: str) -> tuple[dict[str, Message], bool]:
    replies: dict[str, Message] = {}
    async with await open_live_call(stack.bridge_url, token, stack.api_key,
                                    wait_s=seconds(30)) as ws:
        for name, frame in (
            ("join", json.dumps({"type": "client:joinCall", "id": "join-1"})),
            ("end", json.dumps({"type": "client:endCall", "id": "end-1"})),
            ("not-json", "{this is not json"),
            ("unknown-type", json.dumps({"type": "client:holdCall", "id": "x1"})),
            ("missing-id", json.dumps({"type": "client:joinCall"})),
            ("binary", b"\x00\x01\x02"),
            ("join-again", json.dumps({"type": "client:joinCall", "id": "join-2"})),
        ):
            await ws.send(frame)
            replies[name] = await reply(ws)
        still_open = ws.close_code is None
    return replies, still_open


async def flood(stack: RunningStack, token: str) -> tuple[list[Message], int | None]:
    ws = await open_live_call(stack.bridge_url, token, stack.api_key, wait_s=seconds(30))
    for n in range(20):
        await ws.send(f"malformed {n}")
    async with asyncio.timeout(seconds(10)):
        seen = await read_all(ws)
    return [m for m in seen if m["type"] == "error"], ws.close_code


async def browser(stack: RunningStack, token: str) -> tuple[str | None, Message]:
    url = live_calls_url(stack.bridge_url, token)
    protocols = [Subprotocol("callscribe.liveCalls"),
                 Subprotocol(f"callscribe.bearer.{stack.api_key}")]
    async with connect(url, subprotocols=protocols) as ws:
        await ws.send(json.dumps({"type": "client:joinCall", "id": "browser-1"}))
        return ws.subprotocol, await reply(ws)


@pytest.fixture(scope="module")
async def live(stack: RunningStack) -> AsyncIterator[LiveCall]:
    call_id = f"bridge-{secrets.token_hex(4)}"
    token, _ = stack.issuer.mint(call_id)
    errors_before = sample("callscribe_bridge_client_errors_total")
    connections_before = sample("callscribe_bridge_connections")
    destroyed = DestroyedTasks()
    logging.getLogger("asyncio").addHandler(destroyed)
    call = asyncio.create_task(simulate_jambonz(
        stack.ingest_url, FIXTURES / "speech" / "call_stereo_8k.wav", rate=8000, mix="stereo",
        call_sid=call_id, realtime=True))

    first, second, late, resumed = Watch(), Watch(), Watch(), Watch()
    transcribed = asyncio.Event()

    def note(message: Message) -> None:
        if message["type"] == "transcript":
            transcribed.set()

    watchers = [asyncio.create_task(watch(stack, token, first, note)),
                asyncio.create_task(watch(stack, token, second))]
    replies, still_open = await command_client(stack, token)
    flood_errors, flood_close = await flood(stack, token)
    subprotocol, browser_first = await browser(stack, token)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.bridge_http}/v1/calls", headers=bearer(stack)) as response:
            assert response.status == 200
            listed = (await response.json())["calls"]
        connections = sample("callscribe_bridge_connections")

        await asyncio.wait_for(transcribed.wait(), seconds(60))
        late_after = len(first.messages)
        resume_after = next(m["id"] for m in first.messages if m["type"] == "transcript")
        watchers.append(asyncio.create_task(watch(stack, token, late)))
        async with http.post(f"{stack.bridge_http}/v1/tokens", headers=bearer(stack),
                             json={"call_id": call_id}) as response:
            assert response.status == 200
            rest_token = (await response.json())["token"]
    watchers.append(asyncio.create_task(
        watch(stack, rest_token, resumed, resume_after=resume_after)))

    await asyncio.wait_for(call, seconds(60))
    await asyncio.wait_for(asyncio.gather(*watchers), seconds(90))
    gc.collect()  # a pending task nobody can wake is destroyed (and reported) now
    logging.getLogger("asyncio").removeHandler(destroyed)
    yield LiveCall(
        call_id=call_id, first=first, second=second, late=late, late_connected_after=late_after,
        resumed=resumed, resume_after=resume_after, replies=replies, still_open=still_open,
        flood_errors=flood_errors, flood_close=flood_close, browser_subprotocol=subprotocol,
        browser_first=browser_first, listed=listed,
        control=await control_records(stack, call_id, 4),
        client_errors=sample("callscribe_bridge_client_errors_total") - errors_before,
        connections_during=connections,
        connections_after=sample("callscribe_bridge_connections") - connections_before,
        leaked_tasks=destroyed.tasks)


# --------------------------------------------------------------------------- live call tests


def test_the_call_is_seen_from_start_to_end(live: LiveCall) -> None:
    types = [m["type"] for m in live.first.messages]
    assert types[0] == "event:start" and types[-1] == "event:callEnd"
    assert types.count("transcript") >= 3
    for message in live.first.messages:
        validate("livecalls-server", message)
        assert "callId" not in message and "v" not in message
        assert not any(key.endswith("Ms") for key in message)


def test_connection_closes_1000_after_call_end(live: LiveCall) -> None:
    for seen in (live.first, live.second, live.late, live.resumed):
        assert seen.messages[-1]["type"] == "event:callEnd"
        assert seen.close_code == 1000


def test_two_clients_receive_identical_sequences(live: LiveCall) -> None:
    assert live.second.messages == live.first.messages
    ids = [m["id"] for m in live.first.messages]
    assert len(ids) == len(set(ids))


def test_a_late_client_gets_the_replay_from_event_start_in_order(live: LiveCall) -> None:
    assert live.late_connected_after >= 2  # event:start and a transcript were already sent
    assert live.late.messages == live.first.messages


def test_resume_after_replays_only_later_messages(live: LiveCall) -> None:
    ids = [m["id"] for m in live.first.messages]
    after = ids.index(live.resume_after) + 1
    assert after < len(ids)
    assert live.resumed.messages == live.first.messages[after:]


def test_commands_are_acked_and_published_to_control(live: LiveCall, stack: RunningStack,
                                                     ) -> None:
    assert live.replies["join"] == {"type": "ack", "ackId": "join-1"}
    assert live.replies["end"] == {"type": "ack", "ackId": "end-1"}
    assert live.replies["join-again"] == {"type": "ack", "ackId": "join-2"}
    for record in live.control:
        validate("control", record)
    assert [(r["type"], r["id"], r["callId"], r["bridge"]) for r in live.control] == [
        ("client:joinCall", "join-1", live.call_id, stack.bridge.instance),
        ("client:endCall", "end-1", live.call_id, stack.bridge.instance),
        ("client:joinCall", "join-2", live.call_id, stack.bridge.instance),
        ("client:joinCall", "browser-1", live.call_id, stack.bridge.instance),
    ]


def test_malformed_client_messages_get_an_error_and_the_connection_stays_open(
        live: LiveCall) -> None:
    for name, words in (("not-json", "not valid JSON"), ("unknown-type", "not supported"),
                        ("missing-id", '"id"'), ("binary", "Binary frames")):
        message = live.replies[name]
        validate("livecalls-server", message)
        assert message["type"] == "error", name
        assert words in message["description"], (name, message)
    assert live.still_open  # and join-2 after them was acked
    assert live.client_errors >= 4 + 20


def test_twenty_malformed_messages_close_1008(live: LiveCall) -> None:
    assert len(live.flood_errors) == 20
    assert all(m["description"] for m in live.flood_errors)
    assert live.flood_close == 1008


def test_browser_auth_through_the_subprotocol(live: LiveCall) -> None:
    assert live.browser_subprotocol == "callscribe.liveCalls"
    assert live.browser_first == {"type": "ack", "ackId": "browser-1"}


def test_live_calls_are_listed(live: LiveCall) -> None:
    assert live.call_id in [c["callId"] for c in live.listed]


def test_connections_are_counted_and_leave_nothing_behind(live: LiveCall) -> None:
    assert live.connections_during >= 2  # the two watchers at least
    assert live.connections_after == 0
    # The command, flood and browser clients left mid-call: their relays were cancelled, and
    # the tasks those relays waited on must go with them.
    assert live.leaked_tasks == []


# --------------------------------------------------------------------------- handshake


async def test_missing_or_wrong_api_key_is_401(stack: RunningStack) -> None:
    token, _ = stack.issuer.mint("any-call")
    url = live_calls_url(stack.bridge_url, token)
    before = sample("callscribe_bridge_handshake_rejected_total", {"status": "401"})
    for headers in ({}, {"Authorization": "Bearer wrong-key"},
                    {"Authorization": f"Basic {stack.api_key}"}):
        status, body = await refused(url, headers)
        assert status == 401, headers
        assert body is not None and body["error"] == "unauthorized" and body["description"]
    # A browser offering a wrong key in the subprotocol is refused the same way.
    status, body = await refused(url, subprotocols=["callscribe.liveCalls",
                                                    "callscribe.bearer.wrong"])
    assert status == 401 and body is not None and body["error"] == "unauthorized"
    assert sample("callscribe_bridge_handshake_rejected_total", {"status": "401"}) == before + 4


async def test_malformed_token_is_400(stack: RunningStack) -> None:
    for token in ("not-a-jwt", "a.b.c", ""):
        status, body = await refused(live_calls_url(stack.bridge_url, token), bearer(stack))
        assert status == 400, token
        assert body is not None and body["error"] in ("invalid_token", "invalid_request")


async def test_token_from_another_secret_is_401(stack: RunningStack) -> None:
    other = TokenIssuer(secrets.token_urlsafe(32), 600)
    token, _ = other.mint("some-call")
    status, body = await refused(live_calls_url(stack.bridge_url, token), bearer(stack))
    assert status == 401
    assert body is not None and body["error"] == "token_rejected"


async def test_valid_token_for_an_unknown_call_is_404(stack: RunningStack) -> None:
    token, _ = stack.issuer.mint(f"never-seen-{secrets.token_hex(4)}")
    status, body = await refused(live_calls_url(stack.bridge_url, token), bearer(stack))
    assert status == 404
    assert body is not None and body["error"] == "unknown_call"


async def test_wrong_path_is_404(stack: RunningStack) -> None:
    token, _ = stack.issuer.mint("any-call")
    status, _ = await refused(f"{stack.bridge_url}/ws/v2/liveCalls?conversationToken={token}",
                              bearer(stack))
    assert status == 404


# --------------------------------------------------------------------------- REST and probes


async def test_tokens_endpoint(stack: RunningStack) -> None:
    url = f"{stack.bridge_http}/v1/tokens"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"call_id": "c-1"}, headers=bearer(stack)) as response:
            assert response.status == 200
            body = await response.json()
        assert stack.issuer.verify(body["token"]) == "c-1"
        assert body["expires_at"].endswith("Z")
        for headers in ({}, {"Authorization": "Bearer nope"}):
            async with http.post(url, json={"call_id": "c-1"}, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"] == "unauthorized"
        for data in (b"{not json", b"[]", b'{"call_id": 7}', b'{"call_id": ""}', b"{}"):
            async with http.post(url, data=data, headers=bearer(stack)) as response:
                assert response.status == 400, data
                assert (await response.json())["error"] == "invalid_request"


async def test_calls_endpoint_needs_the_api_key(stack: RunningStack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.bridge_http}/v1/calls") as response:
            assert response.status == 401
        async with http.get(f"{stack.bridge_http}/v1/calls", headers=bearer(stack)) as response:
            assert response.status == 200
            assert isinstance((await response.json())["calls"], list)


async def test_probes_and_metrics(stack: RunningStack) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(stack.bridge_http + path) as response:
                assert response.status == 200, path
        async with http.get(stack.bridge_http + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
    assert "callscribe_bridge_connections" in text
    assert "callscribe_bridge_handshake_rejected_total" in text
