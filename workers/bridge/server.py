"""The bridge's HTTP and WebSocket server (aiohttp) and its Kafka consumer.

Routes: ``GET /ws/v1/liveCalls`` (the liveCalls protocol), ``POST /v1/tokens`` (mint a
conversation token), ``POST /v1/calls/{call_id}/listen`` and ``GET /v1/listen/<token>``
(supervisor live listen, :mod:`workers.bridge.listeners`), ``GET /v1/calls`` (live calls),
``GET /`` (the live web view), ``/healthz``, ``/readyz``, ``/metrics``.

Every replica reads the whole transcripts and calls topics itself (no consumer group), so any
replica can serve any call; the history it rebuilds from the topics is what it replays.
liveCalls handshake errors are JSON ``{"error", "description"}``: 400, 401, 404, 500, and 503
(with ``Retry-After``) while the bridge is not ready or drains. Close codes: 1000 after
``event:callEnd``, 1001 bridge shutting down, 1008 a client that keeps sending malformed
messages or sends faster than the rate limit, 1009 a message over 64 KiB, 1013 a client too
slow to keep up. The server pings every ``heartbeat_s`` and drops a client whose pong does not
come within half of that.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from workers import metrics
from workers.bridge import livecalls
from workers.bridge.hub import CallHub, Overflow, Subscriber
from workers.bridge.listeners import (
    CLOSE_TIMEOUT_S,
    AudioFanout,
    LiveListen,
    SlowCloser,
    close_socket,
    stop_relay,
    too_many_from,
)
from workers.bridge.tokens import TokenIssuer
from workers.errors import RecordError
from workers.kafka import BrokerProbe, new_consumer
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.records import ControlCommand, Topics, dumps, loads

log = logging.getLogger(__name__)

#: Malformed messages a client may send before it is closed with 1008.
MAX_CLIENT_ERRORS = livecalls.MAX_CLIENT_ERRORS
MAX_WS_MESSAGE_BYTES = 64 * 1024
#: Rendered messages kept so that a record fanned out to many clients is encoded once.
RENDER_CACHE = 4096


class RedactSecrets(logging.Filter):
    """Blanks conversation tokens and listen-URL tokens in log records (the access log prints
    request lines, and a request line carries them)."""

    _PATTERNS = (re.compile(r"(conversationToken=)[^&\s\"']+"),
                 re.compile(r"(/v1/listen/)[^/?\s\"']+"))

    @classmethod
    def redact(cls, text: str) -> str:
        for pattern in cls._PATTERNS:
            text = pattern.sub(r"\1<redacted>", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in ("msg", "name", "levelname", "pathname"):
                setattr(record, key, self.redact(value))
        return True


def _install_redaction() -> None:
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web", __name__,
                 "workers.bridge.listeners"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@functools.cache
def _inline_hashes(page: str) -> tuple[str, str]:
    """CSP source lists allowing exactly the page's own inline scripts and styles."""
    found: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        found[kind].append(f"'sha256-{digest}'")
    return " ".join(found["script"]) or "'none'", " ".join(found["style"]) or "'none'"


def page_security_headers(page: str, host: str) -> dict[str, str]:
    """A strict Content-Security-Policy for the web view: nothing but its own inline script
    and style (by hash: no other inline code, no eval, no third-party origin), connections to
    this bridge only, no framing; and no MIME sniffing or referrers."""
    scripts, styles = _inline_hashes(page)
    policy = "; ".join((
        "default-src 'none'", f"script-src {scripts}", f"style-src {styles}",
        f"connect-src 'self' ws://{host} wss://{host}", "img-src 'self' data:",
        "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"))
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


