"""Logging: a Kafka library's retry loop is logged once a minute with a count."""

from __future__ import annotations

import io
import logging

from workers.logs import RepeatFilter


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
