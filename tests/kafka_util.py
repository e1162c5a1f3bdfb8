"""Reading a call's records back from the session's broker, as a downstream consumer would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.conftest import seconds


async def read_records(bootstrap: str, topic: str, call_id: str, *,
                       until: Callable[[list[Any]], bool], wait_s: float = seconds(20),
                       ) -> list[Any]:
    """Every record of ``call_id`` on ``topic`` from the beginning, until ``until(records)``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(wait_s):
            while not until(found):
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    found += [m for m in batch if m.key == call_id.encode()]
    finally:
        await consumer.stop()
    return found
