"""Bland live-listen subscriptions: POST /v1/subscriptions → the subscriptions topic → one
replica's client → the local Bland-compatible listen server → audio on the audio topic; its
error codes, retries, and a reconnect without a gap in seq."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import aiohttp
import pytest

from tests.conftest import FIXTURES, RunningStack, seconds
from tests.ingest.conftest import BLAND_KEY, ProviderRig
from tests.ingest.helpers import assert_contiguous, audio_of, call_events, read_records
from workers.broker import EmbeddedBroker
from workers.ingest.session import CallRegistry
from workers.ingest.subscriptions import SubscriptionManager, SubscriptionRequest, publish_request
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.records import Topics
from workers.simulate.bland import load_mono_16k

CALLER = FIXTURES / "speech" / "caller.wav"


async def post(rig: ProviderRig, body: Any, key: str | None = "ingest-key",
               raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.post(
            rig.api_base + "/v1/subscriptions", json=None if raw is not None else body,
            data=raw, headers=headers) as response:
        return response.status, await response.json()


def new_call_id() -> str:
    return f"bland-{secrets.token_hex(4)}"


async def test_api_authenticates_and_validates(rig: ProviderRig) -> None:
    for key in (None, "wrong"):
        status, body = await post(rig, {"provider": "bland", "call_id": "x"}, key=key)
        assert (status, body["error"]) == (401, "unauthorized")
    for bad in ([1], {"provider": "plivo", "call_id": "x"}, {"provider": "bland"},
                {"provider": "bland", "call_id": ""}, {"provider": "bland", "call_id": "x" * 201}):
        status, body = await post(rig, bad)
        assert (status, body["error"]) == (400, "invalid_request"), bad
    status, body = await post(rig, None, raw=b"{not json")
    assert status == 400


async def test_subscription_ingests_the_mixed_16k_stream(rig: ProviderRig) -> None:
    call_id = new_call_id()
    rig.bland.add_call(call_id, CALLER)
    status, body = await post(rig, {"provider": "bland", "call_id": call_id})
    assert status == 202 and body["status"] == "accepted" and body["call_id"] == call_id
    topics = rig.worker.topics
    [request] = await read_records(rig.settings.bootstrap, topics.subscriptions, call_id,
                                   until=lambda rs: len(rs) >= 1)
    assert SubscriptionRequest.from_json(json.loads(request.value)).id == body["id"]
    audio = assert_contiguous(await audio_of(rig.settings.bootstrap, topics, call_id, 1), 1)
    assert audio[0] == load_mono_16k(CALLER)
    events = await call_events(rig.settings.bootstrap, topics, call_id)
    started = events[0]
    assert (started["provider"], started["mix"], started["rate"], started["roles"]) == (
        "bland", "mixed", 16000, ["other"])
    assert started["metadata"]["subscriptionId"] == body["id"]
    assert events[-1]["reason"] == "closed"
    assert rig.bland.listen_requests.count((call_id, "ok")) == 1


async def test_a_dropped_socket_reconnects_without_a_seq_gap(rig: ProviderRig) -> None:
    call_id = new_call_id()
    original = load_mono_16k(CALLER)
    call = rig.bland.add_call(call_id, original, drops_at=[16000, 40000])
    await post(rig, {"provider": "bland", "call_id": call_id})
    chunks = await audio_of(rig.settings.bootstrap, rig.worker.topics, call_id, 1)
    audio = assert_contiguous(chunks, 1)[0]  # seq 0, 1, 2, ... across both reconnects
    assert call.drops_done == 2 and call.connections == 3
    assert rig.bland.listen_requests.count((call_id, "ok")) == 3
    # Every sample arrived once, in order; only silence (the outages) was added between.
    assert audio[:32000] == original[:32000]
    rest = audio[32000:].lstrip(b"\x00")
    assert rest.startswith(original[32000:32100].lstrip(b"\x00")[:50])
    assert len(audio) >= len(original)
    assert audio.replace(b"\x00", b"") == original.replace(b"\x00", b"")
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "call.ended"]


async def test_call_not_found_is_retried_until_the_call_is_answered(rig: ProviderRig) -> None:
    call_id = new_call_id()
    rig.bland.add_call(call_id, load_mono_16k(CALLER)[:32000], not_found=2)
    rig.bland.fail_next = 1  # and one INTERNAL_SERVER_ERROR first
    await post(rig, {"provider": "bland", "call_id": call_id})
    assert_contiguous(await audio_of(rig.settings.bootstrap, rig.worker.topics, call_id, 1), 1)
    mine = [code for c, code in rig.bland.listen_requests if c == call_id]
    assert mine == ["INTERNAL_SERVER_ERROR", "CALL_NOT_FOUND", "CALL_NOT_FOUND", "ok"]


@pytest.mark.parametrize(("setup", "code", "attempts"), [
    ("disabled", "INVALID_ORG_PREFERENCES", 1),  # fatal: reported, never retried
    ("completed", "INVALID_CALL_STATUS", 1),  # the call is over: the subscription ends
    ("unknown", "CALL_NOT_FOUND", 3),  # retried with backoff for bland_retry_s, then reported
    ("bad key", "UNAUTHORIZED", 1),  # Bland refuses our authorization header: fatal
])
async def test_listen_errors(rig: ProviderRig, setup: str, code: str, attempts: int) -> None:
    call_id = new_call_id()
    if setup == "completed":
        rig.bland.add_call(call_id, b"").status = "completed"
    rig.bland.live_listen_enabled = setup != "disabled"
    if setup == "bad key":
        rig.bland.api_key = "a key callscribe does not have"
    try:
        await post(rig, {"provider": "bland", "call_id": call_id})
        events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id,
                                   until="subscription.failed", wait_s=seconds(20))
    finally:
        rig.bland.live_listen_enabled = True
        rig.bland.api_key = BLAND_KEY
    assert [e["type"] for e in events] == ["subscription.failed"]
    assert events[0]["error"] == code and events[0]["provider"] == "bland"
    mine = [c for c, _ in rig.bland.listen_requests if c == call_id]
    assert len(mine) >= attempts if code == "CALL_NOT_FOUND" else len(mine) == attempts


async def test_end_call_stops_bland_and_the_subscription(rig: ProviderRig) -> None:
    from tests.ingest.test_control import command, owned

    call_id = new_call_id()
    call = rig.bland.add_call(call_id, CALLER)
    rig.bland.realtime = True  # a live call, so it is still going when the command comes
    try:
        await post(rig, {"provider": "bland", "call_id": call_id})
        await owned(rig, call_id)
        await command(rig, call_id, "client:joinCall", "j")
        await command(rig, call_id, "client:endCall", "e")
        await asyncio.wait_for(call.done.wait(), seconds(10))
    finally:
        rig.bland.realtime = False
    transfer, hangup = await rig.api.wait_for(2, call_id=call_id)
    assert transfer.path == "/v1/calls/active/transfer"
    assert transfer.authorization == hangup.authorization == BLAND_KEY  # no "Bearer"
    assert transfer.body == {"call_id": call_id, "transfer_number": "+15550009999"}
    assert hangup.path == f"/v1/calls/{call_id}/stop"
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "call.joined", "call.ended"]
    assert events[-1]["reason"] == "hangup"


async def test_one_replica_takes_each_request(broker: EmbeddedBroker,
                                              stack: RunningStack) -> None:
    topics = Topics(f"ts{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, (*topics.all(), topics.subscriptions), partitions=2)
    producer = new_producer(broker.bootstrap, client_id="subs-test")
    await start_producer(producer)
    managers = [SubscriptionManager(
        bootstrap=broker.bootstrap, topics=topics, group_id=f"{topics.prefix}-group",
        producer=producer, registry=CallRegistry(), api_url="http://127.0.0.1:9",
        api_key="k", retry_s=0) for _ in range(2)]
    try:
        await asyncio.gather(*(manager.start() for manager in managers))
        requests = [SubscriptionRequest("bland", f"c{i}") for i in range(6)]
        for request in requests:
            await publish_request(producer, topics, request)
        await publish_request(producer, topics, SubscriptionRequest("bland", "old", id="o",
                                                                    requested_at="2020-01-01T"
                                                                    "00:00:00.000Z"))
        failed = await read_records(
            broker.bootstrap, topics.calls, "c5", until=lambda rs: len(rs) >= 1,
            wait_s=seconds(30))
        assert failed
        records = []
        for request in requests:
            records += await read_records(broker.bootstrap, topics.calls, request.call_id,
                                          until=lambda rs: len(rs) >= 1, wait_s=seconds(30))
        await asyncio.sleep(seconds(0.5))  # time for a duplicate record to show up
        again = []
        for request in requests:
            again += await read_records(broker.bootstrap, topics.calls, request.call_id,
                                        until=lambda rs: len(rs) >= 1)
        # One failure record per request (the API is unreachable): taken exactly once.
        assert len(records) == len(again) == len(requests)
    finally:
        for manager in managers:
            await manager.stop()
        await producer.stop()
