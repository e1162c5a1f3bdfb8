"""The control executor: carries out liveCalls commands for the calls this replica owns.

Every ingest replica reads the whole ``<prefix>.control`` topic (no consumer group, from its
end when the replica starts: a call it owns began after that) and acts only on commands for
calls in its :class:`~workers.ingest.session.CallRegistry` — the replica holding the call's
socket. A command id seen before for the same call is dropped, so a command delivered twice
(a bridge retry, a replay) does one thing. Commands of different calls run concurrently
(bounded); those of one call run one after the other, in topic order.

``client:joinCall`` → :class:`~workers.ingest.control.Transfer` to ``transfer_target``; then
the call's ``assistant`` channels carry the user's leg and are relabelled ``user`` from that
sample on, and ``call.joined`` is published on the calls topic.
``client:endCall`` → :class:`~workers.ingest.control.HangUp`; the ``call.ended`` that follows
says ``reason: "hangup"``. Any failure → ``call.control_failed`` {description, retriable}.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from workers import logs, metrics
from workers.ingest.control import CallControl, HangUp, Transfer
from workers.ingest.errors import ControlError, ControlNotConfigured
from workers.ingest.session import CallHandle, CallRegistry
from workers.kafka import decode_or_skip, new_consumer, partitions_of
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.records import SCHEMA_VERSION, ControlCommand, Topics, loads, utc_now_iso

log = logging.getLogger(__name__)

JOIN, END = "client:joinCall", "client:endCall"


@dataclass(frozen=True, slots=True)
class CallJoined:
    """The user joined: from ``channels``' next samples on, their role is ``user``."""

    call_id: str
    command_id: str
    channels: tuple[int, ...]
    timestamp: str = field(default_factory=utc_now_iso)

    def to_json(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "type": "call.joined", "callId": self.call_id,
                "commandId": self.command_id, "channels": list(self.channels),
                "role": "user", "timestamp": self.timestamp}


@dataclass(frozen=True, slots=True)
class ControlFailed:
    """A command for the call could not be carried out (the provider refused, ...)."""

    call_id: str
    command_id: str
    command: str
    description: str
    retriable: bool
    timestamp: str = field(default_factory=utc_now_iso)

    def to_json(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "type": "call.control_failed", "callId": self.call_id,
                "commandId": self.command_id, "command": self.command,
                "description": self.description, "retriable": self.retriable,
                "timestamp": self.timestamp}


class SeenCommands:
    """Bounded memory of (call id, command id) pairs already taken (oldest forgotten)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()

    def first_time(self, call_id: str, command_id: str) -> bool:
        key = (call_id, command_id)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


class ControlExecutor:
    """Consumes the control topic and runs each owned command (bounded concurrency)."""

    def __init__(self, *, bootstrap: str, topics: Topics, registry: CallRegistry,
                 control: CallControl, transfer_target: str | None,
                 fetch_max_wait_ms: int = 20, max_concurrent: int = 32,
                 security: KafkaSecurity = PLAINTEXT) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._topics = topics
        self._registry = registry
        self._control = control
        self._target = transfer_target
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._slots = asyncio.Semaphore(max_concurrent)
        self._seen = SeenCommands()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        #: One lock per call with commands running: a call's commands run in topic order.
        self._call_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def start(self) -> None:
        self._consumer = new_consumer(
            self._bootstrap, security=self._security, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_max_wait_ms, client_id="ingest-control")
        await self._consumer.start()
        partitions = [TopicPartition(self._topics.control, p)
                      for p in sorted(await partitions_of(self._consumer, self._topics.control))]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end offsets now, before any call starts
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._run(), name="ingest-control")

    async def stop(self, deadline_s: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.wait(self._running, timeout=deadline_s)
        if self._consumer is not None:
            await self._consumer.stop()
        await self._control.close()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as exc:  # the broker away: back-pressure, not a crash
                log.warning("control topic unavailable: %s", exc)
                await asyncio.sleep(1)
                continue
            for messages in batches.values():
                for message in messages:
                    await self._take(message)

    async def _take(self, message: ConsumerRecord[bytes, bytes]) -> None:
        command = decode_or_skip(
            message, lambda m: ControlCommand.from_json(loads(m.value)), logger=log)
        if command is None:
            return
        handle = self._registry.get(command.call_id)
        if handle is None or command.type not in (JOIN, END):
            return  # another replica's call (or a command that is not ours to run)
        if not self._seen.first_time(command.call_id, command.id):
            log.info("call %s: command %s already taken", command.call_id, command.id)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._execute(handle, command))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _execute(self, handle: CallHandle, command: ControlCommand) -> None:
        logs.bind_call(command.call_id)  # this task's log lines are about the call
        lock, users = self._call_locks.get(command.call_id, (asyncio.Lock(), 0))
        self._call_locks[command.call_id] = (lock, users + 1)
        try:
            async with lock:
                await self._carry_out(handle, command)
        finally:
            lock, users = self._call_locks[command.call_id]
            if users == 1:
                del self._call_locks[command.call_id]
            else:
                self._call_locks[command.call_id] = (lock, users - 1)

    async def _carry_out(self, handle: CallHandle, command: ControlCommand) -> None:
        call_id = command.call_id
        try:
            if command.type == JOIN:
                if not self._target:
                    raise ControlNotConfigured("CALLSCRIBE_TRANSFER_TARGET is not set")
                await self._control.execute(handle, Transfer(self._target))
                channels = await handle.stream.relabel("assistant", "user")
                outcome: dict[str, Any] = CallJoined(call_id, command.id,
                                                     tuple(channels)).to_json()
            else:
                # Named first: the provider may close the socket before its REST call returns.
                handle.stream.end_reason = "hangup"
                try:
                    await self._control.execute(handle, HangUp())
                except ControlError:
                    handle.stream.end_reason = None
                    raise
                log.info("%s call %s: hung up (command %s)", handle.provider, call_id,
                         command.id)
                return
            log.info("%s call %s: transferred to the user (command %s)", handle.provider,
                     call_id, command.id)
        except ControlError as exc:
            log.warning("%s call %s: %s %s failed: %s", handle.provider, call_id, command.type,
                        command.id, exc)
            outcome = ControlFailed(call_id, command.id, command.type, str(exc),
                                    exc.retriable).to_json()
        try:
            await handle.stream.publish(outcome)
        except KafkaError:
            metrics.INGEST_PUBLISH_FAILURES.labels(self._topics.calls).inc()
            log.exception("call %s: could not publish %s", call_id, outcome["type"])


__all__ = ["CallJoined", "ControlExecutor", "ControlFailed", "SeenCommands"]
