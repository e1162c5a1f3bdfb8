"""``schemas/asyncapi.yaml`` parses, every reference in it resolves (to the JSON Schemas beside
it), it declares every liveCalls and listen message, and every message seen on a real socket is
declared and validates against the payload schema the document names for it.

The messages seen are those of one call through a bridge of this module's own (so the module
passes when run alone), plus what the other bridge tests saw (``tests.bridge.wire.SEEN``) when
they ran first (``tests/bridge/conftest.py`` runs this module last)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer
from jsonschema import Draft202012Validator
from websockets.asyncio.client import ClientConnection, connect

from tests.bridge.wire import SEEN, saw
from tests.conftest import seconds
from tests.schema_util import FORMAT_CHECKER, SCHEMA_DIR, load, registry
from workers.bridge import livecalls as lc
from workers.bridge.client import open_live_call, request_listen_url
from workers.bridge.hub import CallHub
from workers.bridge.server import Bridge
from workers.bridge.tokens import TokenIssuer
from workers.broker import EmbeddedBroker
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.records import AudioChunk, CallStarted, Topics, dumps

DOC_PATH = SCHEMA_DIR / "asyncapi.yaml"
TS = "2026-01-15T10:30:00.123Z"
#: One message of each type, from the builders the bridge uses.
BUILT: dict[str, dict[str, Any]] = {
    "ack": lc.ack("c-1"),
    "event:start": lc.event_start("+14155550123", TS),
    "event:end": lc.event_end("The user joined the call; the screening phase has ended."),
    "event:callEnd": lc.event_call_end(TS),
    "transcript": lc.transcript("Hello.", "other", 1.5),
    "transcript:interim": lc.transcript_interim("Hel", "other", 1.5, revision=0, stable=""),
    "error": lc.error("The command failed; the call continues as before."),
    "client:joinCall": {"type": "client:joinCall", "id": "j-1"},
    "client:endCall": {"type": "client:endCall", "id": "e-1"},
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text())
    return loaded


def pointer(node: Any, path: str) -> Any:
    for part in filter(None, path.split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def messages(doc: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    """The channel's messages by their ``name`` (the liveCalls ``type``)."""
    out = {}
    for entry in doc["channels"][channel]["messages"].values():
        message = pointer(doc, entry["$ref"].removeprefix("#"))
        out[message["name"]] = message
    return out


def payload_validator(message: dict[str, Any]) -> Draft202012Validator:
    """A validator for the JSON Schema the message's payload refers to."""
    file, _, path = message["payload"]["$ref"].partition("#")
    schema_id = load(file.removeprefix("./").removesuffix(".schema.json"))["$id"]
    return Draft202012Validator({"$ref": f"{schema_id}#{path}"}, registry=registry(),
                                format_checker=FORMAT_CHECKER)


