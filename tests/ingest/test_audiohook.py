"""Genesys AudioHook on real parts: the handshake's API key and message signature (401),
a stereo session through ingest → Kafka → the transcriber with the right roles and its
finals back to the session as transcript ``event``s on the right channel, every sample
in Kafka with contiguous ``seq`` (a discarded stretch filled, a paused one not), ping/pong
and close/closed in order, a connection probe, and client:endCall as ``disconnect``."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import FIXTURES, seconds
from tests.ingest.conftest import AUDIOHOOK_KEY, AUDIOHOOK_SECRET, ProviderRig
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
from workers.broker import EmbeddedBroker
from workers.ingest.dialects.audiohook import format_ms
from workers.ingest.server import IngestServer
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.records import Topics
from workers.simulate.audiohook import simulate_audiohook

SPEECH = FIXTURES / "speech"
STEREO = SPEECH / "call_stereo_8k.wav"


@pytest.fixture(scope="module")
async def aux(broker: EmbeddedBroker) -> AsyncIterator[tuple[AIOKafkaProducer, Topics]]:
    topics = Topics(f"tah{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, topics.all(), partitions=2)
    producer = new_producer(broker.bootstrap, client_id="test-audiohook")
    await start_producer(producer)
    try:
        yield producer, topics
    finally:
        await producer.stop()


async def status_of(url: str, headers: dict[str, str]) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=seconds(5), additional_headers=headers):
            pass
    return refused.value.response.status_code


async def test_the_handshake_needs_the_key_and_a_good_signature(
        aux: tuple[AIOKafkaProducer, Topics]) -> None:
    producer, topics = aux
    unset = IngestServer(producer=producer, topics=topics, host="127.0.0.1", port=0,
                         allow_anonymous=True)
    await unset.start()
    try:  # no key configured: refused even though anonymous connections are allowed
        assert "/audiohook" in unset.refused_paths()
        assert "/audiohook" not in unset.anonymous_paths()
        url = f"ws://127.0.0.1:{unset.port}/audiohook"
        assert await status_of(url, {"X-API-KEY": "anything"}) == 401
    finally:
        await unset.drain(0)
    server = IngestServer(producer=producer, topics=topics, host="127.0.0.1", port=0,
                          audiohook_api_key=AUDIOHOOK_KEY,
                          audiohook_client_secret=AUDIOHOOK_SECRET)
    await server.start()
    try:
        url = f"ws://127.0.0.1:{server.port}/audiohook"
        assert await status_of(url, {}) == 401
        assert await status_of(url, {"X-API-KEY": "wrong"}) == 401
        assert await status_of(url, {"X-API-KEY": AUDIOHOOK_KEY}) == 401  # unsigned
        other = base64.b64encode(b"not the secret").decode()
        with pytest.raises(InvalidStatus) as refused:
            await simulate_audiohook(url, STEREO, api_key=AUDIOHOOK_KEY, client_secret=other,
                                     realtime=False)
        assert refused.value.response.status_code == 401
        # Signed with the secret: a probe is answered (opened, closed) and starts no call.
        call = await simulate_audiohook(url, STEREO, api_key=AUDIOHOOK_KEY,
                                        client_secret=AUDIOHOOK_SECRET, realtime=False,
                                        conversation_id="00000000-0000-0000-0000-000000000000")
        assert [m["type"] for m in call.received] == ["opened", "closed"]
        assert call.faults == [] and call.close_code == 1000
        assert len(server.registry) == 0
    finally:
        await server.drain(0)


async def test_a_stereo_session_is_transcribed_with_roles(rig: ProviderRig) -> None:
    call = await simulate_audiohook(
        rig.ws_base + "/audiohook", STEREO, api_key=AUDIOHOOK_KEY,
        client_secret=AUDIOHOOK_SECRET, realtime=False, ping_every_s=2.0,
        await_transcripts_s=seconds(60))
    assert call.faults == [], call.faults  # the events' seq follows every other message's
    kinds = [m["type"] for m in call.received]
    assert kinds[0] == "opened" and kinds[-1] == "closed"
    assert set(kinds[1:-1]) == {"pong", "event"} and kinds.count("pong") >= 2
    assert call.selected["channels"] == ["external", "internal"]
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, call.call_id)
    started = events[0]
    assert started["provider"] == "audiohook" and started["roles"] == ["other", "assistant"]
    assert started["metadata"]["sessionId"] == call.session_id
    assert events[-1]["type"] == "call.ended" and events[-1]["reason"] == "closed"
    chunks = await audio_of(rig.settings.bootstrap, rig.worker.topics, call.call_id, 2)
    audio = assert_contiguous(chunks, 2)
    for channel, name in ((0, "external"), (1, "internal")):
        assert len(audio[channel]) // 2 == call.samples_sent[name]
    said = by_role(await transcript_of(rig.settings.bootstrap, rig.worker.topics,
                                       call.call_id))
    assert set(said) == {"other", "assistant"}
    for channel, role in ((0, "other"), (1, "assistant")):
        assert wer(reference("call_stereo_8k.wav", channel), said[role]) <= 0.2, said
    # The finals came back to Genesys as transcript events, each on its channel (external =
    # 0, internal = 1, as selected), at the record's place on the audio timeline.
    records = await transcript_of(rig.settings.bootstrap, rig.worker.topics, call.call_id)
    finals = {(r["channel"], r["msg"]): r for r in records if r["type"] == "transcript"}
    heard = call.transcripts()
    assert {channel for channel, _ in heard} == {0, 1}, heard
    for message in call.messages("event"):
        data = message["parameters"]["entities"][0]["data"]
        text = data["alternatives"][0]["interpretations"][0]["transcript"]
        record = finals[(data["channelId"], text)]
        assert data["isFinal"] is True
        assert data["offset"] == format_ms(record["audioStartMs"])
        assert data["duration"] == format_ms(record["audioEndMs"] - record["audioStartMs"])


async def test_discarded_audio_is_a_gap_and_paused_audio_is_not(rig: ProviderRig) -> None:
    call = await simulate_audiohook(
        rig.ws_base + "/audiohook", SPEECH / "caller.wav", channels="external",
        api_key=AUDIOHOOK_KEY, client_secret=AUDIOHOOK_SECRET, realtime=False,
        discard_at_s=(1.0, 0.5), pause_at_s=(2.0, 1.0))
    assert call.faults == [] and call.selected["channels"] == ["external"]
    chunks = await audio_of(rig.settings.bootstrap, rig.worker.topics, call.call_id, 1)
    [audio] = assert_contiguous(chunks, 1).values()
    # Every sample sent, plus the discarded half second as silence; the paused second is
    # not on the timeline. Our position is the one Genesys reports.
    assert len(audio) // 2 == call.samples_sent["external"] + 4000
    assert round(call.position_s * 8000) == len(audio) // 2
    assert audio[8000 * 2:8000 * 2 + 8000] == bytes(8000)
    assert {c.role for c in chunks} == {"other"}


async def test_end_call_is_a_disconnect_and_join_is_refused(rig: ProviderRig) -> None:
    conversation = str(uuid.uuid4())
    session = asyncio.create_task(simulate_audiohook(
        rig.ws_base + "/audiohook", STEREO, conversation_id=conversation,
        api_key=AUDIOHOOK_KEY, client_secret=AUDIOHOOK_SECRET, realtime=True))
    await asyncio.wait_for(rig.worker.registry.wait(conversation), seconds(10))
    await command(rig, conversation, "client:joinCall", "j1")
    failed = (await call_events(rig.settings.bootstrap, rig.worker.topics, conversation,
                                until="call.control_failed"))[-1]
    assert failed["commandId"] == "j1" and "no REST call control" in failed["description"]
    await command(rig, conversation, "client:endCall", "e1")
    call = await asyncio.wait_for(session, seconds(15))
    kinds: list[Any] = [m["type"] for m in call.received]
    assert kinds[0] == "opened" and kinds[-2:] == ["disconnect", "closed"], kinds
    disconnect = call.messages("disconnect")[0]
    assert disconnect["parameters"]["reason"] == "completed"
    assert call.faults == [] and call.samples_sent["external"] < 8000 * 10
    events = await call_events(rig.settings.bootstrap, rig.worker.topics, conversation)
    assert [e["type"] for e in events] == ["call.started", "call.control_failed", "call.ended"]
    assert events[-1]["reason"] == "hangup"
