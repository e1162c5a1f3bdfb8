"""Supervisor live listen, the I/O side: the REST endpoint, the listen WebSocket, and the
audio-topic consumers that feed it.

``POST /v1/calls/{call_id}/listen`` (API key as ``Authorization: <key>`` or ``Bearer <key>``)
answers Bland's ``{"status": "success", "data": {"url": "ws://…/v1/listen/<token>"}, "errors":
null}``; the URL's token is a signed JWT for that one call (audience ``callscribe:listen``) and
may be used by several connections at once until it expires. ``GET /v1/listen/<token>`` upgrades
to a WebSocket that carries only binary frames of PCM16 LE 16 kHz mono (both parties mixed) from
the moment it connects until the call ends (close 1000).

A listener reads only its call's partition of the audio topic: each bridge process runs at most
one consumer per audio partition (:class:`PartitionFeed`, started by the first listener on that
partition, stopped with the last) which mixes each followed call once (:class:`ListenMixer`) and
offers the PCM to every listener's bounded :class:`Outbox` without awaiting any of them. A
listener whose outbox overflows (``queue_frames`` frames, about 100 ms each) is closed with 1013.
Close codes: 1000 the call ended, 1001 the bridge is shutting down, 1011 the audio feed failed,
1013 too slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from workers import logs, metrics
from workers.bridge import listen_protocol
from workers.bridge.hub import CallHub, Outbox
from workers.bridge.sockets import CLOSE_TIMEOUT_S, SlowCloser, stop_relay, too_many_from
from workers.bridge.tokens import LISTEN_AUDIENCE, TokenIssuer
from workers.errors import AuthError, OutboxOverflow
from workers.kafka import decode_or_skip, new_consumer
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.records import AudioChunk

log = logging.getLogger(__name__)

#: After ``call.ended`` is seen on the calls topic, how long a listener may still wait for the
#: call's last audio chunks (the two topics are read by different consumers) before close 1000.
CALL_END_GRACE_S = 3.0
LISTEN_PATH = "/v1/listen/{token}"
START_PATH = "/v1/calls/{call_id:[^/]*}/listen"


# --------------------------------------------------------------------------- audio fan-out


class Listener:
    """One listen socket's outbox of PCM frames."""

    __slots__ = ("call_id", "outbox")

    def __init__(self, call_id: str, *, maxsize: int) -> None:
        self.call_id = call_id
        self.outbox: Outbox[bytes] = Outbox(maxsize)

    def offer(self, pcm: bytes) -> None:
        if not self.outbox.overflowed and not self.outbox.put(pcm):
            metrics.BRIDGE_SLOW_LISTENER_CLOSES.inc()
            log.warning("call %s: a live listener fell %d frames behind; closing it",
                        self.call_id, self.outbox.maxsize)


@dataclass
class _FollowedCall:
    mixer: listen_protocol.ListenMixer = field(default_factory=listen_protocol.ListenMixer)
    listeners: set[Listener] = field(default_factory=set)


class PartitionFeed:
    """One consumer of one audio-topic partition, from its end, for the listeners of the calls
    on that partition."""

    def __init__(self, *, bootstrap: str, topic: str, partition: int, fetch_max_wait_ms: int,
                 client_id: str, security: KafkaSecurity = PLAINTEXT) -> None:
        self.partition = TopicPartition(topic, partition)
        self._consumer = new_consumer(
            bootstrap, security=security, group_id=None, enable_auto_commit=False,
            auto_offset_reset="latest", fetch_max_wait_ms=fetch_max_wait_ms,
            client_id=client_id)
        self._calls: dict[bytes, _FollowedCall] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        return not self._calls

    async def start(self) -> None:
        """Connect and position at the partition's end; audio produced after this is heard."""
        await self._consumer.start()
        try:
            self._consumer.assign([self.partition])
            await self._consumer.seek_to_end(self.partition)
            await self._consumer.position(self.partition)
        except BaseException:
            await self._consumer.stop()
            raise
        self._task = asyncio.create_task(self._run(), name=f"listen-feed-{self.partition}")
        metrics.BRIDGE_AUDIO_FEEDS.inc()

    async def stop(self) -> None:
        for call in self._calls.values():
            for listener in call.listeners:
                listener.outbox.close()
        self._calls.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            metrics.BRIDGE_AUDIO_FEEDS.dec()
        await self._consumer.stop()

    def add(self, listener: Listener) -> None:
        self._calls.setdefault(listener.call_id.encode(), _FollowedCall()).listeners.add(listener)

    def remove(self, listener: Listener) -> None:
        key = listener.call_id.encode()
        call = self._calls.get(key)
        if call is not None:
            call.listeners.discard(listener)
            if not call.listeners:
                del self._calls[key]

    def end_call(self, call_id: str) -> None:
        """Close the call's listeners (after what they were sent): the call is over."""
        call = self._calls.pop(call_id.encode(), None)
        for listener in call.listeners if call is not None else ():
            listener.outbox.close()

    async def _run(self) -> None:
        try:
            while True:
                batches = await self._consumer.getmany(timeout_ms=1000)
                for messages in batches.values():
                    for message in messages:
                        self._on_record(message)
        except KafkaError:
            log.exception("audio feed %s failed; closing its listeners", self.partition)
            for call in self._calls.values():
                for listener in call.listeners:
                    listener.outbox.close()
            self._calls.clear()

    def _on_record(self, message: ConsumerRecord[bytes, bytes]) -> None:
        call = self._calls.get(message.key or b"")
        if call is None:
            return
        chunk = decode_or_skip(
            message, lambda m: AudioChunk.from_kafka(m.key, m.value, m.headers), logger=log)
        if chunk is None:
            return
        pcm = call.mixer.push(chunk)
        if pcm:
            for listener in call.listeners:
                listener.offer(pcm)
        if call.mixer.finished:
            self.end_call(chunk.call_id)


