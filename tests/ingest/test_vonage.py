"""Vonage on real parts: the shared token at the handshake (401; unset = refused), a call
through ingest → Kafka → the transcriber, every sample in Kafka with contiguous ``seq``,
DTMF, socket playback (20 ms frames, notify, clear) and end stream; join then end through the
Voice API simulator (``PUT /v1/calls/{uuid}``, a Bearer application JWT it verifies with the
public key; 404 on a hang-up = already over); the settings of the application's key."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError
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
from tests.ingest.test_control import command, owned
from tests.ingest.test_providers_e2e import by_role
from tests.ingest.vonage_keys import VONAGE_APPLICATION_ID, key_pair
from workers.ingest.control import EndStream, PlayPrompt, StopPlayback
from workers.ingest.worker import provider_apis
from workers.settings import IngestSettings
from workers.simulate.tracks import TrackCall
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


def live_call(rig: ProviderRig, call_uuid: str) -> asyncio.Task[TrackCall]:
    """A real-time call that goes on until the Voice API simulator records a hang-up."""
    return asyncio.create_task(simulate_vonage(
        rig.ws_base + "/vonage", SPEECH / "call_stereo_8k.wav", rate=8000, call_uuid=call_uuid,
        token=VONAGE_TOKEN, until=rig.api.ended(call_uuid)))


def jwt_claims(authorization: str | None) -> dict[str, object]:
    assert authorization is not None and authorization.startswith("Bearer ")
    token = authorization.removeprefix("Bearer ")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims: dict[str, object] = jwt.decode(token, key_pair()[1], algorithms=["RS256"])
    return claims


async def test_join_then_end_a_vonage_call(rig: ProviderRig) -> None:
    call_uuid = str(uuid.uuid4())
    call = live_call(rig, call_uuid)
    await owned(rig, call_uuid)
    await asyncio.sleep(0.5)  # some audio before the join
    await command(rig, call_uuid, "client:joinCall", "join-1")
    [transfer] = await rig.api.wait_for(1, call_id=call_uuid)
    assert (transfer.provider, transfer.action, transfer.method, transfer.path) == (
        "vonage", "transfer", "PUT", f"/v1/calls/{call_uuid}")
    # The rig sets CALLSCRIBE_TRANSFER_HOOK_URL: the NCCO there dials the target.
    [hook] = transfer.body["destination"]["url"]
    assert transfer.body["destination"]["type"] == "ncco" and "%2B15550009999" in hook
    joined = (await call_events(rig.settings.bootstrap, rig.worker.topics, call_uuid,
                                until="call.joined"))[-1]
    assert joined["role"] == "user"

    await command(rig, call_uuid, "client:endCall", "end-1")
    await asyncio.wait_for(call, seconds(15))  # the hang-up stopped the simulator
    actions = await rig.api.wait_for(2, call_id=call_uuid)
    assert [(a.action, a.method, a.body) for a in actions][1] == (
        "hangup", "PUT", {"action": "hangup"})
    claims = [jwt_claims(a.authorization) for a in actions]
    assert {c["application_id"] for c in claims} == {VONAGE_APPLICATION_ID}
    assert claims[0]["jti"] != claims[1]["jti"]  # signed anew for each request
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_uuid)
    assert [e["type"] for e in events] == ["call.started", "call.joined", "call.ended"]
    assert events[-1]["reason"] == "hangup"


async def test_a_refused_join_and_a_hangup_of_an_ended_call(rig: ProviderRig) -> None:
    call_uuid = str(uuid.uuid4())
    rig.api.refuse.add(call_uuid)  # answered 404 Not Found
    call = live_call(rig, call_uuid)
    await owned(rig, call_uuid)
    await command(rig, call_uuid, "client:joinCall", "j")
    failed = (await call_events(rig.settings.bootstrap, rig.worker.topics, call_uuid,
                                until="call.control_failed"))[-1]
    assert (failed["commandId"], failed["retriable"]) == ("j", False)
    assert "404: Not Found" in failed["description"]
    await command(rig, call_uuid, "client:endCall", "e")
    await rig.api.wait_for(2, call_id=call_uuid)
    await asyncio.sleep(0.3)  # time for a wrong call.control_failed to show up
    rig.api.ended(call_uuid).set()  # the call really ended: the stream stops
    await asyncio.wait_for(call, seconds(15))
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call_uuid)
    assert [e["type"] for e in events] == ["call.started", "call.control_failed", "call.ended"]
    assert events[-1]["reason"] == "hangup"


async def test_socket_commands_and_rest_control_without_credentials(rig: ProviderRig) -> None:
    call_uuid = str(uuid.uuid4())
    task = asyncio.create_task(simulate_vonage(
        rig.ws_base + "/vonage", SPEECH / "caller.wav", rate=8000, call_uuid=call_uuid,
        token=VONAGE_TOKEN, realtime=True))
    handle = await asyncio.wait_for(rig.worker.registry.wait(call_uuid), seconds(10))
    configured = rig.worker.control.apis
    rig.worker.control.apis = provider_apis(rig.settings.model_copy(update={
        "vonage_application_id": None, "vonage_private_key": None}))
    try:
        await command(rig, call_uuid, "client:endCall", "e1")
        failed = (await call_events(rig.settings.bootstrap, rig.worker.topics, call_uuid,
                                    until="call.control_failed"))[-1]
    finally:
        rig.worker.control.apis = configured
    assert "CALLSCRIBE_VONAGE_APPLICATION_ID is not set" in failed["description"]
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


def test_the_private_key_comes_from_the_variable_or_a_file(tmp_path: Path) -> None:
    private = key_pair()[0]
    direct = IngestSettings(vonage_application_id="app", vonage_private_key=private)
    key_file = tmp_path / "private.key"
    key_file.write_text(private)
    mounted = IngestSettings(vonage_application_id="app", vonage_private_key_file=str(key_file))
    assert direct.vonage_private_key is not None and mounted.vonage_private_key is not None
    assert mounted.vonage_private_key.get_secret_value() == private
    assert provider_apis(mounted).vonage_private_key == private
    assert "PRIVATE" not in repr(direct)
    blank = IngestSettings(vonage_application_id="", vonage_private_key=" ",
                           vonage_private_key_file="")
    assert blank.vonage_private_key is None and blank.vonage_application_id is None


@pytest.mark.parametrize(("values", "message"), [
    ({"vonage_private_key": "key-xyz", "vonage_private_key_file": "/k"}, "not both"),
    ({"vonage_private_key_file": "/nonexistent/private.key"}, "cannot read it"),
    ({"vonage_application_id": "app", "vonage_private_key": "-----BEGIN nonsense"},
     "not an unencrypted PEM private key"),
    ({"vonage_private_key": "key-xyz"}, "PEM"),
    ({"vonage_application_id": "app"}, "or neither"),
])
def test_bad_vonage_credentials_are_refused_at_start(values: dict[str, str],
                                                     message: str) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        IngestSettings(**values)  # type: ignore[arg-type]  # pydantic checks the values
    assert "nonsense" not in str(refused.value) and "xyz" not in str(refused.value)
