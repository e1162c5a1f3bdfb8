"""Logging: a Kafka library's retry loop is logged once a minute with a count; JSON lines
about a call carry its id as a field."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from workers.errors import RecordError
from workers.kafka import decode_or_skip
from workers.logs import JsonFormatter, RepeatFilter, bind_call, call_context


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def logger_with_filter(clock: Clock) -> tuple[io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.addFilter(RepeatFilter(window_s=60.0, clock=clock))
    return out, handler


def test_a_retry_loop_is_logged_once_a_minute_with_a_count() -> None:
    clock = Clock()
    out, handler = logger_with_filter(clock)
    kafka = logging.getLogger("aiokafka.conn")
    ours = logging.getLogger("workers.transcribe.test")
    for log in (kafka, ours):
        log.addHandler(handler)
        log.propagate = False
    try:
        for attempt in range(120):  # two a second for a minute
            clock.now = attempt / 2
            kafka.error("Unable connect to node with id %s: %s", 1, f"error {attempt}")
        ours.warning("call %s: seq gap", "a")
        ours.warning("call %s: seq gap", "b")  # ours: never held back
        clock.now = 61.0
        kafka.error("Unable connect to node with id %s: %s", 1, "error 122")
        kafka.warning("Got error produce response: %s", "x")  # another template: passes
    finally:
        for log in (kafka, ours):
            log.removeHandler(handler)
            log.propagate = True
    assert out.getvalue().splitlines() == [
        "aiokafka.conn ERROR Unable connect to node with id 1: error 0",
        "workers.transcribe.test WARNING call a: seq gap",
        "workers.transcribe.test WARNING call b: seq gap",
        "aiokafka.conn ERROR Unable connect to node with id 1: error 122 "
        "(and 119 more like it in the last 61 s)",
        "aiokafka.conn WARNING Got error produce response: x",
    ]


# ------------------------------------------------------------------- the call as a field


@contextlib.contextmanager
def json_log(name: str) -> Iterator[io.StringIO]:
    """What ``name`` logs, as the JSON lines the entry points write."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(level)


def call_ids(out: io.StringIO) -> list[str | None]:
    return [json.loads(line).get("callId") for line in out.getvalue().splitlines()]


def test_json_lines_about_a_call_carry_its_id() -> None:
    log = logging.getLogger("workers.test.calls")
    with json_log(log.name) as out:
        log.info("%s call %s: started: %d Hz", "twilio", "CA1", 8000)  # the convention
        log.info("call %s channel %d: seq %d missing", "c-2", 0, 7)
        log.info("decode batch failed")  # about no call
        log.info("%d%% of call %s done", 50, "c-3")  # %% is no argument
        log.info("final %s restored", "c-4:0:120", extra={"call_id": "c-4"})
        log.info("call %s: withheld", None)
        with call_context("c-5"):
            log.info("a line that does not name its call")
            log.info("call %s: named", "c-6")  # the line's own call wins
        log.info("after the block")
    assert call_ids(out) == ["CA1", "c-2", None, "c-3", "c-4", None, "c-5", "c-6", None]


async def test_each_task_logs_about_its_own_call() -> None:
    """A call's handler binds its call once; the tasks it starts inherit it; other tasks
    (another call's handler, the one that started them) are not affected."""
    log = logging.getLogger("workers.test.tasks")
    both_bound = asyncio.Barrier(2)

    async def handler(call_id: str) -> None:
        log.info("connection opened")
        bind_call(call_id)
        await both_bound.wait()
        log.info("frame")
        await asyncio.create_task(child())

    async def child() -> None:
        log.info("child task")

    with json_log(log.name) as out:
        await asyncio.gather(handler("a"), handler("b"))
        log.info("server line")
    assert sorted(call_ids(out)[:2], key=str) == [None, None]
    assert sorted(call_ids(out)[2:6]) == ["a", "a", "b", "b"]
    assert call_ids(out)[6:] == [None]


def test_a_consumer_logs_about_the_record_s_call() -> None:
    """Records are keyed by call id: a skipped record's warning names its call."""
    log = logging.getLogger("workers.test.consumer")
    record = SimpleNamespace(topic="t.audio", partition=3, offset=42, key=b"call-7",
                             value=b"{", headers=())

    def decode(message: Any) -> object:
        log.info("decoding")
        raise RecordError("record is not JSON")

    with json_log(log.name) as out:
        assert decode_or_skip(record, decode, logger=log) is None
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["callId"] for line in lines] == ["call-7", "call-7"]
    assert lines[1]["message"] == "skipped record t.audio[3]@42: record is not JSON"