class AudioFanout:
    """The audio feeds of one bridge process, by partition, shared by all its listeners."""

    def __init__(self, *, bootstrap: str, topic: str, fetch_max_wait_ms: int,
                 partition_count: Callable[[str], Awaitable[int]], client_id: str,
                 queue_frames: int = 100, security: KafkaSecurity = PLAINTEXT) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._topic = topic
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._partition_count = partition_count
        self._client_id = client_id
        self._queue_frames = queue_frames
        self._feeds: dict[int, PartitionFeed] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    async def partition_of(self, call_id: str) -> int:
        return listen_protocol.partition_for(call_id, await self._partition_count(self._topic))

    async def join(self, call_id: str) -> tuple[Listener, PartitionFeed]:
        """A listener of ``call_id``, registered with its partition's feed (started if need be)."""
        partition = await self.partition_of(call_id)
        async with self._locks.setdefault(partition, asyncio.Lock()):
            feed = self._feeds.get(partition)
            if feed is None:
                feed = PartitionFeed(bootstrap=self._bootstrap, security=self._security,
                                     topic=self._topic,
                                     partition=partition, client_id=self._client_id,
                                     fetch_max_wait_ms=self._fetch_max_wait_ms)
                await feed.start()
                self._feeds[partition] = feed
            listener = Listener(call_id, maxsize=self._queue_frames)
            feed.add(listener)
        return listener, feed

    def leave(self, listener: Listener, feed: PartitionFeed) -> None:
        feed.remove(listener)
        if feed.idle and self._feeds.get(feed.partition.partition) is feed:
            del self._feeds[feed.partition.partition]
            task = asyncio.create_task(feed.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def call_ended(self, call_id: str, grace_s: float = CALL_END_GRACE_S) -> None:
        """``call.ended`` was seen: close the call's listeners after ``grace_s`` unless its last
        chunks closed them first."""
        loop = asyncio.get_running_loop()
        for feed in list(self._feeds.values()):
            loop.call_later(grace_s, feed.end_call, call_id)

    async def stop(self) -> None:
        feeds, self._feeds = list(self._feeds.values()), {}
        await asyncio.gather(*(f.stop() for f in feeds), *self._stopping,
                             return_exceptions=True)


# --------------------------------------------------------------------------- HTTP handlers


class LiveListen:
    """The two live-listen routes of a bridge."""

    def __init__(self, *, hub: CallHub, issuer: TokenIssuer, api_keys: frozenset[str],
                 fanout: AudioFanout, enabled: bool, ready: Callable[[], bool],
                 sockets: dict[web.WebSocketResponse, web.BaseRequest],
                 public_url: str | None = None, heartbeat_s: float = 20.0,
                 close_timeout_s: float = CLOSE_TIMEOUT_S, max_per_address: int = 0) -> None:
        self._hub = hub
        self._max_per_address = max_per_address
        self._issuer = issuer
        self._api_keys = api_keys
        self.fanout = fanout
        self.enabled = enabled
        self._ready = ready
        self._sockets = sockets
        self._public_url = public_url.rstrip("/") if public_url else None
        self._heartbeat_s = heartbeat_s
        self.close_timeout_s = close_timeout_s

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(START_PATH, self.start)
        app.router.add_get(LISTEN_PATH, self.socket)

    @staticmethod
    def _answer(error: listen_protocol.ListenError) -> web.Response:
        metrics.BRIDGE_LISTEN_REQUESTS.labels(error.code).inc()
        headers = {"Retry-After": "5"} if error.status == 503 else None
        return web.json_response(listen_protocol.failure(error), status=error.status,
                                 headers=headers)

    def _base_url(self, request: web.Request) -> str:
        if self._public_url:
            return self._public_url
        proto = request.headers.get("X-Forwarded-Proto", request.scheme)
        return f"{'wss' if proto in ('https', 'wss') else 'ws'}://{request.host}"

    async def start(self, request: web.Request) -> web.Response:
        """``POST /v1/calls/{call_id}/listen`` → Bland's body with the listen URL."""
        if not self._ready():
            return self._answer(listen_protocol.UNAVAILABLE)
        try:
            call_id = listen_protocol.check_listen_request(
                request.match_info.get("call_id", ""), request.headers.get("Authorization"),
                api_keys=self._api_keys, enabled=self.enabled, call_state=self._hub.call_state)
            await self.fanout.partition_of(call_id)  # the audio topic is there
            token, _ = self._issuer.mint(call_id, audience=LISTEN_AUDIENCE)
        except listen_protocol.ListenRefused as refused:
            if refused.status == 401:
                metrics.BRIDGE_AUTH_FAILURES.labels("listen").inc()
            return self._answer(refused.error)
        except Exception:
            log.exception("live listen request failed")
            return self._answer(listen_protocol.INTERNAL_SERVER_ERROR)
        metrics.BRIDGE_LISTEN_REQUESTS.labels("success").inc()
        log.info("call %s: live listen URL issued", call_id)
        url = f"{self._base_url(request)}/v1/listen/{token}"
        return web.json_response(listen_protocol.success(url))

    async def socket(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/listen/<token>``: the call's mixed audio, binary frames only."""
        if not self._ready():
            return self._answer(listen_protocol.UNAVAILABLE)
        if not self.enabled:
            return self._answer(listen_protocol.INVALID_ORG_PREFERENCES)
        crowded = too_many_from(request, self._sockets, self._max_per_address)
        if crowded is not None:
            return crowded
        try:
            call_id = self._issuer.verify(request.match_info["token"], audience=LISTEN_AUDIENCE)
            logs.bind_call(call_id)  # this connection's log lines are about the call
            listen_protocol.check_call(call_id, self._hub.call_state)
            listener, feed = await self.fanout.join(call_id)
        except AuthError:
            metrics.BRIDGE_AUTH_FAILURES.labels("listen").inc()
            return self._answer(listen_protocol.INVALID_TOKEN)
        except listen_protocol.ListenRefused as refused:
            return self._answer(refused.error)
        except Exception:
            log.exception("live listen connection failed")
            return self._answer(listen_protocol.INTERNAL_SERVER_ERROR)
        try:
            ws = web.WebSocketResponse(heartbeat=self._heartbeat_s, compress=False,
                                       max_msg_size=4096)
            await ws.prepare(request)
        except BaseException:
            self.fanout.leave(listener, feed)
            raise
        self._sockets[ws] = request
        metrics.BRIDGE_LISTENERS.inc()
        relay = asyncio.create_task(self._relay(ws, listener))
        closer = SlowCloser(ws, request, b"listener too slow", self.close_timeout_s)
        listener.outbox.on_overflow = closer
        try:
            async for _ in ws:
                pass  # listen-only: anything a listener sends is ignored
        finally:
            self.fanout.leave(listener, feed)
            self._sockets.pop(ws, None)
            metrics.BRIDGE_LISTENERS.dec()
            await closer.wait()
            await stop_relay(relay, listener.outbox, request, self.close_timeout_s)
        return ws

    @staticmethod
    async def _relay(ws: web.WebSocketResponse, listener: Listener) -> None:
        try:
            while (pcm := await listener.outbox.get()) is not None:
                await ws.send_bytes(pcm)
                metrics.BRIDGE_LISTEN_BYTES.inc(len(pcm))
            await ws.close(code=1000, message=b"call ended")
        except (OutboxOverflow, ConnectionError):
            return  # the SlowCloser closes an overflowed listener
        finally:
            listener.outbox.close()
