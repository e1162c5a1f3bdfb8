"""One call's connection: codec ↔ socket ↔ Kafka, the same for every provider (thin adapter).

:class:`CallStream` turns a dialect's neutral events (:mod:`workers.ingest.dialects.events`)
into ``call.started``, audio, DTMF and ``call.ended`` records keyed by call id: whole-sample
audio of every channel at once, or one track at a time with silence where the provider's
clock says audio is missing. :class:`ProviderSession` runs a provider's server-side socket
(jambonz, Plivo, Twilio) through a codec into a stream, sends what call control asks, and
registers itself in the :class:`CallRegistry` so the control executor can find the calls
this worker owns. Whatever ends the connection (normal close, protocol error, drain), the
audio received so far is flushed and ``call.ended`` is published: no audio is silently lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from workers import logs, metrics
from workers.errors import ProtocolError
from workers.ingest import providers
from workers.ingest.chunker import Chunker, TrackTimeline
from workers.ingest.dialects import events as ev
from workers.ingest.outbox import Budget, Outbox, Producer, Record, buffer_records
from workers.ingest.providers.base import Player
from workers.records import (
    AudioChunk,
    CallEnded,
    CallStarted,
    Dtmf,
    Role,
    Topics,
    dumps,
)
from workers.vocabulary import call_vocabulary

log = logging.getLogger(__name__)

#: Seconds of a call's audio held until Kafka acknowledges it (CALLSCRIBE_INGEST_BUFFER_S).
BUFFER_S = 120.0


class CallPublisher:
    """Publishes one call's records, in order, through its bounded :class:`Outbox`.

    The outbox holds ``buffer_s`` of the call's audio until Kafka acknowledges it
    (:func:`~workers.ingest.outbox.buffer_records`: sized for one channel until :meth:`begin`
    says how many the call has)."""

    def __init__(self, outbox: Outbox, topics: Topics, *, buffer_s: float = BUFFER_S,
                 chunk_ms: int = 100) -> None:
        self._outbox = outbox
        self._topics = topics
        self._buffer_s = buffer_s
        self._chunk_ms = chunk_ms
        outbox.limit = buffer_records(buffer_s, chunk_ms, 1)

    @classmethod
    def for_call(cls, producer: Producer, topics: Topics, *, provider: str, chunk_ms: int,
                 max_in_flight: int, buffer_s: float = BUFFER_S,
                 budget: Budget | None = None) -> CallPublisher:
        """A publisher with an outbox of its own, sharing the process's ``budget``."""
        outbox = Outbox(producer, limit=1, max_in_flight=max_in_flight, budget=budget,
                        provider=provider)
        return cls(outbox, topics, buffer_s=buffer_s, chunk_ms=chunk_ms)

    def begin(self, call_id: str, channels: int) -> None:
        """The call has an id (for log lines) and ``channels`` channels of audio."""
        self._outbox.call_id = call_id
        self._outbox.limit = buffer_records(self._buffer_s, self._chunk_ms, channels)

    async def call_event(self, call_id: str, value: dict[str, Any]) -> None:
        await self._outbox.put(Record(self._topics.calls, call_id.encode(), dumps(value)))

    async def audio(self, chunks: list[AudioChunk]) -> None:
        for chunk in chunks:
            await self._outbox.put(Record(self._topics.audio, chunk.call_id.encode(),
                                          chunk.pcm, tuple(chunk.headers())))

    async def drain(self) -> None:
        await self._outbox.drain()

    async def close(self) -> None:
        await self._outbox.close()


