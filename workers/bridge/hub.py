"""What the bridge knows about calls: their messages so far, and who is watching.

Each call keeps an ordered, de-duplicated (by :func:`dedupe_key`), bounded history for replay.
Each subscriber has its own bounded :class:`Outbox`; a record is offered to every outbox without
awaiting anyone, so one slow client never delays another. An outbox that overflows marks its
subscriber ``overflowed`` (the server closes it with 1013): the overflow policy is "close the
slow client", never "drop messages silently".

Besides the transcripts topic, the calls topic feeds two kinds of records into a call's history
(both with deterministic ids, so a redelivery or a second replica's copy is dropped):

* ``call.joined`` {callId, commandId} → ``event:end`` with id ``<call>:end`` (the screening phase
  ends once, however many join commands led to it);
* ``call.control_failed`` {callId, commandId, command, description (or reason), retriable} →
  ``error`` with id ``<call>:control_failed:<commandId>``.

Both messages are built by :mod:`workers.bridge.livecalls` (:func:`joined_message`,
:func:`control_failed_message`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from workers import metrics
from workers.bridge.livecalls import control_failed_message, joined_message
from workers.errors import OutboxOverflow

log = logging.getLogger(__name__)

T = TypeVar("T")
CallState = Literal["unknown", "live", "ended"]

#: Command ids remembered per call for de-duplication.
MAX_COMMANDS_PER_CALL = 256


def dedupe_key(record: dict[str, Any]) -> str | None:
    """What makes a record unique: its ``id``, and for an interim also its ``revision`` (an
    utterance's interims and its final transcript share the utterance's id). This is also the
    resume position a client passes as ``resumeAfter``: ``<id>``, or ``<id>#<revision>`` after
    a ``transcript:interim``."""
    record_id = record.get("id")
    if record_id is None:
        return None
    if record.get("type") == "transcript:interim":
        return f"{record_id}#{record.get('revision')}"
    return str(record_id)


class Outbox(Generic[T]):
    """One client's bounded queue, filled without ever awaiting the client.

    :meth:`put` appends, or when ``maxsize`` items are already waiting marks the outbox
    ``overflowed`` (and calls ``on_overflow`` once); from then on :meth:`get` raises
    :class:`~workers.errors.OutboxOverflow` and nothing more is accepted. :meth:`close` says
    no more items will come: :meth:`get` hands out what is left, then ``None``.
    """

    __slots__ = ("_items", "_waiter", "closed", "maxsize", "on_overflow", "overflowed")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"outbox maxsize {maxsize}; expected 1 or more")
        self.maxsize = maxsize
        self._items: collections.deque[T] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.closed = False
        self.on_overflow: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue ``item``; ``False`` when it was not queued (overflowed or closed)."""
        if self.overflowed or self.closed:
            return False
        if len(self._items) >= self.maxsize:
            self.overflowed = True
            self._items.clear()
            self._wake()
            if self.on_overflow is not None:
                self.on_overflow()
            return False
        self._items.append(item)
        self._wake()
        return True

    def close(self) -> None:
        self.closed = True
        self._wake()

    def get_nowait(self) -> T | None:
        """The next item, or ``None`` when none is waiting; raises
        :class:`~workers.errors.OutboxOverflow`."""
        if self.overflowed:
            raise OutboxOverflow
        return self._items.popleft() if self._items else None

    async def get(self) -> T | None:
        """The next item (waiting for one), ``None`` once closed and empty; raises
        :class:`~workers.errors.OutboxOverflow` as soon as the outbox has overflowed."""
        while True:
            if self.overflowed:
                raise OutboxOverflow
            if self._items:
                return self._items.popleft()
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Subscriber:
    """One liveCalls client's outbox of records (transcripts-topic dicts) to send."""

    __slots__ = ("call_id", "outbox")

    def __init__(self, call_id: str, *, maxsize: int) -> None:
        self.call_id = call_id
        self.outbox: Outbox[dict[str, Any]] = Outbox(maxsize)

    @property
    def overflowed(self) -> bool:
        return self.outbox.overflowed

    def offer(self, record: dict[str, Any]) -> None:
        if self.outbox.overflowed:
            return
        if not self.outbox.put(record):
            metrics.BRIDGE_SLOW_CLIENT_CLOSES.inc()
            log.warning("call %s: a liveCalls client fell %d messages behind; closing it",
                        self.call_id, self.outbox.maxsize)


