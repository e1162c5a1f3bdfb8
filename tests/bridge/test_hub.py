"""The pure :class:`CallHub`: de-duplication, replay after a resume id, bounded history and
call count, per-subscriber overflow, and when a call stops being live."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from workers.bridge.client import resume_position
from workers.bridge.hub import CallHub, Outbox, Subscriber, dedupe_key
from workers.errors import OutboxOverflow


def record(call_id: str, n: int, kind: str = "transcript") -> dict[str, Any]:
    if kind == "event:start":
        return {"type": kind, "callId": call_id, "id": f"{call_id}:start", "phone": "",
                "timestamp": "2026-01-01T00:00:00.000Z"}
    if kind == "event:callEnd":
        return {"type": kind, "callId": call_id, "id": f"{call_id}:callEnd",
                "timestamp": "2026-01-01T00:01:00.000Z"}
    return {"type": kind, "callId": call_id, "id": f"{call_id}:0:{n}", "msg": f"words {n}",
            "role": "other", "offset": n / 10}


def drain(subscriber: Subscriber) -> list[dict[str, Any]]:
    out = []
    while (item := subscriber.outbox.get_nowait()) is not None:
        out.append(item)
    return out


def slow_closes() -> float:
    return REGISTRY.get_sample_value("callscribe_bridge_slow_client_closes_total") or 0.0


def test_records_with_a_seen_id_are_dropped() -> None:
    hub = CallHub()
    subscriber, replay = hub.subscribe("a", resume_after=None, maxsize=10)
    assert replay == []
    first = record("a", 1)
    hub.on_transcript_record(first)
    hub.on_transcript_record(dict(first))  # a redelivery
    hub.on_transcript_record(record("a", 2))
    hub.on_transcript_record(record("a", 1))
    assert drain(subscriber) == [record("a", 1), record("a", 2)]
    _, replay = hub.subscribe("a", resume_after=None, maxsize=10)
    assert [r["id"] for r in replay] == ["a:0:1", "a:0:2"]


def test_replay_starts_after_the_resume_id() -> None:
    hub = CallHub()
    hub.on_transcript_record(record("a", 0, "event:start"))
    for n in range(1, 5):
        hub.on_transcript_record(record("a", n))
    _, replay = hub.subscribe("a", resume_after="a:0:2", maxsize=10)
    assert [r["id"] for r in replay] == ["a:0:3", "a:0:4"]
    _, replay = hub.subscribe("a", resume_after="a:0:4", maxsize=10)
    assert replay == []
    # An id the hub does not know (from another call, or long gone): the whole history.
    _, replay = hub.subscribe("a", resume_after="b:0:2", maxsize=10)
    assert [r["id"] for r in replay] == ["a:start", "a:0:1", "a:0:2", "a:0:3", "a:0:4"]


def test_history_is_bounded_and_keeps_the_newest() -> None:
    hub = CallHub(max_messages=3)
    for n in range(6):
        hub.on_transcript_record(record("a", n))
    _, replay = hub.subscribe("a", resume_after=None, maxsize=10)
    assert [r["id"] for r in replay] == ["a:0:3", "a:0:4", "a:0:5"]
    assert hub.live_calls() == [{"callId": "a", "messages": 3}]


def test_a_slow_subscriber_overflows_without_affecting_another() -> None:
    hub = CallHub()
    slow, _ = hub.subscribe("a", resume_after=None, maxsize=2)
    fast, _ = hub.subscribe("a", resume_after=None, maxsize=2)
    closes = slow_closes()
    received: list[dict[str, Any]] = []
    for n in range(6):
        hub.on_transcript_record(record("a", n))
        received += drain(fast)
    assert [r["id"] for r in received] == [f"a:0:{n}" for n in range(6)]
    assert not fast.overflowed
    assert slow.overflowed
    with pytest.raises(OutboxOverflow):  # nothing after the overflow: the client is closed
        drain(slow)
    assert slow_closes() == closes + 1  # counted once, not once per record it missed


def test_an_unsubscribed_client_gets_nothing_more() -> None:
    hub = CallHub()
    subscriber, _ = hub.subscribe("a", resume_after=None, maxsize=10)
    hub.unsubscribe(subscriber)
    hub.on_transcript_record(record("a", 1))
    assert len(subscriber.outbox) == 0


def test_eviction_drops_the_oldest_unwatched_calls_and_never_a_watched_one() -> None:
    hub = CallHub(max_calls=2)
    watcher, _ = hub.subscribe("a", resume_after=None, maxsize=100)
    for call in ("b", "c", "d", "e"):
        hub.on_call_record({"type": "call.started", "callId": call})
    live = {c["callId"] for c in hub.live_calls()}
    assert "a" in live and hub.is_live("a")
    # Bounded even while the oldest call is watched: the unwatched ones after it go first.
    assert live == {"a", "e"}
    hub.on_transcript_record(record("a", 1))
    assert [r["id"] for r in drain(watcher)] == ["a:0:1"]


def test_a_new_call_subscribed_when_every_other_is_watched_is_kept() -> None:
    hub = CallHub(max_calls=1)
    hub.subscribe("a", resume_after=None, maxsize=10)
    subscriber, _ = hub.subscribe("b", resume_after=None, maxsize=10)
    hub.on_transcript_record(record("b", 1))
    assert [r["id"] for r in drain(subscriber)] == ["b:0:1"]
    assert {c["callId"] for c in hub.live_calls()} == {"a", "b"}


def test_eviction_of_an_unwatched_call_when_a_newer_one_is_watched() -> None:
    hub = CallHub(max_calls=2)
    hub.on_call_record({"type": "call.started", "callId": "old"})
    hub.subscribe("watched", resume_after=None, maxsize=10)
    hub.on_call_record({"type": "call.started", "callId": "new"})
    assert {c["callId"] for c in hub.live_calls()} == {"watched", "new"}
    assert not hub.is_live("old")


def test_call_started_makes_a_call_known_with_its_info() -> None:
    hub = CallHub()
    assert not hub.is_live("a")
    hub.on_call_record({"type": "call.started", "callId": "a", "from": "+15083084809"})
    hub.on_call_record({"type": "dtmf", "callId": "zzz", "digit": "1"})
    assert hub.is_live("a") and not hub.is_live("zzz")
    assert hub.live_calls() == [{"type": "call.started", "callId": "a", "from": "+15083084809",
                                 "messages": 0}]


def test_a_call_is_not_live_after_event_call_end() -> None:
    hub = CallHub()
    hub.on_call_record({"type": "call.started", "callId": "a"})
    hub.on_transcript_record(record("a", 0, "event:start"))
    hub.on_call_record({"type": "call.ended", "callId": "a"})
    assert hub.is_live("a")  # call.ended alone: transcripts may still be on the way
    subscriber, _ = hub.subscribe("a", resume_after=None, maxsize=10)
    hub.on_transcript_record(record("a", 1))
    hub.on_transcript_record(record("a", 0, "event:callEnd"))
    assert not hub.is_live("a")
    assert hub.live_calls() == []
    assert [r["type"] for r in drain(subscriber)] == ["transcript", "event:callEnd"]


# --------------------------------------------------------------------------- control outcomes


def test_call_joined_becomes_one_event_end_in_the_history() -> None:
    hub = CallHub()
    hub.on_call_record({"type": "call.started", "callId": "a"})
    subscriber, _ = hub.subscribe("a", resume_after=None, maxsize=10)
    hub.on_call_record({"type": "call.joined", "callId": "a", "commandId": "j1"})
    hub.on_call_record({"type": "call.joined", "callId": "a", "commandId": "j1"})  # redelivery
    hub.on_call_record({"type": "call.joined", "callId": "a", "commandId": "j2"})  # a 2nd join
    sent = drain(subscriber)
    assert [(r["type"], r["id"]) for r in sent] == [("event:end", "a:end")]
    assert sent[0]["msg"] and sent[0]["callId"] == "a"
    _, replay = hub.subscribe("a", resume_after=None, maxsize=10)
    assert [r["type"] for r in replay] == ["event:end"]


def test_call_control_failed_becomes_an_error_per_command() -> None:
    hub = CallHub()
    hub.on_call_record({"type": "call.started", "callId": "a"})
    subscriber, _ = hub.subscribe("a", resume_after=None, maxsize=10)
    failed = {"type": "call.control_failed", "callId": "a", "commandId": "e1",
              "command": "client:endCall", "reason": "provider said 404\nnot found"}
    hub.on_call_record(failed)
    hub.on_call_record(dict(failed))
    hub.on_call_record({"type": "call.control_failed", "callId": "a", "commandId": "e2"})
    hub.on_call_record({"type": "call.control_failed", "callId": "a", "commandId": "j3",
                        "command": "client:joinCall", "retriable": True,
                        "description": "transfer timed out."})
    sent = drain(subscriber)
    assert [r["id"] for r in sent] == ["a:control_failed:e1", "a:control_failed:e2",
                                       "a:control_failed:j3"]
    assert sent[0]["description"] == ("The client:endCall command e1 could not be carried out: "
                                      "provider said 404 not found. The call continues as "
                                      "before.")
    assert sent[1]["description"].startswith("The command e2 could not be carried out: no ")
    assert sent[2]["description"] == ("The client:joinCall command j3 could not be carried "
                                      "out: transfer timed out. It may work if sent again "
                                      "with a new id.")


def test_call_state_for_live_listen() -> None:
    hub = CallHub()
    assert hub.call_state("a") == "unknown"
    hub.subscribe("a", resume_after=None, maxsize=1)  # a view without call.started
    assert hub.call_state("a") == "unknown"
    hub.on_call_record({"type": "call.started", "callId": "a"})
    assert hub.call_state("a") == "live"
    hub.on_call_record({"type": "call.ended", "callId": "a"})
    assert hub.call_state("a") == "ended" and hub.is_live("a")
    hub.on_transcript_record(record("b", 0, "event:start"))
    assert hub.call_state("b") == "live"
    hub.on_transcript_record(record("b", 0, "event:callEnd"))
    assert hub.call_state("b") == "ended"


def test_commands_are_remembered_per_call_and_bounded() -> None:
    hub = CallHub()
    assert hub.remember_command("a", "x", "client:joinCall") is None
    assert hub.remember_command("a", "x", "client:joinCall") == "client:joinCall"
    assert hub.remember_command("a", "x", "client:endCall") == "client:joinCall"
    assert hub.remember_command("b", "x", "client:endCall") is None  # another call
    hub.forget_command("a", "x")
    assert hub.remember_command("a", "x", "client:endCall") is None
    for n in range(300):
        hub.remember_command("c", f"id-{n}", "client:joinCall")
    assert hub.remember_command("c", "id-0", "client:joinCall") is None  # the oldest went
    assert hub.remember_command("c", "id-299", "client:joinCall") == "client:joinCall"


# --------------------------------------------------------------------------- interims and resume


def interim(call_id: str, n: int, revision: int) -> dict[str, Any]:
    return {"type": "transcript:interim", "callId": call_id, "id": f"{call_id}:0:{n}",
            "msg": f"words {n} rev {revision}", "role": "other", "offset": n / 10,
            "revision": revision, "stable": ""}


def test_resume_after_an_interim_names_its_revision() -> None:
    hub = CallHub()
    stream = [interim("a", 1, 0), interim("a", 1, 1), record("a", 1), interim("a", 2, 0),
              record("a", 2)]
    for item in stream:
        hub.on_transcript_record(item)
    keys = [dedupe_key(r) for r in stream]
    assert keys == ["a:0:1#0", "a:0:1#1", "a:0:1", "a:0:2#0", "a:0:2"]
    for index, key in enumerate(keys):
        _, replay = hub.subscribe("a", resume_after=key, maxsize=10)
        assert replay == stream[index + 1:], key
    assert [resume_position(m) for m in stream] == keys
    assert resume_position({"type": "ack", "ackId": "x"}) is None


def test_outbox_close_hands_out_the_rest_then_none() -> None:
    outbox: Outbox[int] = Outbox(3)
    outbox.put(1)
    outbox.put(2)
    outbox.close()
    assert not outbox.put(3)
    assert [outbox.get_nowait(), outbox.get_nowait(), outbox.get_nowait()] == [1, 2, None]
    with pytest.raises(ValueError, match="maxsize"):
        Outbox(0)


async def test_outbox_wakes_its_reader_and_calls_on_overflow_once() -> None:
    outbox: Outbox[int] = Outbox(1)
    calls: list[str] = []
    outbox.on_overflow = lambda: calls.append("overflow")
    getter = asyncio.create_task(outbox.get())
    await asyncio.sleep(0)
    outbox.put(7)
    assert await getter == 7
    outbox.put(1)
    outbox.put(2)
    outbox.put(3)
    assert calls == ["overflow"]
    with pytest.raises(OutboxOverflow):
        await outbox.get()
