"""Vonage on real parts: the shared token at the handshake (401; unset = refused), a call
through ingest → Kafka → the transcriber, every sample in Kafka with contiguous ``seq``,
DTMF, socket playback (20 ms frames, notify, clear) and end stream; join/end are refused
(no REST plan yet) with ``call.control_failed``."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import FIXTURES, seconds
from tests.ingest.conftest import VONAGE_TOKEN, ProviderRig
from tests.ingest.helpers import (
    assert_contiguous,
    audio_of,
    call_events,
    reference,
    transcript_of,
    wer,
)
from tests.ingest.test_control import command
from tests.ingest.test_providers_e2e import by_role
from workers.ingest.control import EndStream, PlayPrompt, StopPlayback
from workers.simulate.vonage import simulate_vonage

SPEECH = FIXTURES / "speech"


async def test_the_token_is_required(rig: ProviderRig) -> None:
    for url in (rig.ws_base + "/vonage", rig.ws_base + "/vonage?token=wrong"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, open_timeout=seconds(5)):
                pass
        assert refused.value.response.status_code == 401
    async with connect(rig.ws_base + "/vonage", open_timeout=seconds(5),
                       additional_headers={"Authorization": f"Bearer {VONAGE_TOKEN}"}):
        pass


async def test_a_vonage_call_is_transcribed(rig: ProviderRig) -> None:
    call = await simulate_vonage(rig.ws_base + "/vonage", SPEECH / "call_mono_16k.wav",
                                 token=VONAGE_TOKEN, realtime=False, dtmf=[(1.0, "7")])
    assert call.close_code == 1000
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call.call_id)
    assert events[0]["provider"] == "vonage" and events[0]["rate"] == 16000
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["7"]
    chunks = await audio_of(rig.settings.bootstrap, rig.worker.topics, call.call_id, 1)
    [audio] = assert_contiguous(chunks, 1).values()
    assert len(audio) // 2 == call.samples_sent["inbound"]
    said = by_role(await transcript_of(rig.settings.bootstrap, rig.worker.topics,
                                       call.call_id))
    assert set(said) == {"other"}
    assert wer(reference("call_mono_16k.wav", 0), said["other"]) <= 0.15, said


async def test_socket_commands_and_refused_rest_control(rig: ProviderRig) -> None:
    call_uuid = str(uuid.uuid4())
    task = asyncio.create_task(simulate_vonage(
        rig.ws_base + "/vonage", SPEECH / "caller.wav", rate=8000, call_uuid=call_uuid,
        token=VONAGE_TOKEN, realtime=True))
    handle = await asyncio.wait_for(rig.worker.registry.wait(call_uuid), seconds(10))
    await command(rig, call_uuid, "client:endCall", "e1")
    failed = (await call_events(rig.settings.bootstrap, rig.worker.topics, call_uuid,
                                until="call.control_failed"))[-1]
    assert "no REST call control" in failed["description"]
    await rig.worker.control.execute(handle, PlayPrompt(bytes(3200), 16000, "hello"))
    await rig.worker.control.execute(handle, StopPlayback())
    await asyncio.sleep(seconds(0.3))
    await rig.worker.control.execute(handle, EndStream())
    call = await asyncio.wait_for(task, seconds(15))
    binary = [m for m in call.received if isinstance(m, bytes)]
    assert [len(b) for b in binary] == [320] * 5
    assert [m.get("action") for m in call.received if isinstance(m, dict)] == [
        "notify", "clear"]
    assert call.close_code == 1000
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_uuid)
    assert events[-1]["type"] == "call.ended"
