"""What the bridge knows about calls: their messages so far, and who is watching.

Each call keeps an ordered, de-duplicated (by record ``id``), bounded history for replay. Each
subscriber has its own bounded queue; a record is offered to every queue without awaiting
anyone, so one slow client never delays another. A queue that overflows marks its subscriber
``overflowed`` (the server closes it with 1013): the overflow policy is "close the slow client",
never "drop messages silently".
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Any

from workers import metrics

log = logging.getLogger(__name__)


def dedupe_key(record: dict[str, Any]) -> str | None:
    """What makes a record unique: its ``id``, and for an interim also its ``revision`` (an
    utterance's interims and its final transcript share the utterance's id)."""
    record_id = record.get("id")
    if record_id is None:
        return None
    if record.get("type") == "transcript:interim":
        return f"{record_id}#{record.get('revision')}"
    return str(record_id)


class Subscriber:
    """One liveCalls client's queue of records (transcripts-topic dicts) to send."""

    def __init__(self, call_id: str, *, maxsize: int) -> None:
        self.call_id = call_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.overflowed = asyncio.Event()

    def offer(self, record: dict[str, Any]) -> None:
        if self.overflowed.is_set():
            return
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            metrics.BRIDGE_SLOW_CLIENT_CLOSES.inc()
            log.warning("call %s: a liveCalls client fell %d messages behind; closing it",
                        self.call_id, self.queue.maxsize)
            self.overflowed.set()


@dataclass
class CallView:
    call_id: str
    info: dict[str, Any] = field(default_factory=dict)  # the call.started record, if seen
    history: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    ids: set[str] = field(default_factory=set)
    subscribers: set[Subscriber] = field(default_factory=set)
    ended: bool = False


class CallHub:
    """Calls by id, bounded to the ``max_calls`` most recent; histories to ``max_messages``."""

    def __init__(self, *, max_calls: int = 1000, max_messages: int = 5000) -> None:
        self._max_calls = max_calls
        self._max_messages = max_messages
        self._calls: collections.OrderedDict[str, CallView] = collections.OrderedDict()

    def _view(self, call_id: str) -> CallView:
        view = self._calls.get(call_id)
        if view is None:
            view = self._calls[call_id] = CallView(call_id)
            while len(self._calls) > self._max_calls:
                # The oldest call nobody watches (never one someone watches, nor this one);
                # skipping watched calls keeps the bound while an old call is still watched.
                victim = next((cid for cid, v in self._calls.items()
                               if not v.subscribers and cid != call_id), None)
                if victim is None:
                    break
                del self._calls[victim]
        return view

    def is_live(self, call_id: str) -> bool:
        view = self._calls.get(call_id)
        return view is not None and not view.ended

    def live_calls(self) -> list[dict[str, Any]]:
        return [dict(v.info, callId=v.call_id, messages=len(v.history))
                for v in self._calls.values() if not v.ended]

    def on_call_record(self, record: dict[str, Any]) -> None:
        """A calls-topic record: ``call.started`` makes a call known; ``call.ended`` does not
        end it here (its transcripts may still be on the way; ``event:callEnd`` ends it)."""
        if record.get("type") == "call.started":
            self._view(record["callId"]).info = record

    def on_transcript_record(self, record: dict[str, Any]) -> None:
        """Append a transcripts-topic record to its call and offer it to every subscriber."""
        view = self._view(record["callId"])
        record_id = dedupe_key(record)
        if record_id in view.ids:
            return  # a redelivery after a producer retry or a worker restart
        if record_id is not None:
            view.ids.add(record_id)
        view.history.append(record)
        if len(view.history) > self._max_messages:
            dropped = view.history.popleft()
            view.ids.discard(str(dedupe_key(dropped)))
        if record.get("type") == "event:callEnd":
            view.ended = True
        for subscriber in view.subscribers:
            subscriber.offer(record)

    def subscribe(self, call_id: str, *, resume_after: str | None,
                  maxsize: int) -> tuple[Subscriber, list[dict[str, Any]]]:
        """Register a subscriber; return it with the history to replay first (after
        ``resume_after`` when that id is in the history, else all of it)."""
        view = self._view(call_id)
        subscriber = Subscriber(call_id, maxsize=maxsize)
        view.subscribers.add(subscriber)
        replay = list(view.history)
        if resume_after is not None:
            for index, record in enumerate(replay):
                if dedupe_key(record) == resume_after:
                    replay = replay[index + 1:]
                    break
        return subscriber, replay

    def unsubscribe(self, subscriber: Subscriber) -> None:
        view = self._calls.get(subscriber.call_id)
        if view is not None:
            view.subscribers.discard(subscriber)
