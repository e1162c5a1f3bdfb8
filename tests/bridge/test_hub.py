"""The pure :class:`CallHub`: de-duplication, replay after a resume id, bounded history and
call count, per-subscriber overflow, and when a call stops being live."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from workers.bridge.hub import CallHub, Subscriber


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
    while not subscriber.queue.empty():
        out.append(subscriber.queue.get_nowait())
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
    assert not fast.overflowed.is_set()
    assert slow.overflowed.is_set()
    assert [r["id"] for r in drain(slow)] == ["a:0:0", "a:0:1"]  # nothing after the overflow
    assert slow_closes() == closes + 1  # counted once, not once per record it missed


def test_an_unsubscribed_client_gets_nothing_more() -> None:
    hub = CallHub()
    subscriber, _ = hub.subscribe("a", resume_after=None, maxsize=10)
    hub.unsubscribe(subscriber)
    hub.on_transcript_record(record("a", 1))
    assert subscriber.queue.empty()


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