class Bridge:
    """Serves liveCalls and live listen to clients from what it consumes; publishes their
    commands."""

    def __init__(self, *, bootstrap: str, topics: Topics, api_keys: frozenset[str],
                 issuer: TokenIssuer, hub: CallHub, client_queue_max: int = 256,
                 fetch_max_wait_ms: int = 20, transcripts_topic: str | None = None,
                 live_listen_enabled: bool = True, public_url: str | None = None,
                 heartbeat_s: float = 20.0,
                 client_messages_per_s: float = livecalls.CLIENT_MESSAGES_PER_S,
                 client_messages_burst: int = livecalls.CLIENT_MESSAGES_BURST,
                 listen_queue_frames: int = 100,
                 close_timeout_s: float = CLOSE_TIMEOUT_S,
                 security: KafkaSecurity = PLAINTEXT,
                 max_connections_per_address: int = 0) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._max_per_address = max_connections_per_address
        self._topics = topics
        #: Where the liveCalls messages come from: the assist worker's redacted copy of the
        #: transcripts (with its assist messages) unless configured otherwise.
        self._transcripts_topic = transcripts_topic or topics.transcripts_redacted
        self._api_keys = api_keys
        self._issuer = issuer
        self.hub = hub
        self._client_queue_max = client_queue_max
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._heartbeat_s = heartbeat_s
        self._rate = (client_messages_per_s, client_messages_burst)
        self.close_timeout_s = close_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._consume_task: asyncio.Task[None] | None = None
        self._probe = BrokerProbe(bootstrap, security=security, name="bridge")
        #: Open liveCalls and listen sockets, with their requests (to abort a stuck one).
        self._sockets: dict[web.WebSocketResponse, web.BaseRequest] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._partition_counts: dict[str, int] = {}
        self._rendered: collections.OrderedDict[tuple[str, str, bool], str | None] = \
            collections.OrderedDict()
        self._sent = {t: metrics.BRIDGE_MESSAGES_SENT.labels(t) for t in (
            "transcript", "transcript:interim", "event:start", "event:end", "event:callEnd",
            "error", "assist")}
        self.instance = uuid.uuid4().hex[:12]
        self.ready = False
        self.listen = LiveListen(
            hub=hub, issuer=issuer, api_keys=api_keys, enabled=live_listen_enabled,
            ready=lambda: self.ready, sockets=self._sockets, public_url=public_url,
            heartbeat_s=heartbeat_s, close_timeout_s=close_timeout_s,
            max_per_address=max_connections_per_address,
            fanout=AudioFanout(bootstrap=bootstrap, security=security, topic=topics.audio,
                               fetch_max_wait_ms=fetch_max_wait_ms,
                               partition_count=self._partition_count,
                               client_id=f"bridge-{self.instance}-listen",
                               queue_frames=listen_queue_frames))

    # ------------------------------------------------------------------ lifecycle

    def web_app(self) -> web.Application:
        _install_redaction()
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get(livecalls.PATH, self.live_calls)
        app.router.add_post("/v1/tokens", self.mint_token)
        app.router.add_get("/v1/calls", self.list_calls)
        self.listen.add_routes(app)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/", self.index)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        from workers.kafka import new_producer, start_producer

        self._producer = new_producer(self._bootstrap, client_id=f"bridge-{self.instance}",
                                      security=self._security)
        await start_producer(self._producer, security=self._security)
        self._consumer = new_consumer(
            self._bootstrap, security=self._security, group_id=None, enable_auto_commit=False,
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
        await self._probe.start()
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

    async def _partition_count(self, topic: str) -> int:
        """Partitions of ``topic`` (for the audio topic, which this consumer is not assigned),
        from fresh cluster metadata once, then cached: adding partitions to a topic moves
        its keys, so it is not done to live topics."""
        count = self._partition_counts.get(topic)
        if count is None:
            assert self._consumer is not None
            metadata = await self._consumer._client.fetch_all_metadata()
            count = len(metadata.partitions_for_topic(topic) or ())
            if not count:
                raise RuntimeError(f"topic {topic} has no partitions; create the topics first")
            self._partition_counts[topic] = count
        return count

    async def _on_shutdown(self, app: web.Application) -> None:
        """Drain: not ready (new handshakes get 503), tell clients to reconnect elsewhere
        (1001), stop the feeds and the consumer, flush the producer."""
        self.ready = False
        await asyncio.gather(*(
            close_socket(ws, request, 1001, b"callscribe bridge is shutting down",
                         self.close_timeout_s)
            for ws, request in list(self._sockets.items())), return_exceptions=True)
        await self.listen.fanout.stop()
        if self._consume_task is not None:
            self._consume_task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        await self._probe.stop()

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
                            self._on_call_record(record)
                    except (RecordError, KeyError) as exc:
                        metrics.RECORDS_SKIPPED.labels(partition.topic, "malformed").inc()
                        log.warning("skipped %s@%d: %s", partition, message.offset, exc)
                    # Let the relays send this record before the next is offered: a fetched
                    # batch larger than a client's queue must not overflow a client that
                    # keeps up.
                    await asyncio.sleep(0)
                if messages:
                    self._observe_lag(partition, messages[-1].offset)

    def _on_call_record(self, record: dict[str, Any]) -> None:
        self.hub.on_call_record(record)
        kind = record.get("type")
        if kind == "call.ended":
            self.listen.fanout.call_ended(record["callId"])
        elif kind in ("call.joined", "call.control_failed"):
            outcome = "joined" if kind == "call.joined" else "failed"
            metrics.BRIDGE_CONTROL_OUTCOMES.labels(outcome).inc()

    def _observe_lag(self, partition: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        highwater = self._consumer.highwater(partition)
        if highwater is not None:
            metrics.KAFKA_CONSUMER_LAG.labels("bridge", partition.topic, str(
                partition.partition)).set(max(0, highwater - offset - 1))

    # ------------------------------------------------------------------ liveCalls

    def _handshake(self, request: web.Request) -> livecalls.Handshake:
        if not self.ready:
            raise livecalls.draining()
        protocols_header = request.headers.get("Sec-WebSocket-Protocol")
        authorization = request.headers.get("Authorization")
        browser_key = livecalls.bearer_from_subprotocols(protocols_header)
        if authorization is None and browser_key is not None:
            authorization = f"Bearer {browser_key}"
        return livecalls.check_handshake(
            request.path_qs, authorization, api_keys=self._api_keys,
            verify_token=self._issuer.verify, call_known=self.hub.is_live,
            can_resume=self.hub.can_resume)

    async def live_calls(self, request: web.Request) -> web.StreamResponse:
        crowded = too_many_from(request, self._sockets, self._max_per_address)
        if crowded is not None:
            return crowded
        try:
            handshake = self._handshake(request)
        except livecalls.HandshakeRejected as rejected:
            return self._refuse(rejected)
        except Exception:
            log.exception("liveCalls handshake failed")
            return self._refuse(livecalls.internal_error())
        chosen = livecalls.select_subprotocol(request.headers.get("Sec-WebSocket-Protocol"))
        ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (),
                                   heartbeat=self._heartbeat_s, compress=False,
                                   max_msg_size=MAX_WS_MESSAGE_BYTES)
        await ws.prepare(request)
        subscriber, replay = self.hub.subscribe(handshake.call_id,
                                                resume_after=handshake.resume_after,
                                                maxsize=self._client_queue_max)
        self._sockets[ws] = request
        metrics.BRIDGE_CONNECTIONS.inc()
        relay = asyncio.create_task(self._relay(ws, subscriber, replay, handshake.interim,
                                                ended=not self.hub.is_live(handshake.call_id)))
        closer = SlowCloser(ws, request, b"client too slow; reconnect with resumeAfter",
                            self.close_timeout_s)
        subscriber.outbox.on_overflow = closer
        try:
            await self._read_commands(ws, request, handshake.call_id)
        except ConnectionError:
            pass  # the client left (or is being closed) while it was being answered
        finally:
            self.hub.unsubscribe(subscriber)
            self._sockets.pop(ws, None)
            metrics.BRIDGE_CONNECTIONS.dec()
            await closer.wait()
            await stop_relay(relay, subscriber.outbox, request, self.close_timeout_s)
        return ws

    @staticmethod
    def _refuse(rejected: livecalls.HandshakeRejected) -> web.Response:
        metrics.BRIDGE_HANDSHAKE_REJECTED.labels(str(rejected.status)).inc()
        if rejected.status == 401:
            metrics.BRIDGE_AUTH_FAILURES.labels("liveCalls").inc()
        log.info("liveCalls handshake refused: %s", rejected)
        return web.json_response(rejected.body, status=rejected.status,
                                 headers=dict(rejected.headers))

    def _text(self, record: dict[str, Any], interim: bool) -> str | None:
        """The JSON text a client sees of ``record`` (``None``: nothing), encoded once per
        record and client kind however many clients receive it."""
        record_id = record.get("id")
        if record_id is None:
            message = livecalls.to_client(record, interim=interim)
            return None if message is None else json.dumps(message, ensure_ascii=False)
        key = (str(record.get("callId")), f"{record_id}#{record.get('revision')}", interim)
        try:
            return self._rendered[key]
        except KeyError:
            pass
        message = livecalls.to_client(record, interim=interim)
        text = None if message is None else json.dumps(message, ensure_ascii=False)
        self._rendered[key] = text
        if len(self._rendered) > RENDER_CACHE:
            self._rendered.popitem(last=False)
        return text

    async def _send(self, ws: web.WebSocketResponse, record: dict[str, Any],
                    interim: bool) -> bool:
        """Send one record; ``True`` when it was ``event:callEnd`` (nothing follows)."""
        kind = record.get("type")
        text = self._text(record, interim)
        if text is not None:
            await ws.send_str(text)
            counter = self._sent.get(str(kind))
            if counter is None:
                counter = self._sent[str(kind)] = metrics.BRIDGE_MESSAGES_SENT.labels(kind)
            counter.inc()
            produced = record.get("producedAtMs")
            if produced:
                metrics.BRIDGE_DELIVERY_SECONDS.observe(max(0.0, time.time() - produced / 1000))
        return kind == "event:callEnd"

    async def _relay(self, ws: web.WebSocketResponse, subscriber: Subscriber,
                     replay: list[dict[str, Any]], interim: bool, *, ended: bool) -> None:
        """Send the replay, then live records, until ``event:callEnd`` (close 1000). ``ended``:
        the call had ended when the client connected (to resume): after the replay, close."""
        try:
            for record in replay:
                if await self._send(ws, record, interim):
                    await ws.close(code=1000, message=b"call ended")
                    return
            if ended:
                await ws.close(code=1000, message=b"call ended")
                return
            while (live := await subscriber.outbox.get()) is not None:
                if await self._send(ws, live, interim):
                    await ws.close(code=1000, message=b"call ended")
                    return
        except (Overflow, ConnectionError):
            return  # an overflowed client is closed (1013) by its SlowCloser

    async def _read_commands(self, ws: web.WebSocketResponse, request: web.Request,
                             call_id: str) -> None:
        errors = 0
        limiter = livecalls.RateLimiter(*self._rate)
        loop = asyncio.get_running_loop()
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            if not limiter.allow(loop.time()):
                metrics.BRIDGE_RATE_LIMITED.inc()
                log.info("call %s: a liveCalls client sent over %.0f messages per second; "
                         "closing it", call_id, limiter.rate)
                await close_socket(ws, request, livecalls.RATE_LIMIT_CLOSE_CODE,
                                   livecalls.RATE_LIMIT_REASON.encode(), self.close_timeout_s)
                return
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
            await self._command(ws, call_id, command)

    async def _command(self, ws: web.WebSocketResponse, call_id: str,
                       command: livecalls.ClientCommand) -> None:
        """Publish a command once per (call, id) on this bridge: a repeated id is acked (after
        the first copy is stored) without publishing it again."""
        key = (call_id, command.id)
        while (pending := self._inflight.get(key)) is not None:
            await asyncio.shield(pending)  # the first copy is being published
        previous = self.hub.remember_command(call_id, command.id, command.type)
        if previous == command.type:
            metrics.BRIDGE_CONTROL_DUPLICATES.labels(command.type).inc()
            await ws.send_str(json.dumps(livecalls.ack(command.id)))
            return
        if previous is not None:
            await ws.send_str(json.dumps(livecalls.error(
                f"The id {command.id} was already used for a {previous} command on this call; "
                "send each command with a new id.")))
            return
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        stored = False
        try:
            stored = await self._publish_command(call_id, command)
        finally:
            del self._inflight[key]
            if not stored:
                self.hub.forget_command(call_id, command.id)
            done.set_result(stored)
        if stored:
            await ws.send_str(json.dumps(livecalls.ack(command.id)))
        else:
            await ws.send_str(json.dumps(livecalls.error(
                f"The {command.type} command {command.id} could not be accepted now; "
                "send it again.")))

    async def _publish_command(self, call_id: str, command: livecalls.ClientCommand) -> bool:
        assert self._producer is not None
        record = ControlCommand(call_id=call_id, type=command.type, id=command.id,
                                bridge=self.instance)
        started = time.monotonic()
        try:
            await self._producer.send_and_wait(self._topics.control, key=call_id.encode(),
                                               value=dumps(record.to_json()))
        except KafkaError:
            log.exception("call %s: could not publish %s", call_id, command.type)
            return False
        metrics.KAFKA_PRODUCE_SECONDS.labels(self._topics.control).observe(
            time.monotonic() - started)
        metrics.BRIDGE_CONTROL_PUBLISHED.labels(command.type).inc()
        return True

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
        if self.ready and consuming and self._probe.reachable:
            return web.Response(text="ready\n")
        return web.Response(text="not ready\n", status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def index(self, request: web.Request) -> web.Response:
        page = resources.files("workers.bridge").joinpath("web/index.html").read_text()
        return web.Response(text=page, content_type="text/html",
                            headers=page_security_headers(page, request.host))