@dataclass
class CallView:
    call_id: str
    info: dict[str, Any] = field(default_factory=dict)  # the call.started record, if seen
    history: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    ids: set[str] = field(default_factory=set)
    subscribers: set[Subscriber] = field(default_factory=set)
    ended: bool = False  # event:callEnd seen: no more liveCalls messages
    audio_ended: bool = False  # call.ended seen: the call is over (transcripts may follow)
    commands: collections.OrderedDict[str, str] = field(
        default_factory=collections.OrderedDict)  # client command id → type, newest last


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
        """Whether liveCalls clients may connect: known, and ``event:callEnd`` not yet seen."""
        view = self._calls.get(call_id)
        return view is not None and not view.ended

    def call_state(self, call_id: str) -> CallState:
        """For live listen: ``unknown`` (never started here), ``ended`` (``call.ended`` or
        ``event:callEnd`` seen) or ``live``."""
        view = self._calls.get(call_id)
        if view is None or not (view.info or view.history):
            return "unknown"
        return "ended" if view.ended or view.audio_ended else "live"

    def live_calls(self) -> list[dict[str, Any]]:
        return [dict(v.info, callId=v.call_id, messages=len(v.history))
                for v in self._calls.values() if not v.ended]

    def on_call_record(self, record: dict[str, Any]) -> None:
        """A calls-topic record: ``call.started`` makes a call known; ``call.ended`` marks its
        audio over (it stays live for liveCalls until ``event:callEnd``: its transcripts may
        still be on the way); ``call.joined`` and ``call.control_failed`` (the outcome of a
        client command, from the ingest side) become ``event:end`` and ``error`` messages."""
        kind = record.get("type")
        if kind == "call.started":
            self._view(record["callId"]).info = record
        elif kind == "call.ended":
            view = self._calls.get(record["callId"])
            if view is not None:
                view.audio_ended = True
        elif kind == "call.joined":
            self.on_transcript_record(joined_message(record))
        elif kind == "call.control_failed":
            self.on_transcript_record(control_failed_message(record))

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
        """Register a subscriber; return it with the history to replay first (after the record
        whose :func:`dedupe_key` is ``resume_after`` when it is in the history, else all of
        it). Both happen at once, so nothing falls between the replay and the live records."""
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

    def can_resume(self, call_id: str, resume_after: str) -> bool:
        """Whether the history of ``call_id`` still holds the message ``resume_after`` names
        (so that a client that reconnects after the call ended gets what it missed)."""
        view = self._calls.get(call_id)
        return view is not None and resume_after in view.ids

    def unsubscribe(self, subscriber: Subscriber) -> None:
        view = self._calls.get(subscriber.call_id)
        if view is not None:
            view.subscribers.discard(subscriber)

    def remember_command(self, call_id: str, command_id: str, kind: str) -> str | None:
        """Note that a client command ``command_id`` of type ``kind`` is being published for
        ``call_id``; return the type it was first seen with when it was seen before (then it
        is not published again), else ``None``. The newest ids per call are kept."""
        view = self._view(call_id)
        previous = view.commands.get(command_id)
        if previous is not None:
            return previous
        view.commands[command_id] = kind
        while len(view.commands) > MAX_COMMANDS_PER_CALL:
            view.commands.popitem(last=False)
        return None

    def forget_command(self, call_id: str, command_id: str) -> None:
        """The command could not be published: a retry with the same id must publish it."""
        view = self._calls.get(call_id)
        if view is not None:
            view.commands.pop(command_id, None)
