"""Telnyx on real parts: the stream token at the handshake (the header Telnyx sends, ?token= or
Bearer; 401), an L16 16 kHz call through ingest → Kafka → the transcriber with every sample in
Kafka and contiguous ``seq``, DTMF; join then end through the Call Control REST simulator
(transfer, hang-up; "call has already ended" counts as hung up); socket playback (media, mark,
clear) on an RTP bidirectional stream, nothing on another; end stream."""

from __future__ import annotations

import asyncio
import base64
import secrets

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import FIXTURES, seconds
from tests.ingest.conftest import TELNYX_KEY, TELNYX_TOKEN, TRANSFER_TARGET, ProviderRig
from tests.ingest.helpers import (
    assert_contiguous,
    audio_of,
    call_events,
    reference,
    transcript_of,
    wer,
)
from tests.ingest.test_control import command, owned
from tests.ingest.test_providers_e2e import by_role
from workers.ingest.control import EndStream, PlayPrompt, StopPlayback
from workers.ingest.dialects.telnyx import TOKEN_HEADER
from workers.ingest.errors import ControlUnsupported
from workers.simulate.telnyx import simulate_telnyx
from workers.simulate.tracks import TrackCall

SPEECH = FIXTURES / "speech"


async def test_the_stream_token_is_checked(rig: ProviderRig) -> None:
    url = rig.ws_base + "/telnyx"
    for bad_url, headers in ((url, {}), (url + "?token=wrong", {}),
                             (url, {TOKEN_HEADER: "wrong"})):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(bad_url, additional_headers=headers, open_timeout=seconds(5)):
                pass
        assert refused.value.response.status_code == 401
    for good_url, headers in ((url, {TOKEN_HEADER: TELNYX_TOKEN}),
                              (url + f"?token={TELNYX_TOKEN}", {}),
                              (url, {"Authorization": f"Bearer {TELNYX_TOKEN}"})):
        async with connect(good_url, additional_headers=headers, open_timeout=seconds(5)):
            pass


async def test_an_l16_call_is_transcribed_with_every_sample_and_dtmf(rig: ProviderRig) -> None:
    call = await simulate_telnyx(rig.ws_base + "/telnyx", SPEECH / "call_mono_16k.wav",
                                 encoding="L16", rate=16000, token=TELNYX_TOKEN,
                                 realtime=False, dtmf=[(1.0, "7")])
    assert call.close_code == 1000
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call.call_id)
    started = events[0]
    assert (started["provider"], started["rate"], started["roles"]) == ("telnyx", 16000,
                                                                       ["other"])
    assert started["metadata"]["call_control_id"] == call.call_id
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["7"]
    chunks = await audio_of(rig.settings.bootstrap, rig.worker.topics, call.call_id, 1)
    [audio] = assert_contiguous(chunks, 1).values()
    assert len(audio) // 2 == call.samples_sent["inbound"]
    said = by_role(await transcript_of(rig.settings.bootstrap, rig.worker.topics,
                                       call.call_id))
    assert set(said) == {"other"}
    assert wer(reference("call_mono_16k.wav", 0), said["other"]) <= 0.15, said


def live_call(rig: ProviderRig, call_id: str, *, tracks: str = "inbound",
              custom_parameters: dict[str, str] | None = None) -> asyncio.Task[TrackCall]:
    """A real-time call that goes on until the REST simulator records a hang-up."""
    return asyncio.create_task(simulate_telnyx(
        rig.ws_base + "/telnyx", SPEECH / "call_stereo_8k.wav", tracks=tracks,
        call_control_id=call_id, token=TELNYX_TOKEN, custom_parameters=custom_parameters,
        until=rig.api.ended(call_id)))


async def test_join_then_end_a_telnyx_call(rig: ProviderRig) -> None:
    call_id = "v3:" + secrets.token_hex(12)
    call = live_call(rig, call_id, tracks="both")
    await owned(rig, call_id)
    await asyncio.sleep(seconds(0.5))  # some audio before the join
    await command(rig, call_id, "client:joinCall", "join-1")
    [transfer] = await rig.api.wait_for(1, call_id=call_id)
    assert (transfer.provider, transfer.action, transfer.method) == ("telnyx", "transfer",
                                                                     "POST")
    assert transfer.path == f"/v2/calls/{call_id}/actions/transfer"
    assert transfer.body == {"to": TRANSFER_TARGET}
    assert transfer.authorization == f"Bearer {TELNYX_KEY}"
    joined = (await call_events(rig.settings.bootstrap, rig.worker.topics, call_id,
                                until="call.joined"))[-1]
    assert (joined["channels"], joined["role"]) == ([1], "user")

    await command(rig, call_id, "client:endCall", "end-1")
    await asyncio.wait_for(call, seconds(15))  # the hang-up stopped the simulator
    actions = await rig.api.wait_for(2, call_id=call_id)
    assert [(a.action, a.path, a.body) for a in actions][1] == (
        "hangup", f"/v2/calls/{call_id}/actions/hangup", {})
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "call.joined", "call.ended"]
    assert events[-1]["reason"] == "hangup"


async def test_a_refused_join_and_a_hangup_of_an_ended_call(rig: ProviderRig) -> None:
    call_id = "v3:" + secrets.token_hex(12)
    rig.api.refuse.add(call_id)  # answered 422 error 90018, "call has already ended"
    call = live_call(rig, call_id)
    await owned(rig, call_id)
    await command(rig, call_id, "client:joinCall", "j")
    failed = (await call_events(rig.settings.bootstrap, rig.worker.topics, call_id,
                                until="call.control_failed"))[-1]
    assert (failed["commandId"], failed["retriable"]) == ("j", False)
    assert "422: 90018 Call has already ended" in failed["description"]
    await command(rig, call_id, "client:endCall", "e")
    await rig.api.wait_for(2, call_id=call_id)
    await asyncio.sleep(seconds(0.3))  # time for a wrong call.control_failed to show up
    rig.api.ended(call_id).set()  # the call really ended: the stream stops
    await asyncio.wait_for(call, seconds(15))
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_id)
    assert [e["type"] for e in events] == ["call.started", "call.control_failed", "call.ended"]
    assert events[-1]["reason"] == "hangup"


async def test_socket_commands_on_a_bidirectional_stream_only(rig: ProviderRig) -> None:
    control = rig.worker.control
    tone = (np.sin(np.arange(1600) / 5) * 8000).astype("<i2").tobytes()  # 100 ms at 16 kHz
    both_id, uni_id = ("v3:" + secrets.token_hex(8) for _ in range(2))
    both = live_call(rig, both_id, custom_parameters={"callscribeBidirectional": "true"})
    uni = live_call(rig, uni_id)
    handle, uni_handle = await owned(rig, both_id), await owned(rig, uni_id)
    await control.execute(handle, PlayPrompt(tone, 16000, name="greeting"))
    with pytest.raises(ControlUnsupported, match="RTP bidirectional"):
        await control.execute(uni_handle, PlayPrompt(tone, 16000))
    await control.execute(handle, StopPlayback())
    await control.execute(handle, EndStream())
    played = await asyncio.wait_for(both, seconds(15))
    rig.api.ended(uni_id).set()
    unplayed = await asyncio.wait_for(uni, seconds(15))

    received = played.received
    assert [m["event"] for m in received] == ["media", "mark", "clear"]
    assert len(base64.b64decode(received[0]["media"]["payload"])) == 800  # 100 ms of PCMU
    assert received[1]["mark"] == {"name": "greeting"}
    assert played.close_code == 1000
    assert unplayed.received == []