class CallStream:
    """The publishing half of a call: neutral events in, Kafka records out, in order."""

    def __init__(self, publisher: CallPublisher, *, provider: str, chunk_ms: int) -> None:
        self.provider = provider
        self._publisher = publisher
        self._chunk_ms = chunk_ms
        self._chunker: Chunker | None = None
        self._timeline: TrackTimeline | None = None
        self._lock = asyncio.Lock()  # control (relabel) and the socket both emit chunks
        self.call_id: str | None = None
        self.start: ev.CallStart | None = None
        self.end_reason: str | None = None  # set by control (e.g. "hangup") to name the end
        self._finished = False
        self._logged: set[str] = set()

    @property
    def started(self) -> bool:
        return self._chunker is not None

    async def handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.Ignored):
            self._ignored(event)
            return
        if isinstance(event, ev.Stop):
            log.info("%s call %s: the provider stopped the stream (%s)", self.provider,
                     self.call_id, event.reason)
            return
        async with self._lock:
            if isinstance(event, ev.CallStart):
                await self._begin(event)
            elif self._chunker is None or self._timeline is None:
                return  # codecs emit no audio or DTMF before CallStart
            elif isinstance(event, ev.Audio):
                await self._publisher.audio(self._chunker.push(event.channels))
                metrics.INGEST_AUDIO_SECONDS.labels(self.provider).inc(
                    len(event.channels[0]) / 2 / self._chunker.rate)
            elif isinstance(event, ev.TrackAudio):
                await self._track(event, self._chunker, self._timeline)
            elif isinstance(event, ev.DtmfPressed):
                await self._dtmf(event, self._chunker)

    def _ignored(self, event: ev.Ignored) -> None:
        reason = event.reason.split(":")[0][:40]
        metrics.INGEST_IGNORED_FRAMES.labels(self.provider, reason).inc()
        if reason not in self._logged:  # once per reason and call: no per-frame log lines
            self._logged.add(reason)
            log.info("%s call %s: ignored a frame (counted from now on): %s", self.provider,
                     self.call_id or "-", event.reason)

    async def _begin(self, start: ev.CallStart) -> None:
        self.start = start
        self.call_id = start.call_id or f"{self.provider}-{uuid.uuid4().hex}"
        logs.bind_call(self.call_id)  # the connection's log lines are about the call from now
        self._chunker = Chunker(call_id=self.call_id, rate=start.rate, roles=start.roles,
                                chunk_ms=self._chunk_ms)
        self._publisher.begin(self.call_id, start.channels)
        self._timeline = TrackTimeline(start.channels, rate=start.rate)
        metadata = dict(start.metadata)
        metadata["truncated"] = start.truncated
        record = CallStarted(
            call_id=self.call_id, provider=self.provider, from_=start.from_, to=start.to,
            direction=start.direction, rate=start.rate, channels=start.channels,
            mix=start.mix, roles=start.roles, metadata=metadata,
            vocabulary=call_vocabulary(start.metadata),
        )
        await self._publisher.call_event(self.call_id, record.to_json())
        metrics.INGEST_CALLS.labels(self.provider).inc()
        metrics.INGEST_ACTIVE_CALLS.labels(self.provider).inc()
        log.info("%s call %s started: %d Hz %s from %s", self.provider, self.call_id,
                 start.rate, start.mix, start.from_ or "-")

    async def _track(self, event: ev.TrackAudio, chunker: Chunker,
                     timeline: TrackTimeline) -> None:
        samples = len(event.pcm) // 2
        fill = timeline.silence_before(event.channel, samples, event.at_sample)
        pcm = bytes(2 * fill) + event.pcm if fill else event.pcm
        await self._publisher.audio(chunker.push_channel(event.channel, pcm))
        if event.channel == 0:
            metrics.INGEST_AUDIO_SECONDS.labels(self.provider).inc(samples / chunker.rate)

    async def _dtmf(self, event: ev.DtmfPressed, chunker: Chunker) -> None:
        assert self.call_id is not None
        at = chunker.position_ms if event.at_ms is None else event.at_ms
        dtmf = Dtmf(call_id=self.call_id, digit=event.digit, duration_ms=event.duration_ms,
                    t_ms=at)
        await self._publisher.call_event(self.call_id, dtmf.to_json())

    async def add_silence(self, ms: int) -> None:
        """Silence on every channel (a reconnect's outage), keeping ``seq`` and time true."""
        async with self._lock:
            if self._chunker is None or ms <= 0:
                return
            pcm = bytes(2 * (self._chunker.rate * ms // 1000))
            for channel in range(self._chunker.channels):
                await self._publisher.audio(self._chunker.push_channel(channel, pcm))

    async def relabel(self, old: Role, new: Role) -> list[int]:
        """Channels of role ``old`` are ``new`` from now on (e.g. assistant → user after a
        join); returns the channels changed."""
        async with self._lock:
            if self._chunker is None:
                return []
            changed = [i for i, role in enumerate(self._chunker.roles) if role == old]
            for index in changed:
                await self._publisher.audio(self._chunker.set_role(index, new))
            return changed

    async def publish(self, value: dict[str, Any]) -> None:
        """A record on the calls topic for this call (control outcomes)."""
        if self.call_id is not None:
            await self._publisher.call_event(self.call_id, value)
            await self._publisher.drain()

    async def publish_unstarted(self, call_id: str, value: dict[str, Any]) -> None:
        """A record on the calls topic for a call whose stream never started (a failed
        subscription)."""
        await self._publisher.call_event(call_id, value)
        await self._publisher.drain()

    async def close(self) -> None:
        """Stop publishing (after :meth:`finish`, or when Kafka failed the call)."""
        await self._publisher.close()

    async def finish(self, reason: str, leftover: bytes = b"") -> None:
        async with self._lock:
            if self._chunker is None or self.call_id is None or self._finished:
                return
            self._finished = True
            reason = self.end_reason or reason
            if leftover:
                log.info("%s call %s: %d trailing bytes were not a whole sample", self.provider,
                         self.call_id, len(leftover))
            if self._timeline is not None and self._timeline.filled_samples:
                log.info("%s call %s: %d ms of gaps filled with silence", self.provider,
                         self.call_id, self._timeline.filled_samples * 1000 // self._chunker.rate)
            await self._publisher.audio(self._chunker.close())
            ended = CallEnded(call_id=self.call_id, reason=reason,
                              duration_ms=self._chunker.duration_ms,
                              last_seq=self._chunker.last_seq)
            await self._publisher.call_event(self.call_id, ended.to_json())
            await self._publisher.drain()
            metrics.INGEST_ACTIVE_CALLS.labels(self.provider).dec()
            log.info("%s call %s ended (%s) after %d ms", self.provider, self.call_id, reason,
                     ended.duration_ms)


class CallHandle(Protocol):
    """What call control needs from a live call this worker owns."""

    provider: str

    @property
    def call_id(self) -> str | None: ...

    @property
    def start(self) -> ev.CallStart | None: ...

    @property
    def player(self) -> Player | None: ...

    @property
    def stream(self) -> CallStream: ...

    async def send(self, frames: Sequence[str | bytes]) -> None: ...

    async def end_stream(self) -> None: ...


class CallRegistry:
    """The calls this worker owns, by call id (a provider may open two streams for a call:
    the first one opened is the one controlled)."""

    def __init__(self) -> None:
        self._calls: dict[str, list[CallHandle]] = {}
        self._waiting: dict[str, asyncio.Event] = {}

    def add(self, handle: CallHandle) -> None:
        if handle.call_id:
            self._calls.setdefault(handle.call_id, []).append(handle)
            if handle.call_id in self._waiting:
                self._waiting.pop(handle.call_id).set()

    async def wait(self, call_id: str) -> CallHandle:
        """The handle of ``call_id`` once this worker owns it (bound it with a timeout)."""
        while (handle := self.get(call_id)) is None:
            await self._waiting.setdefault(call_id, asyncio.Event()).wait()
        return handle

    def remove(self, handle: CallHandle) -> None:
        if handle.call_id and handle in self._calls.get(handle.call_id, []):
            self._calls[handle.call_id].remove(handle)
            if not self._calls[handle.call_id]:
                del self._calls[handle.call_id]

    def get(self, call_id: str) -> CallHandle | None:
        handles = self._calls.get(call_id)
        return handles[0] if handles else None

    def __len__(self) -> int:
        return len(self._calls)


def default_player(start: ev.CallStart, provider: str, codec: ev.Codec) -> Player | None:
    """The outbound side of a provider's stream (None: it takes nothing back)."""
    found = providers.by_name(provider)
    return found.player(start, codec) if found is not None else None


PlayerFactory = Callable[[ev.CallStart, str, ev.Codec], Player | None]


class ProviderSession:
    """Runs one server-side provider connection to its end."""

    def __init__(self, connection: ServerConnection, stream: CallStream, codec: ev.Codec, *,
                 registry: CallRegistry | None = None,
                 player_factory: PlayerFactory = default_player) -> None:
        self.provider = codec.provider
        self._connection = connection
        self._stream = stream
        self._codec = codec
        self._registry = registry
        self._player_factory = player_factory
        self._player: Player | None = None
        self._send_lock = asyncio.Lock()

    @property
    def call_id(self) -> str | None:
        return self._stream.call_id

    @property
    def start(self) -> ev.CallStart | None:
        return self._stream.start

    @property
    def player(self) -> Player | None:
        return self._player

    @property
    def stream(self) -> CallStream:
        return self._stream

    async def send(self, frames: Sequence[str | bytes]) -> None:
        async with self._send_lock:  # one command's frames stay together
            for frame in frames:
                await self._connection.send(frame)

    async def send_rendered(self, render: Callable[[], Sequence[str | bytes]]) -> int:
        """Send what ``render()`` returns, rendering it only once the socket is ours: frames
        numbered by the codec (AudioHook's ``seq``) then leave in the order they were
        numbered, whoever else is sending. The number of frames sent."""
        async with self._send_lock:
            frames = render()
            for frame in frames:
                await self._connection.send(frame)
            return len(frames)

    async def end_stream(self) -> None:
        """The player's end frames (jambonz ``disconnect``: it closes, the call goes on),
        else we close 1000."""
        frames = self._player.end_frames() if self._player is not None else None
        if frames is not None:
            await self.send(frames)
        else:
            await self._connection.close(1000, "callscribe ended the stream")

    async def run(self) -> None:
        reason = "closed"
        try:
            async for message in self._connection:
                if isinstance(message, str):
                    found = self._codec.receive_text(message)
                else:
                    found = self._codec.receive_binary(message)
                for event in found:
                    await self._dispatch(event)
        except ProtocolError as exc:
            reason = "protocol_error"
            metrics.INGEST_REJECTED.labels(self.provider, type(exc).__name__).inc()
            log.warning("%s call %s rejected (close %d): %s", self.provider,
                        self.call_id or "-", exc.close_code, exc)
            await self._connection.close(exc.close_code, str(exc)[:120])
        except ConnectionClosed as exc:
            reason = "connection_lost"
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                # websockets closed it 1009 for a frame over max_size: bad input, counted.
                reason = "protocol_error"
                metrics.INGEST_REJECTED.labels(self.provider, "message_too_big").inc()
                log.warning("%s call %s rejected (close 1009): %s", self.provider,
                            self.call_id or "-", exc.sent.reason)
        finally:
            if self._registry is not None:
                self._registry.remove(self)
            await self._stream.finish(reason, self._codec.flush())

    async def _dispatch(self, event: ev.Event) -> None:
        if isinstance(event, ev.Outgoing):
            await self.send(event.frames)
            return
        if isinstance(event, ev.REPLY_TYPES):
            self._on_reply(event)
            return
        await self._stream.handle(event)
        if isinstance(event, ev.CallStart):
            self._player = self._player_factory(event, self.provider, self._codec)
            if self._registry is not None:
                self._registry.add(self)

    def _on_reply(self, event: ev.Reply) -> None:
        settled = self._player.on_reply(event) if self._player is not None else repr(event)
        if isinstance(event, ev.ProviderError):
            log.warning("%s call %s: provider error: %s", self.provider, self.call_id, settled)
        else:
            log.debug("%s call %s: %s", self.provider, self.call_id, settled)


__all__ = ["CallHandle", "CallPublisher", "CallRegistry", "CallStream", "Player",
           "ProviderSession", "default_player"]
