"""The bridge publishes which calls its clients watch with ``interim=true`` (interest topic),
on the real embedded broker: once when the first such client comes, again while watched,
``watching=false`` when the last goes; clients without interims publish nothing."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.conftest import seconds
from workers.bridge.client import open_live_call
from workers.bridge.hub import CallHub
from workers.bridge.interest import Watchers
from workers.bridge.server import Bridge
from workers.bridge.tokens import TokenIssuer
from workers.broker import EmbeddedBroker
from workers.kafka import ensure_topics
from workers.records import InterimInterest, Topics
from workers.simulate.provider_api import serve

INTERVAL_S = 0.5


def test_watchers_count_clients_per_call() -> None:
    watchers = Watchers()
    assert watchers.add("a") and not watchers.add("a") and watchers.add("b")
    assert not watchers.remove("a") and watchers.remove("a")
    assert not watchers.remove("a")  # never more removals than clients
    assert watchers.calls() == ["b"]


async def _records(consumer: AIOKafkaConsumer, until: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(seconds(20)):
        while not until(found):
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                for message in batch:
                    record = json.loads(message.value)
                    assert message.key == record["callId"].encode()
                    found.append(record)
    return found


async def test_interim_clients_publish_interest(broker: EmbeddedBroker) -> None:
    topics = Topics(f"i{secrets.token_hex(3)}")
    await ensure_topics(broker.bootstrap, topics.all(), partitions=2)
    api_key, issuer = "k-" + secrets.token_hex(8), TokenIssuer(secrets.token_urlsafe(32), 60)
    bridge = Bridge(bootstrap=broker.bootstrap, topics=topics, api_keys=frozenset({api_key}),
                    issuer=issuer, hub=CallHub(), transcripts_topic=topics.transcripts,
                    interest_s=INTERVAL_S)
    runner, http = await serve(bridge.web_app(), "127.0.0.1", 0)
    base = http.replace("http://", "ws://", 1)
    watched, quiet = f"w-{secrets.token_hex(3)}", f"q-{secrets.token_hex(3)}"
    for call_id in (watched, quiet):
        bridge.hub.on_call_record({"type": "call.started", "callId": call_id})
    consumer = AIOKafkaConsumer(topics.interest, bootstrap_servers=broker.bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                fetch_max_wait_ms=20)
    await consumer.start()
    try:
        first = await open_live_call(base, issuer.mint(watched)[0], api_key, interim=True)
        second = await open_live_call(base, issuer.mint(watched)[0], api_key, interim=True)
        plain = await open_live_call(base, issuer.mint(quiet)[0], api_key)
        beats = await _records(consumer, lambda found: len(found) >= 3)
        assert {r["callId"] for r in beats} == {watched}  # not the call without interims
        for record in beats:
            interest = InterimInterest.from_json(record)
            assert interest.watching and interest.bridge == bridge.instance
            assert interest.ttl_ms == 2 * INTERVAL_S * 1000
        await first.close()
        await asyncio.sleep(2 * INTERVAL_S)  # the other client still watches
        await second.close()
        rest = await _records(consumer, lambda found: any(not r["watching"] for r in found))
        assert rest[-1]["watching"] is False and all(r["watching"] for r in rest[:-1])
        await plain.close()
    finally:
        await consumer.stop()
        await runner.cleanup()
