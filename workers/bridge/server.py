"""The bridge's HTTP and WebSocket server (aiohttp) and its Kafka consumer.

Routes: ``GET /ws/v1/liveCalls`` (the liveCalls protocol), ``POST /v1/tokens`` (mint a
conversation token), ``GET /v1/calls`` (live calls), ``GET /`` (the live web view),
``/healthz``, ``/readyz``, ``/metrics``.

Every replica reads the whole transcripts and calls topics itself (no consumer group), so any
replica can serve any call; the history it rebuilds from the topics is what it replays.
Close codes: 1000 after ``event:callEnd``, 1001 bridge shutting down, 1008 a client that keeps
sending malformed messages, 1009 a message over 64 KiB, 1013 a client too slow to keep up.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from workers import metrics
from workers.bridge import livecalls
from workers.bridge.hub import CallHub, Subscriber
from workers.bridge.tokens import TokenIssuer
from workers.errors import RecordError
from workers.records import ControlCommand, Topics, dumps, loads

log = logging.getLogger(__name__)

#: Malformed messages a client may send before it is closed with 1008.
MAX_CLIENT_ERRORS = 20
MAX_WS_MESSAGE_BYTES = 64 * 1024


class Bridge:
    """Serves liveCalls to clients from what it consumes; publishes their commands."""

    def __init__(self, *, bootstrap: str, topics: Topics, api_keys: frozenset[str],
                 issuer: TokenIssuer, hub: CallHub, client_queue_max: int = 256,
                 fetch_max_wait_ms: int = 20, transcripts_topic: str | None = None) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        #: Where the liveCalls messages come from: the assist worker's redacted copy of the
        #: transcripts (with its assist messages) unless configured otherwise.
        self._transcripts_topic = transcripts_topic or topics.transcripts_redacted
        self._api_keys = api_keys
        self._issuer = issuer
        self.hub = hub
        self._client_queue_max = client_queue_max
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._consume_task: asyncio.Task[None] | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.instance = uuid.uuid4().hex[:12]
        self.ready = False

    # ------------------------------------------------------------------ lifecycle

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get(livecalls.PATH, self.live_calls)
        app.router.add_post("/v1/tokens", self.mint_token)
        app.router.add_get("/v1/calls", self.list_calls)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/", self.index)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        from workers.kafka import new_producer, start_producer

        self._producer = new_producer(self._bootstrap, client_id=f"bridge-{self.instance}")
        await start_producer(self._producer)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_max_wait_ms, client_id=f"bridge-{self.instance}",
        )
        await self._consumer.start()
        partitions: list[TopicPartition] = []
        for topic in (self._topics.calls, self._transcripts_topic):
            for partition in sorted(await self._partitions(topic)):
                partitions.append(TopicPartition(topic, partition))
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._consume_task = asyncio.create_task(self._consume(), name="bridge-consume")
        self.ready = True

    async def _partitions(self, topic: str) -> set[int]:
        assert self._consumer is not None
        for _ in range(100):
            found = self._consumer.partitions_for_topic(topic)
            if found:
                return set(found)
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic} has no partitions; create the topics first")

    async def _on_shutdown(self, app: web.Application) -> None:
        """Drain: not ready, tell clients to reconnect elsewhere (1001), stop consuming."""
        self.ready = False
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"callscribe bridge is shutting down")
        if self._consume_task is not None:
            self._consume_task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for partition, messages in batches.items():
                for message in messages:
                    try:
                        record = loads(message.value)
                        if partition.topic == self._transcripts_topic:
                            self.hub.on_transcript_record(record)
                        else:
                            self.hub.on_call_record(record)
                    except (RecordError, KeyError) as exc:
                        metrics.RECORDS_SKIPPED.labels(partition.topic, "malformed").inc()
                        log.warning("skipped %s@%d: %s", partition, message.offset, exc)
                if messages:
                    self._observe_lag(partition, messages[-1].offset)

    def _observe_lag(self, partition: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        highwater = self._consumer.highwater(partition)
        if highwater is not None:
            metrics.KAFKA_CONSUMER_LAG.labels("bridge", partition.topic, str(
                partition.partition)).set(max(0, highwater - offset - 1))

    # ------------------------------------------------------------------ liveCalls

    async def live_calls(self, request: web.Request) -> web.StreamResponse:
        protocols_header = request.headers.get("Sec-WebSocket-Protocol")
        authorization = request.headers.get("Authorization")
        browser_key = livecalls.bearer_from_subprotocols(protocols_header)
        if authorization is None and browser_key is not None:
            authorization = f"Bearer {browser_key}"
        try:
            handshake = livecalls.check_handshake(
                request.path_qs, authorization, api_keys=self._api_keys,
                verify_token=self._issuer.verify, call_known=self.hub.is_live)
        except livecalls.HandshakeRejected as rejected:
            metrics.BRIDGE_HANDSHAKE_REJECTED.labels(str(rejected.status)).inc()
            if rejected.status == 401:
                metrics.BRIDGE_AUTH_FAILURES.labels("liveCalls").inc()
            log.info("liveCalls handshake refused: %s", rejected)
            return web.json_response(rejected.body, status=rejected.status,
                                     headers=dict(rejected.headers))
        chosen = livecalls.select_subprotocol(protocols_header)
        ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), heartbeat=20.0,
                                   max_msg_size=MAX_WS_MESSAGE_BYTES)
        await ws.prepare(request)
        subscriber, replay = self.hub.subscribe(handshake.call_id,
                                                resume_after=handshake.resume_after,
                                                maxsize=self._client_queue_max)
        self._sockets.add(ws)
        metrics.BRIDGE_CONNECTIONS.inc()
        relay = asyncio.create_task(self._relay(ws, subscriber, replay, handshake.interim))
        try:
            await self._read_commands(ws, handshake.call_id)
        finally:
            relay.cancel()
            self.hub.unsubscribe(subscriber)
            self._sockets.discard(ws)
            metrics.BRIDGE_CONNECTIONS.dec()
        return ws

    async def _relay(self, ws: web.WebSocketResponse, subscriber: Subscriber,
                     replay: list[dict[str, Any]], interim: bool) -> None:
        """Send the replay, then live records, until ``event:callEnd`` (close 1000)."""
        async def send(record: dict[str, Any]) -> bool:
            message = livecalls.to_client(record, interim=interim)
            if message is not None:
                await ws.send_str(json.dumps(message, ensure_ascii=False))
                metrics.BRIDGE_MESSAGES_SENT.labels(message["type"]).inc()
                produced = record.get("producedAtMs")
                if produced:
                    metrics.BRIDGE_DELIVERY_SECONDS.observe(max(0.0, time.time() - produced / 1000))
            return record.get("type") == "event:callEnd"

        overflow: asyncio.Task[Any] | None = None
        getter: asyncio.Task[Any] | None = None
        try:
            for record in replay:
                if await send(record):
                    await ws.close(code=1000, message=b"call ended")
                    return
            overflow = asyncio.create_task(subscriber.overflowed.wait())
            while True:
                getter = asyncio.create_task(subscriber.queue.get())
                done, _ = await asyncio.wait({getter, overflow},
                                             return_when=asyncio.FIRST_COMPLETED)
                if overflow in done:
                    await ws.close(code=1013, message=b"client too slow; reconnect with "
                                   b"resumeAfter")
                    return
                if await send(getter.result()):
                    await ws.close(code=1000, message=b"call ended")
                    return
        except ConnectionError:
            return
        finally:
            # Also when this relay is cancelled (the client left): nothing else would ever
            # wake these helpers, and they would linger until destroyed while pending.
            for helper in (getter, overflow):
                if helper is not None:
                    helper.cancel()

    async def _read_commands(self, ws: web.WebSocketResponse, call_id: str) -> None:
        errors = 0
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            try:
                command = livecalls.parse_client_message(msg.data)
            except livecalls.ClientMessageError as exc:
                errors += 1
                metrics.BRIDGE_CLIENT_ERRORS.inc()
                if errors == 1:
                    log.info("call %s: malformed liveCalls client message: %s", call_id, exc)
                await ws.send_str(json.dumps(livecalls.error(str(exc))))
                if errors >= MAX_CLIENT_ERRORS:
                    await ws.close(code=1008, message=b"too many malformed messages")
                continue
            await self._publish_command(ws, call_id, command)

    async def _publish_command(self, ws: web.WebSocketResponse, call_id: str,
                               command: livecalls.ClientCommand) -> None:
        assert self._producer is not None
        record = ControlCommand(call_id=call_id, type=command.type, id=command.id,
                                bridge=self.instance)
        started = time.monotonic()
        try:
            await self._producer.send_and_wait(self._topics.control, key=call_id.encode(),
                                               value=dumps(record.to_json()))
            metrics.KAFKA_PRODUCE_SECONDS.labels(self._topics.control).observe(
                time.monotonic() - started)
        except KafkaError:
            log.exception("call %s: could not publish %s", call_id, command.type)
            await ws.send_str(json.dumps(livecalls.error(
                f"The {command.type} command {command.id} could not be accepted now; "
                "send it again.")))
            return
        metrics.BRIDGE_CONTROL_PUBLISHED.labels(command.type).inc()
        await ws.send_str(json.dumps(livecalls.ack(command.id)))

    # ------------------------------------------------------------------ REST

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        given = key.strip().encode()
        return any(hmac.compare_digest(given, k.encode()) for k in self._api_keys)

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response(
            {"error": "unauthorized", "description": "Send 'Authorization: Bearer <api key>'."},
            status=401, headers={"WWW-Authenticate": 'Bearer realm="callscribe"'})

    async def mint_token(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            metrics.BRIDGE_AUTH_FAILURES.labels("tokens").inc()
            return self._unauthorized()
        try:
            body = await request.json()
        except ValueError:
            body = None
        call_id = body.get("call_id") if isinstance(body, dict) else None
        if not isinstance(call_id, str) or not call_id:
            return web.json_response(
                {"error": "invalid_request",
                 "description": 'Send a JSON body {"call_id": "<call id>"}.'}, status=400)
        token, expires_at = self._issuer.mint(call_id)
        return web.json_response({"token": token, "expires_at": expires_at})

    async def list_calls(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            metrics.BRIDGE_AUTH_FAILURES.labels("calls").inc()
            return self._unauthorized()
        return web.json_response({"calls": self.hub.live_calls()})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        consuming = self._consume_task is not None and not self._consume_task.done()
        if self.ready and consuming:
            return web.Response(text="ready\n")
        return web.Response(text="not ready\n", status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def index(self, request: web.Request) -> web.Response:
        page = resources.files("workers.bridge").joinpath("web/index.html").read_text()
        return web.Response(text=page, content_type="text/html")
