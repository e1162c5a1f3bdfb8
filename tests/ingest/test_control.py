"""Call control end to end: a ControlCommand on the control topic → the ingest replica that
owns the call → the provider's REST API (the simulator records the hang-up or transfer) or
socket; outcomes on the calls topic; idempotent by command id; several replicas."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from tests.conftest import FIXTURES, RunningStack, seconds
from tests.ingest.conftest import (
    PLIVO_TOKEN,
    TRANSFER_TARGET,
    TWILIO_TOKEN,
    ProviderRig,
    rig_settings,
)
from tests.ingest.helpers import audio_of, call_events
from workers.ingest.control import EndStream, PlayPrompt, StopPlayback
from workers.ingest.errors import ControlUnsupported
from workers.ingest.session import CallHandle
from workers.ingest.worker import IngestWorker
from workers.kafka import new_producer, start_producer
from workers.records import ControlCommand, dumps
from workers.simulate.plivo import simulate_plivo
from workers.simulate.tracks import TrackCall
from workers.simulate.twilio import simulate_twilio

STEREO = FIXTURES / "speech" / "call_stereo_8k.wav"


async def command(rig: ProviderRig, call_id: str, kind: str, command_id: str) -> None:
    record = ControlCommand(call_id=call_id, type=kind, id=command_id, bridge="test")
    await rig.worker.server._producer.send_and_wait(
        rig.worker.topics.control, key=call_id.encode(), value=dumps(record.to_json()))


async def owned(rig: ProviderRig, call_id: str) -> CallHandle:
    return await asyncio.wait_for(rig.worker.registry.wait(call_id), seconds(10))


def live_call(rig: ProviderRig, provider: str, call_id: str,
              **kwargs: Any) -> asyncio.Task[TrackCall]:
    """A real-time call that goes on until the provider simulator records a hang-up."""
    until = rig.api.ended(call_id)
    if provider == "twilio":
        return asyncio.create_task(simulate_twilio(
            rig.ws_base + "/twilio", STEREO, call_sid=call_id, auth_token=TWILIO_TOKEN,
            until=until, **kwargs))
    return asyncio.create_task(simulate_plivo(
        rig.ws_base + "/plivo", STEREO, call_id=call_id, auth_token=PLIVO_TOKEN, until=until,
        **kwargs))


async def test_join_then_end_a_twilio_call(rig: ProviderRig) -> None:
    call_id = "CA" + secrets.token_hex(16)
    call = live_call(rig, "twilio", call_id, tracks="both")
    await owned(rig, call_id)
    await asyncio.sleep(seconds(0.5))  # some audio before the join
    for _ in range(2):  # the same command twice does one thing
        await command(rig, call_id, "client:joinCall", "join-1")
    await command(rig, "CA-nobody-owns-this", "client:joinCall", "join-2")
    [transfer] = await rig.api.wait_for(1, call_id=call_id)
    assert (transfer.provider, transfer.action, transfer.method) == ("twilio", "transfer", "POST")
    assert transfer.body == {"Twiml": f"<Response><Dial>{TRANSFER_TARGET}</Dial></Response>"}
    assert transfer.authorization and transfer.authorization.startswith("Basic ")
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id,
                               until="call.joined")
    joined = events[-1]
    assert (joined["commandId"], joined["channels"], joined["role"]) == ("join-1", [1], "user")
    await asyncio.sleep(seconds(0.3))  # the user's leg talks a little

    await command(rig, call_id, "client:endCall", "end-1")
    played = await asyncio.wait_for(call, seconds(15))  # the hang-up stopped the simulator
    actions = await rig.api.wait_for(2, call_id=call_id)
    assert [a.action for a in actions] == ["transfer", "hangup"]
    assert actions[1].body == {"Status": "completed"}
    assert played.samples_sent["inbound"] < 8000 * 10  # it did not play to the end
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "call.joined", "call.ended"]
    assert events[-1]["reason"] == "hangup"
    # The outbound channel is the assistant until the join, the user from then on.
    chunks = await audio_of(rig.settings.bootstrap, rig.worker.topics, call_id, 2)
    roles = [c.role for c in chunks if c.channel == 1]
    switch = roles.index("user")
    assert switch > 0 and set(roles[:switch]) == {"assistant"} and set(roles[switch:]) == {"user"}
    assert {c.role for c in chunks if c.channel == 0} == {"other"}


async def test_plivo_end_and_a_refused_join(rig: ProviderRig) -> None:
    call_id = "refused-call"  # the simulator refuses every action for it
    call = live_call(rig, "plivo", call_id)
    await owned(rig, call_id)
    await command(rig, call_id, "client:joinCall", "j")
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id,
                               until="call.control_failed")
    failed = events[-1]
    assert (failed["commandId"], failed["command"]) == ("j", "client:joinCall")
    assert "400" in failed["description"] and failed["retriable"] is False
    [refused] = await rig.api.wait_for(1, call_id=call_id)
    assert refused.body["aleg_url"].startswith(rig.api.base_url + "/hooks/dial?to=%2B1555")
    rig.api.refuse.discard(call_id)
    await command(rig, call_id, "client:endCall", "e")
    await asyncio.wait_for(call, seconds(15))
    hangup = (await rig.api.wait_for(2, call_id=call_id))[1]
    assert (hangup.provider, hangup.method) == ("plivo", "DELETE")
    assert hangup.path.endswith(f"/Call/{call_id}/")


async def jambonz_call(rig: ProviderRig, call_id: str, *, metadata: dict[str, Any] | None = None
                       ) -> Any:
    ws = await connect(rig.ws_base + "/jambonz", subprotocols=[Subprotocol("audio.jambonz.org")])
    await ws.send(json.dumps({"sampleRate": 8000, "mixType": "stereo", "callSid": call_id,
                              "accountSid": "acct-1", "from": "+1", "to": "+2",
                              **(metadata or {})}))
    await ws.send(bytes(640 * 10))
    return ws


async def test_jambonz_transfer_and_socket_commands(rig: ProviderRig) -> None:
    call_id = f"jz-{secrets.token_hex(4)}"
    ws = await jambonz_call(rig, call_id)
    handle = await owned(rig, call_id)
    await command(rig, call_id, "client:joinCall", "j")
    [transfer] = await rig.api.wait_for(1, call_id=call_id)
    assert (transfer.provider, transfer.method) == ("jambonz", "PUT")
    assert transfer.path == f"/v1/Accounts/acct-1/Calls/{call_id}"
    assert transfer.body["call_hook"]["url"].endswith(f"to=%2B15550009999&call={call_id}")
    assert transfer.authorization == "Bearer jambonz-key"

    control = rig.worker.control
    tone = (np.sin(np.arange(1600) / 5) * 8000).astype("<i2").tobytes()
    await control.execute(handle, PlayPrompt(tone, 16000, name="hello"))
    await control.execute(handle, StopPlayback())
    await control.execute(handle, EndStream())
    got = [json.loads(await asyncio.wait_for(ws.recv(), seconds(5))) for _ in range(3)]
    assert [m["type"] for m in got] == ["playAudio", "killAudio", "disconnect"]
    assert got[0]["data"]["sampleRate"] == 16000 and got[0]["data"]["id"] == "hello"
    await ws.close()
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "call.joined", "call.ended"]


async def test_plivo_and_twilio_socket_commands(rig: ProviderRig) -> None:
    control = rig.worker.control
    tone = (np.sin(np.arange(1600) / 5) * 8000).astype("<i2").tobytes()
    plivo_id, twilio_id, uni_id = (f"{p}-{secrets.token_hex(4)}" for p in "ptu")
    plivo = live_call(rig, "plivo", plivo_id, content_type="audio/x-mulaw;rate=8000")
    twilio = live_call(rig, "twilio", twilio_id,
                       custom_parameters={"callscribeBidirectional": "true"})
    uni = live_call(rig, "twilio", uni_id)
    p, t, u = [await owned(rig, c) for c in (plivo_id, twilio_id, uni_id)]

    await control.execute(p, PlayPrompt(tone, 16000, name="greeting"))
    await control.execute(t, PlayPrompt(tone, 16000, name="greeting"))
    with pytest.raises(ControlUnsupported):
        await control.execute(u, PlayPrompt(tone, 16000))
    await control.execute(p, StopPlayback())
    await control.execute(t, StopPlayback())
    await control.execute(p, EndStream())
    await control.execute(t, EndStream())
    plivo_call, twilio_call = await asyncio.gather(plivo, twilio)
    rig.api.ended(uni_id).set()
    uni_call = await uni

    assert [m["event"] for m in plivo_call.received] == ["playAudio", "checkpoint", "clearAudio"]
    assert plivo_call.received[0]["media"] == {
        "contentType": "audio/x-mulaw", "sampleRate": 8000,
        "payload": plivo_call.received[0]["media"]["payload"]}
    assert plivo_call.close_code == 1000
    assert [m["event"] for m in twilio_call.received] == ["media", "mark", "clear"]
    assert twilio_call.received[0]["streamSid"] == twilio_call.stream_id
    assert twilio_call.close_code == 1000
    assert uni_call.received == []


@pytest.fixture
async def second_replica(stack: RunningStack, rig: ProviderRig) -> AsyncIterator[IngestWorker]:
    """Another ingest replica on the same topics and provider APIs (its own subscription
    group, so the session's Bland subscriptions are not rebalanced by it)."""
    settings = rig_settings(stack, rig.api.base_url,
                            ingest_group_id=f"{stack.topics.prefix}-replica-b")
    producer = new_producer(stack.bootstrap, client_id="replica-b")
    await start_producer(producer)
    replica = IngestWorker(settings, producer)
    await replica.start()
    try:
        yield replica
    finally:
        await replica.drain(1)
        await producer.stop()


async def test_only_the_replica_owning_the_call_acts(rig: ProviderRig,
                                                     second_replica: IngestWorker) -> None:
    call_id = "CA" + secrets.token_hex(16)
    url = f"ws://127.0.0.1:{second_replica.server.port}/twilio"
    until = rig.api.ended(call_id)
    call = asyncio.create_task(simulate_twilio(url, STEREO, call_sid=call_id,
                                               auth_token=TWILIO_TOKEN, until=until))
    await asyncio.wait_for(second_replica.registry.wait(call_id), seconds(10))
    assert rig.worker.registry.get(call_id) is None
    await command(rig, call_id, "client:endCall", "end-b")
    await asyncio.wait_for(call, seconds(15))
    await asyncio.sleep(seconds(0.5))  # time for a wrong second hang-up to show up
    [hangup] = [a for a in rig.api.actions if a.call_id == call_id]
    assert hangup.action == "hangup"

