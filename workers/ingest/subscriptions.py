"""Outbound-stream subscriptions (Bland live listen): callscribe is the WebSocket *client*.

A request (``POST /v1/subscriptions`` on any replica's API, :mod:`workers.ingest.api`) is a
:class:`SubscriptionRequest` record on ``<prefix>.subscriptions``, keyed by call id; the
replicas share that topic as one consumer group, so exactly one takes each request and runs a
:class:`BlandSubscription`:

1. ``POST {bland}/v1/calls/{id}/listen`` (``authorization: <key>``). ``CALL_NOT_FOUND`` (not
   answered yet) and server errors are retried with backoff for ``retry_s``;
   ``INVALID_ORG_PREFERENCES`` / ``MISSING_CALL_ID`` / bad credentials are fatal;
   ``INVALID_CALL_STATUS`` means the call is over. A failure before any audio is published as
   ``subscription.failed`` on the calls topic.
2. Connect to the returned URL and ingest the binary PCM16 16 kHz mixed audio as one ``other``
   channel. A close 1000 is the call's end. Any other end (dropped TCP, 1001, 1011...) while
   the call may be live: ask for a new URL and reconnect. The same codec and chunker go on, so
   ``seq`` has no gap; the outage is filled with silence so ``t_ms`` stays on the call's clock.

Requests older than ``max_age_s`` are skipped (the group starts from the earliest record so
that none made before a replica joined is lost); a call already subscribed here is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from workers import logs, metrics
from workers.errors import RecordError
from workers.ingest.dialects import bland
from workers.ingest.dialects.events import CallStart
from workers.ingest.errors import BlandListenRefused, ControlUnsupported, ProviderRefused
from workers.ingest.outbox import UNBOUNDED, Budget
from workers.ingest.providers.base import Player
from workers.ingest.session import BUFFER_S, CallPublisher, CallRegistry, CallStream
from workers.kafka import decode_or_skip, new_consumer
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.records import SCHEMA_VERSION, Topics, dumps, loads, utc_now_iso

log = logging.getLogger(__name__)

PROVIDERS = ("bland",)


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """Subscribe to ``call_id``'s audio at ``provider`` (a record of the subscriptions topic)."""

    provider: str
    call_id: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    requested_at: str = field(default_factory=utc_now_iso)

    def to_json(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "type": "subscription.requested", "id": self.id,
                "provider": self.provider, "callId": self.call_id,
                "requestedAt": self.requested_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubscriptionRequest:
        try:
            provider, call_id = data["provider"], data["callId"]
            if not isinstance(provider, str) or not isinstance(call_id, str) or not call_id:
                raise RecordError("subscription record with a bad provider or callId")
            return cls(provider=provider, call_id=call_id, id=str(data["id"]),
                       requested_at=str(data["requestedAt"]))
        except KeyError as exc:
            raise RecordError(f"subscription record without {exc.args[0]!r}") from None

    def age_s(self, now: float | None = None) -> float:
        try:
            then = datetime.fromisoformat(self.requested_at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return float("inf")
        return (time.time() if now is None else now) - then


def failure_record(request: SubscriptionRequest, code: str, description: str) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "type": "subscription.failed", "callId": request.call_id,
            "provider": request.provider, "subscriptionId": request.id, "error": code,
            "description": description, "timestamp": utc_now_iso()}


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: ``first`` doubling up to ``cap``, for at most ``budget_s``."""

    budget_s: float = 60.0
    first: float = 0.25
    cap: float = 5.0

    def delays(self) -> list[float]:
        out, delay, total = [], self.first, 0.0
        while total + delay <= self.budget_s:
            out.append(delay)
            total += delay
            delay = min(self.cap, delay * 2)
        return out


class BlandSubscription:
    """One Bland live-listen subscription, run to its end (a :class:`CallHandle`)."""

    provider = bland.PROVIDER

    def __init__(self, request: SubscriptionRequest, *, stream: CallStream,
                 http: aiohttp.ClientSession, api_url: str, api_key: str | None,
                 backoff: Backoff, registry: CallRegistry | None = None,
                 max_frame_bytes: int = 1 << 20, fill_outages: bool = True) -> None:
        self.request = request
        self._stream = stream
        self._http = http
        self._api_url = api_url
        self._api_key = api_key
        self._backoff = backoff
        self._registry = registry
        self._max_frame_bytes = max_frame_bytes
        self._fill_outages = fill_outages
        self._codec = bland.BlandCodec(request.call_id, metadata={"subscriptionId": request.id})
        self._ws: ClientConnection | None = None
        self._stopping = False
        self.connections = 0

    @property
    def call_id(self) -> str | None:
        return self._stream.call_id

    @property
    def start(self) -> CallStart | None:
        return self._stream.start

    @property
    def player(self) -> Player | None:
        return None

    @property
    def stream(self) -> CallStream:
        return self._stream

    async def send(self, frames: Any) -> None:
        raise ControlUnsupported("Bland's listen socket is listen-only")

    async def end_stream(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close(1000, "callscribe ended the subscription")

    async def run(self) -> str:
        """Listen until the call ends; returns how it ended."""
        logs.bind_call(self.request.call_id)  # this task's log lines are about the call
        reason = "closed"
        try:
            reason = await self._listen()
        finally:
            if self._registry is not None:
                self._registry.remove(self)
            try:
                await self._stream.finish(reason, self._codec.flush())
            finally:
                await self._stream.close()
        return reason

    async def _listen(self) -> str:
        dropped_at: float | None = None
        while not self._stopping:
            url = await self._granted()
            if url is None:
                return "closed"
            try:
                async with connect(url, max_size=self._max_frame_bytes, open_timeout=10,
                                   ping_interval=20, ping_timeout=20) as ws:
                    self._ws = ws
                    await self._opened(dropped_at)
                    async for message in ws:
                        found = (self._codec.receive_binary(message) if isinstance(message, bytes)
                                 else self._codec.receive_text(message))
                        for event in found:
                            await self._stream.handle(event)
                if ws.close_code == 1000 or self._stopping:
                    return "closed"
            except ConnectionClosed:
                pass  # dropped mid-call: ask Bland again below
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                log.warning("bland call %s: cannot connect to the listen URL: %s",
                            self.request.call_id, exc)
            finally:
                self._ws = None
            dropped_at = time.monotonic()
            log.info("bland call %s: listen socket dropped; reconnecting", self.request.call_id)
        return "closed"

    async def _opened(self, dropped_at: float | None) -> None:
        self.connections += 1
        for event in self._codec.begin():
            await self._stream.handle(event)
            if self._registry is not None:
                self._registry.add(self)
        if dropped_at is not None and self._fill_outages:
            await self._stream.add_silence(int((time.monotonic() - dropped_at) * 1000))

    async def _granted(self) -> str | None:
        """A listen URL, retrying what is retriable; None when the subscription is over."""
        delays = iter(self._backoff.delays())
        while True:
            try:
                return await self._request_listen()
            except BlandListenRefused as exc:
                over = exc.code == "INVALID_CALL_STATUS" or (
                    exc.code == "CALL_NOT_FOUND" and self.connections > 0)
                if over:
                    log.info("bland call %s: the call is over (%s)", self.request.call_id,
                             exc.code)
                    if not self._stream.started:
                        await self._fail(exc.code, str(exc))
                    return None
                failure: ProviderRefused = exc
            except ProviderRefused as exc:
                failure = exc
            delay = next(delays, None) if failure.retriable else None
            if delay is None:
                code = failure.code if isinstance(failure, BlandListenRefused) else "UNREACHABLE"
                log.warning("bland call %s: subscription failed: %s", self.request.call_id,
                            failure)
                await self._fail(code, str(failure))
                return None
            await asyncio.sleep(delay)

    async def _request_listen(self) -> str:
        if not self._api_key:
            raise BlandListenRefused("INVALID_ORG_PREFERENCES",
                                     "CALLSCRIBE_BLAND_API_KEY is not set")
        url = bland.listen_url(self._api_url, self.request.call_id)
        try:
            async with self._http.post(url, headers={"authorization": self._api_key}) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderRefused(f"POST {url} failed: {type(exc).__name__} {exc}",
                                  retriable=True) from exc
        return bland.parse_listen_response(status, body).url

    async def _fail(self, code: str, description: str) -> None:
        metrics.INGEST_REJECTED.labels(self.provider, f"listen_{code.lower()}"[:40]).inc()
        if self._stream.started:
            return  # the call.ended that follows says it ended
        record = failure_record(self.request, code, description)
        await self._stream.publish_unstarted(self.request.call_id, record)


class SubscriptionManager:
    """Takes subscription requests from the topic (one consumer group for all replicas) and
    runs them; :meth:`take` starts one directly."""

    def __init__(self, *, bootstrap: str, topics: Topics, group_id: str,
                 producer: AIOKafkaProducer, registry: CallRegistry, chunk_ms: int = 100,
                 max_in_flight: int = 200, buffer_s: float = BUFFER_S,
                 budget: Budget | None = None, api_url: str, api_key: str | None,
                 retry_s: float = 60.0, max_age_s: float = 600.0,
                 fetch_max_wait_ms: int = 20, security: KafkaSecurity = PLAINTEXT) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._topics = topics
        self._group_id = group_id
        self._producer = producer
        self._registry = registry
        self._chunk_ms = chunk_ms
        self._max_in_flight = max_in_flight
        self._buffer_s = buffer_s
        self._budget = budget if budget is not None else Budget(UNBOUNDED)
        self._api_url = api_url
        self._api_key = api_key
        self._backoff = Backoff(budget_s=retry_s)
        self._max_age_s = max_age_s
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.active: dict[str, tuple[BlandSubscription, asyncio.Task[str]]] = {}

    async def start(self) -> None:
        """Join the group in the background (a join can take seconds; calls need not wait)."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        self._consumer = new_consumer(
            self._bootstrap, self._topics.subscriptions, security=self._security,
            group_id=self._group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms, client_id="ingest-subscriptions",
            heartbeat_interval_ms=1000)  # a replica joining or leaving rebalances quickly
        self._task = asyncio.create_task(self._run(), name="ingest-subscriptions")

    async def stop(self, deadline_s: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscription, _ in list(self.active.values()):
            await subscription.end_stream()
        tasks = [task for _, task in self.active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=deadline_s)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        assert self._consumer is not None
        await self._consumer.start()
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        self._take_record(message)
                if batches:
                    await self._consumer.commit()  # taken: running here from now on
            except KafkaError as exc:
                log.warning("subscriptions topic unavailable: %s", exc)
                await asyncio.sleep(1)

    def _take_record(self, message: ConsumerRecord[bytes, bytes]) -> None:
        request = decode_or_skip(
            message, lambda m: SubscriptionRequest.from_json(loads(m.value)), logger=log)
        if request is None:
            return
        if request.age_s() > self._max_age_s:
            log.info("skipped subscription %s for call %s: requested too long ago",
                     request.id, request.call_id)
            return
        self.take(request)

    def take(self, request: SubscriptionRequest) -> BlandSubscription | None:
        """Run ``request`` here (None when it is not for Bland or the call is subscribed)."""
        if request.provider not in PROVIDERS or request.call_id in self.active:
            return None
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        publisher = CallPublisher.for_call(
            self._producer, self._topics, provider=request.provider, chunk_ms=self._chunk_ms,
            max_in_flight=self._max_in_flight, buffer_s=self._buffer_s, budget=self._budget)
        stream = CallStream(publisher, provider=request.provider, chunk_ms=self._chunk_ms)
        subscription = BlandSubscription(request, stream=stream, http=self._http,
                                         api_url=self._api_url, api_key=self._api_key,
                                         backoff=self._backoff, registry=self._registry)
        task = asyncio.create_task(subscription.run(), name=f"bland-{request.call_id}")
        self.active[request.call_id] = (subscription, task)
        task.add_done_callback(lambda _: self.active.pop(request.call_id, None))
        log.info("bland call %s: subscription %s taken", request.call_id, request.id)
        return subscription


async def publish_request(producer: AIOKafkaProducer, topics: Topics,
                          request: SubscriptionRequest) -> None:
    """Put a request on the subscriptions topic (waits until the broker has it)."""
    await producer.send_and_wait(topics.subscriptions, key=request.call_id.encode(),
                                 value=dumps(request.to_json()))


__all__ = ["Backoff", "BlandSubscription", "SubscriptionManager", "SubscriptionRequest",
           "failure_record", "publish_request"]
