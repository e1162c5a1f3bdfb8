"""The liveCalls WebSocket (``GET /ws/v1/liveCalls``), the I/O side of
:mod:`workers.bridge.livecalls`: one handler per connection, thin.

A connection is checked (:func:`~workers.bridge.livecalls.check_handshake`; refusals are JSON
``{"error", "description"}``: 400, 401, 404, 500, and 503 with ``Retry-After`` while the bridge
is not ready or drains), subscribed to its call in the :class:`~workers.bridge.hub.CallHub`,
and then served by two tasks: a relay that sends the replay and then live records from the
subscriber's bounded outbox (never awaited by the feed), and the handler itself, which reads
client commands and publishes each once per (call, id) to the control topic.

Close codes: 1000 after ``event:callEnd``, 1001 bridge shutting down, 1008 a client that keeps
sending malformed messages or sends faster than the rate limit, 1009 a message over 64 KiB,
1013 a client too slow to keep up. The server pings every ``heartbeat_s`` and drops a client
whose pong does not come within half of that.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from workers import logs, metrics
from workers.bridge import livecalls
from workers.bridge.hub import CallHub, Subscriber
from workers.bridge.interest import InterestPublisher
from workers.bridge.sockets import (
    CLOSE_TIMEOUT_S,
    SlowCloser,
    close_socket,
    stop_relay,
    too_many_from,
)
from workers.bridge.tokens import TokenIssuer
from workers.errors import OutboxOverflow
from workers.records import ControlCommand, dumps

log = logging.getLogger(__name__)

#: Malformed messages a client may send before it is closed with 1008.
MAX_CLIENT_ERRORS = livecalls.MAX_CLIENT_ERRORS
MAX_WS_MESSAGE_BYTES = 64 * 1024
#: Rendered messages kept so that a record fanned out to many clients is encoded once.
RENDER_CACHE = 4096
#: Message types counted in ``callscribe_bridge_messages_sent_total`` from the start.
SENT_TYPES = ("transcript", "transcript:interim", "event:start", "event:end", "event:callEnd",
              "error", "assist")


class Renderer:
    """The JSON text a client sees of a record, encoded once per record and client kind
    however many clients receive it (the newest :data:`RENDER_CACHE` are kept)."""

    def __init__(self, size: int = RENDER_CACHE) -> None:
        self._size = size
        self._rendered: collections.OrderedDict[tuple[str, str, bool], str | None] = \
            collections.OrderedDict()

    def text(self, record: dict[str, Any], interim: bool) -> str | None:
        """``None``: the client sees nothing of ``record``."""
        record_id = record.get("id")
        if record_id is None:
            return self._render(record, interim)
        key = (str(record.get("callId")), f"{record_id}#{record.get('revision')}", interim)
        try:
            return self._rendered[key]
        except KeyError:
            pass
        text = self._rendered[key] = self._render(record, interim)
        if len(self._rendered) > self._size:
            self._rendered.popitem(last=False)
        return text

    @staticmethod
    def _render(record: dict[str, Any], interim: bool) -> str | None:
        message = livecalls.to_client(record, interim=interim)
        return None if message is None else json.dumps(message, ensure_ascii=False)


class CommandPublisher:
    """Publishes client commands to the control topic, once per (call, command id) on this
    bridge: a repeated id is acked (after the first copy is stored) without publishing it
    again; the outcome comes back on the calls topic."""

    def __init__(self, *, hub: CallHub, topic: str, instance: str) -> None:
        self._hub = hub
        self._topic = topic
        self._instance = instance
        self.producer: AIOKafkaProducer | None = None  # set once started
        self._inflight: dict[tuple[str, str], asyncio.Future[bool]] = {}

    async def answer(self, call_id: str, command: livecalls.ClientCommand) -> dict[str, Any]:
        """Publish ``command`` unless it was already; the ``ack`` or ``error`` to send."""
        key = (call_id, command.id)
        while (pending := self._inflight.get(key)) is not None:
            await asyncio.shield(pending)  # the first copy is being published
        previous = self._hub.remember_command(call_id, command.id, command.type)
        if previous == command.type:
            metrics.BRIDGE_CONTROL_DUPLICATES.labels(command.type).inc()
            return livecalls.ack(command.id)
        if previous is not None:
            return livecalls.error(
                f"The id {command.id} was already used for a {previous} command on this call; "
                "send each command with a new id.")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        stored = False
        try:
            stored = await self._publish(call_id, command)
        finally:
            del self._inflight[key]
            if not stored:
                self._hub.forget_command(call_id, command.id)
            done.set_result(stored)
        if stored:
            return livecalls.ack(command.id)
        return livecalls.error(f"The {command.type} command {command.id} could not be "
                               "accepted now; send it again.")

    async def _publish(self, call_id: str, command: livecalls.ClientCommand) -> bool:
        assert self.producer is not None
        record = ControlCommand(call_id=call_id, type=command.type, id=command.id,
                                bridge=self._instance)
        started = time.monotonic()
        try:
            await self.producer.send_and_wait(self._topic, key=call_id.encode(),
                                              value=dumps(record.to_json()))
        except KafkaError:
            log.exception("call %s: could not publish %s", call_id, command.type)
            return False
        metrics.KAFKA_PRODUCE_SECONDS.labels(self._topic).observe(time.monotonic() - started)
        metrics.BRIDGE_CONTROL_PUBLISHED.labels(command.type).inc()
        return True


class LiveCallsEndpoint:
    """The ``GET /ws/v1/liveCalls`` handler of a bridge."""

    def __init__(self, *, hub: CallHub, issuer: TokenIssuer, api_keys: frozenset[str],
                 commands: CommandPublisher, ready: Callable[[], bool],
                 sockets: dict[web.WebSocketResponse, web.BaseRequest],
                 client_queue_max: int = 256, heartbeat_s: float = 20.0,
                 client_messages_per_s: float = livecalls.CLIENT_MESSAGES_PER_S,
                 client_messages_burst: int = livecalls.CLIENT_MESSAGES_BURST,
                 close_timeout_s: float = CLOSE_TIMEOUT_S, max_per_address: int = 0,
                 interest: InterestPublisher | None = None) -> None:
        self._hub = hub
        self._interest = interest
        self._issuer = issuer
        self._api_keys = api_keys
        self._commands = commands
        self._ready = ready
        self._sockets = sockets
        self._client_queue_max = client_queue_max
        self._heartbeat_s = heartbeat_s
        self._rate = (client_messages_per_s, client_messages_burst)
        self.close_timeout_s = close_timeout_s
        self._max_per_address = max_per_address
        self._renderer = Renderer()
        self._sent = {t: metrics.BRIDGE_MESSAGES_SENT.labels(t) for t in SENT_TYPES}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(livecalls.PATH, self.handle)

    def _handshake(self, request: web.Request) -> livecalls.Handshake:
        if not self._ready():
            raise livecalls.draining()
        protocols_header = request.headers.get("Sec-WebSocket-Protocol")
        authorization = request.headers.get("Authorization")
        browser_key = livecalls.bearer_from_subprotocols(protocols_header)
        if authorization is None and browser_key is not None:
            authorization = f"Bearer {browser_key}"
        return livecalls.check_handshake(
            request.path_qs, authorization, api_keys=self._api_keys,
            verify_token=self._issuer.verify, call_known=self._hub.is_live,
            can_resume=self._hub.can_resume)

    async def handle(self, request: web.Request) -> web.StreamResponse:
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
        await self._serve(ws, request, handshake)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request,
                     handshake: livecalls.Handshake) -> None:
        """Relay the call's records to ``ws`` and read its commands until it closes."""
        logs.bind_call(handshake.call_id)  # this connection's log lines are about the call
        subscriber, replay = self._hub.subscribe(handshake.call_id,
                                                 resume_after=handshake.resume_after,
                                                 maxsize=self._client_queue_max)
        self._sockets[ws] = request
        metrics.BRIDGE_CONNECTIONS.inc()
        interest = self._interest if handshake.interim else None
        if interest is not None:
            interest.watch(handshake.call_id)
        relay = asyncio.create_task(self._relay(ws, subscriber, replay, handshake.interim,
                                                ended=not self._hub.is_live(handshake.call_id)))
        closer = SlowCloser(ws, request, b"client too slow; reconnect with resumeAfter",
                            self.close_timeout_s)
        subscriber.outbox.on_overflow = closer
        try:
            await self._read_commands(ws, request, handshake.call_id)
        except ConnectionError:
            pass  # the client left (or is being closed) while it was being answered
        finally:
            if interest is not None:
                interest.unwatch(handshake.call_id)
            self._hub.unsubscribe(subscriber)
            self._sockets.pop(ws, None)
            metrics.BRIDGE_CONNECTIONS.dec()
            await closer.wait()
            await stop_relay(relay, subscriber.outbox, request, self.close_timeout_s)

    @staticmethod
    def _refuse(rejected: livecalls.HandshakeRejected) -> web.Response:
        metrics.BRIDGE_HANDSHAKE_REJECTED.labels(str(rejected.status)).inc()
        if rejected.status == 401:
            metrics.BRIDGE_AUTH_FAILURES.labels("liveCalls").inc()
        log.info("liveCalls handshake refused: %s", rejected)
        return web.json_response(rejected.body, status=rejected.status,
                                 headers=dict(rejected.headers))

    async def _send(self, ws: web.WebSocketResponse, record: dict[str, Any],
                    interim: bool) -> bool:
        """Send one record; ``True`` when it was ``event:callEnd`` (nothing follows)."""
        kind = record.get("type")
        text = self._renderer.text(record, interim)
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
        except (OutboxOverflow, ConnectionError):
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
            await ws.send_str(json.dumps(await self._commands.answer(call_id, command)))


__all__ = ["CommandPublisher", "LiveCallsEndpoint", "Renderer"]