def test_it_is_asyncapi_3_with_both_channels(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["liveCalls"]["address"] == lc.PATH
    assert doc["channels"]["listen"]["address"] == "/v1/listen/{token}"
    assert {o["action"] for o in doc["operations"].values()} == {"send", "receive"}
    assert doc["info"]["title"] and doc["info"]["version"]


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    found = refs(doc)
    assert len(found) > 20
    for ref in found:
        file, _, path = ref.partition("#")
        target = doc if not file else json.loads((SCHEMA_DIR / file).read_text())
        assert pointer(target, path) is not None, ref


def test_every_livecalls_message_type_is_declared(doc: dict[str, Any]) -> None:
    declared = set(messages(doc, "liveCalls"))
    server_types = set(load("livecalls-server")["properties"]["type"]["enum"])
    client_types = set(load("livecalls-client")["properties"]["type"]["enum"])
    assert declared == server_types | client_types
    assert set(messages(doc, "listen")) == {"audio"}


@pytest.mark.parametrize("kind", sorted(BUILT))
def test_built_messages_validate_against_the_declared_payload(doc: dict[str, Any],
                                                              kind: str) -> None:
    payload_validator(messages(doc, "liveCalls")[kind]).validate(BUILT[kind])


def test_messages_seen_on_the_wire_are_declared_and_valid(
        doc: dict[str, Any], wire: dict[str, dict[str, Any]]) -> None:
    live_calls = messages(doc, "liveCalls")
    for direction in ("server", "client"):
        for kind, message in wire[direction].items():
            assert kind in live_calls, f"{direction} message type {kind} is not declared"
            payload_validator(live_calls[kind]).validate(message)
    assert {"ack", "error", "event:start", "event:end", "transcript", "transcript:interim",
            "event:callEnd"} <= set(wire["server"])
    assert {"client:joinCall", "client:endCall"} <= set(wire["client"])
    assert set(wire["listen"]) <= set(messages(doc, "listen"))
    assert wire["listen"], "no listen audio was seen"


# --------------------------------------------------------------------------- one call


@pytest.fixture(scope="module")
async def wire(broker: EmbeddedBroker) -> AsyncIterator[dict[str, dict[str, Any]]]:
    """One call through a bridge of this module's own, on real sockets: both client commands
    and a malformed one, every server message type but ``assist``, and listen audio; what was
    seen is added to ``SEEN``, which is returned."""
    topics = Topics(f"t{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, (*topics.all(), topics.transcripts_redacted),
                        partitions=1)
    api_key, issuer = "asyncapi-" + secrets.token_hex(8), TokenIssuer(secrets.token_urlsafe(32))
    bridge = Bridge(bootstrap=broker.bootstrap, topics=topics, api_keys=frozenset({api_key}),
                    issuer=issuer, hub=CallHub())
    runner = web.AppRunner(bridge.web_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    producer = new_producer(broker.bootstrap, client_id="test-asyncapi")
    try:
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started
        await start_producer(producer)
        call = OneCall(producer, topics, f"asyncapi-{secrets.token_hex(4)}")
        async with asyncio.timeout(seconds(30)):
            await call.run(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", api_key,
                           issuer.mint(call.call_id)[0])
        yield SEEN
    finally:
        await producer.stop()
        await runner.cleanup()


class OneCall:
    """Produces what ingest, the transcriber and the assist worker would for one call, and
    talks to the bridge as a liveCalls client and a live listener."""

    def __init__(self, producer: AIOKafkaProducer, topics: Topics, call_id: str) -> None:
        self.producer = producer
        self.topics = topics
        self.call_id = call_id

    async def produce(self, topic: str, value: bytes, **kwargs: Any) -> None:
        await self.producer.send_and_wait(topic, key=self.call_id.encode(), value=value,
                                          **kwargs)

    async def transcripts(self, kind: str, message: dict[str, Any]) -> None:
        record = {"v": 1, "callId": self.call_id, "id": f"{self.call_id}:{kind}", **message}
        await self.produce(self.topics.transcripts_redacted, dumps(record))

    async def run(self, http: str, ws_base: str, api_key: str, token: str) -> None:
        await self.produce(self.topics.calls, dumps(CallStarted(
            call_id=self.call_id, provider="jambonz", from_="+15550100", to="+15550199",
            direction="inbound", rate=16000, channels=1, mix="mono",
            roles=("other",)).to_json()))
        client = await open_live_call(ws_base, token, api_key, interim=True,
                                      wait_s=seconds(10))
        for frame in ({"type": "client:joinCall", "id": "j-1"},
                      {"type": "client:endCall", "id": "e-1"}, "not json"):
            await self.send(client, frame)
        await self.listen(http, api_key)
        await self.transcripts("start", lc.event_start("+15550100", "2026-01-15T10:30:00Z"))
        await self.transcripts("0:0", lc.transcript_interim("Hel", "other", 0.5, revision=0,
                                                             stable=""))
        await self.transcripts("0:0", lc.transcript("Hello.", "other", 0.5))
        await self.produce(self.topics.calls, dumps({
            "v": 1, "type": "call.joined", "callId": self.call_id, "commandId": "j-1",
            "channels": [0], "role": "user", "timestamp": "2026-01-15T10:30:01Z"}))
        async for raw in client:  # until the bridge closes it after event:callEnd
            message = json.loads(raw)
            saw("server", message)
            if message["type"] == "event:end":  # the calls topic is read apart: wait for it
                await self.transcripts("callEnd", lc.event_call_end("2026-01-15T10:30:02Z"))

    @staticmethod
    async def send(client: ClientConnection, frame: dict[str, Any] | str) -> None:
        """Send a client frame; the answer (``ack`` or ``error``) comes next."""
        if isinstance(frame, dict):
            saw("client", frame)
        await client.send(frame if isinstance(frame, str) else json.dumps(frame))
        saw("server", json.loads(await client.recv()))

    async def listen(self, http: str, api_key: str) -> None:
        """A live listener hears the call's next audio chunk (its last: the call's audio
        ends, and the listener is closed)."""
        status, body = await request_listen_url(http, self.call_id, api_key)
        assert status == 200, body
        async with connect(body["data"]["url"]) as listener:
            chunk = AudioChunk(call_id=self.call_id, channel=0, seq=0, rate=16000, role="other",
                               t_ms=0, pcm=bytes(3200), last=True)
            await self.produce(self.topics.audio, chunk.pcm, headers=chunk.headers())
            frame = await listener.recv()
            assert isinstance(frame, bytes) and frame
            saw("listen", frame)
