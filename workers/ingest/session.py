"""One provider connection carrying one call: codec ↔ socket ↔ Kafka (thin I/O adapter).

The session feeds each frame to the dialect codec, cuts audio into chunks, and publishes
``call.started``, audio, DTMF and ``call.ended`` records keyed by call id. Whatever ends the
connection (normal close, protocol error, drain), the audio received so far is flushed and
``call.ended`` is published: no audio is silently lost.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from workers import metrics
from workers.errors import ProtocolError
from workers.ingest.chunker import Chunker
from workers.ingest.dialects import jambonz
from workers.kafka import OrderedSender
from workers.records import (
    AudioChunk,
    CallEnded,
    CallStarted,
    Dtmf,
    Topics,
    dumps,
)

log = logging.getLogger(__name__)

PROVIDER = "jambonz"


class CallPublisher:
    """Publishes one call's records, in order, through a bounded :class:`OrderedSender`."""

    def __init__(self, sender: OrderedSender, topics: Topics) -> None:
        self._sender = sender
        self._topics = topics

    async def call_event(self, call_id: str, value: dict[str, Any]) -> None:
        await self._sender.send(self._topics.calls, key=call_id.encode(), value=dumps(value))

    async def audio(self, chunks: list[AudioChunk]) -> None:
        for chunk in chunks:
            await self._sender.send(self._topics.audio, key=chunk.call_id.encode(),
                                    value=chunk.pcm, headers=chunk.headers())

    async def drain(self) -> None:
        await self._sender.drain()


class JambonzSession:
    """Runs one jambonz ``listen`` connection to its end."""

    def __init__(self, connection: ServerConnection, publisher: CallPublisher, *,
                 chunk_ms: int) -> None:
        self._connection = connection
        self._publisher = publisher
        self._chunk_ms = chunk_ms
        self._codec = jambonz.JambonzCodec()
        self._chunker: Chunker | None = None
        self.call_id: str | None = None

    async def run(self) -> None:
        reason = "closed"
        try:
            async for message in self._connection:
                if isinstance(message, str):
                    events = self._codec.receive_text(message)
                else:
                    events = self._codec.receive_binary(message)
                for event in events:
                    await self._handle(event)
        except ProtocolError as exc:
            reason = "protocol_error"
            metrics.INGEST_REJECTED.labels(PROVIDER, type(exc).__name__).inc()
            log.warning("jambonz call %s rejected (close %d): %s",
                        self.call_id or "-", exc.close_code, exc)
            await self._connection.close(exc.close_code, str(exc)[:120])
        except ConnectionClosed as exc:
            reason = "connection_lost"
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                # websockets closed it 1009 for a frame over max_size: bad input, counted.
                reason = "protocol_error"
                metrics.INGEST_REJECTED.labels(PROVIDER, "message_too_big").inc()
                log.warning("jambonz call %s rejected (close 1009): %s", self.call_id or "-",
                            exc.sent.reason)
        finally:
            await self._finish(reason)

    async def _handle(self, event: jambonz.Event) -> None:
        if isinstance(event, jambonz.Audio):
            assert self._chunker is not None  # the codec emits audio only after CallStart
            await self._publisher.audio(self._chunker.push(event.channels))
            metrics.INGEST_AUDIO_SECONDS.labels(PROVIDER).inc(
                len(event.channels[0]) / 2 / self._chunker.rate)
        elif isinstance(event, jambonz.CallStart):
            await self._start(event)
        elif isinstance(event, jambonz.DtmfPressed) and self._chunker is not None:
            assert self.call_id is not None
            dtmf = Dtmf(call_id=self.call_id, digit=event.digit, duration_ms=event.duration_ms,
                        t_ms=self._chunker.position_ms)
            await self._publisher.call_event(self.call_id, dtmf.to_json())
        elif isinstance(event, jambonz.Ignored):
            metrics.INGEST_IGNORED_FRAMES.labels(PROVIDER, event.reason.split(":")[0][:40]).inc()
            log.info("jambonz call %s: ignored a text frame: %s", self.call_id, event.reason)

    async def _start(self, start: jambonz.CallStart) -> None:
        self.call_id = start.call_sid or f"jambonz-{uuid.uuid4().hex}"
        self._chunker = Chunker(call_id=self.call_id, rate=start.rate, roles=start.roles,
                                chunk_ms=self._chunk_ms)
        metadata = dict(start.metadata)
        metadata["truncated"] = start.truncated
        record = CallStarted(
            call_id=self.call_id, provider=PROVIDER, from_=start.from_, to=start.to,
            direction=start.direction, rate=start.rate, channels=start.channels,
            mix=start.mix, roles=start.roles, metadata=metadata,
        )
        await self._publisher.call_event(self.call_id, record.to_json())
        metrics.INGEST_CALLS.labels(PROVIDER).inc()
        metrics.INGEST_ACTIVE_CALLS.labels(PROVIDER).inc()
        log.info("jambonz call %s started: %d Hz %s from %s", self.call_id, start.rate,
                 start.mix, start.from_)

    async def _finish(self, reason: str) -> None:
        if self._chunker is None or self.call_id is None:
            return
        leftover = self._codec.flush()
        if leftover:
            log.info("jambonz call %s: %d trailing bytes were not a whole sample frame",
                     self.call_id, len(leftover))
        await self._publisher.audio(self._chunker.close())
        ended = CallEnded(call_id=self.call_id, reason=reason,
                          duration_ms=self._chunker.position_ms,
                          last_seq=self._chunker.last_seq)
        await self._publisher.call_event(self.call_id, ended.to_json())
        await self._publisher.drain()
        metrics.INGEST_ACTIVE_CALLS.labels(PROVIDER).dec()
        log.info("jambonz call %s ended (%s) after %d ms", self.call_id, reason,
                 ended.duration_ms)
