"""The ingest WebSocket server: provider path → provider session, auth, health, metrics, drain.

Paths: each registered provider's (:mod:`workers.ingest.providers`: ``/jambonz``, ``/plivo``,
``/twilio``, ``/audiohook``), ``/healthz``, ``/readyz``, ``/metrics``. (``POST
/v1/subscriptions`` is on the ingest API port, :mod:`workers.ingest.api`: this server is
``websockets``, GET only.) This module holds no provider names: the provider of a path
declares its codec, its handshake check (a refusal with a status, or accept-then-close as
Plivo's SDK does) and its refusal of anonymous connections.

Anonymous connections: a provider path whose credential is not configured is refused at the
handshake unless ``allow_anonymous`` (``CALLSCRIBE_INGEST_ALLOW_ANONYMOUS``, false by default
in ``callscribe ingest``; ``callscribe up`` sets it), with the failure each provider documents
for a refused upgrade (401 with ``WWW-Authenticate`` on /jambonz, 403 on /plivo and /twilio,
401 on /audiohook). A client address with ``max_connections_per_address`` connections open
(or opening) gets **429** at the handshake; a handshake not finished within
``open_timeout_s`` is dropped.

Close codes used on provider connections (``docs/providers.md``): 1000 normal, 1001 worker
shutting down, 1003 unsupported audio (rate, mix, encoding), 1007 a first frame that is not
a JSON object, 1008 protocol violation (audio before the start) or bad signature, 1009
message too big, 1011 internal error (Kafka refused the audio, or did not acknowledge it within
``CALLSCRIBE_INGEST_DELIVERY_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from workers import metrics
from workers.ingest import providers
from workers.ingest.outbox import UNBOUNDED, Budget
from workers.ingest.providers.base import (
    CloseAfterAccept,
    Handshake,
    Provider,
    ProviderOptions,
    Refuse,
    basic_auth_ok,
)
from workers.ingest.session import (
    BUFFER_S,
    CallPublisher,
    CallRegistry,
    CallStream,
    ProviderSession,
)
from workers.records import Topics

log = logging.getLogger(__name__)

PROVIDER_PATHS = providers.paths()


def http_response(status: HTTPStatus, body: bytes, content_type: str = "text/plain") -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


def refusal(refuse: Refuse) -> Response:
    response = http_response(refuse.status, refuse.body)
    for name, value in refuse.headers:
        response.headers[name] = value
    return response


def _host(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else ""


def request_urls(request: Request, public_url: str | None) -> list[str]:
    """The URLs a provider may have signed for this request: the configured public base +
    the request's path and query, else ``wss://`` and ``ws://`` + the Host header."""
    if public_url:
        return [public_url.rstrip("/") + request.path]
    host = request.headers.get("Host", "")
    return [f"wss://{host}{request.path}", f"ws://{host}{request.path}"]


class IngestServer:
    """Accepts provider connections and runs one session per call."""

    def __init__(self, *, producer: AIOKafkaProducer, topics: Topics, host: str, port: int,
                 chunk_ms: int = 100, max_frame_bytes: int = 1 << 20,
                 max_in_flight: int = 200, options: ProviderOptions | None = None,
                 registry: CallRegistry | None = None, allow_anonymous: bool = True,
                 open_timeout_s: float = 10.0, max_connections_per_address: int = 0,
                 broker_reachable: Callable[[], bool] | None = None,
                 buffer_s: float = BUFFER_S, budget: Budget | None = None,
                 **credentials: Any) -> None:
        """``options``: every provider's credentials; ``credentials`` are its fields as
        keywords instead (``jambonz_auth=``, ``twilio_auth_token=``, ``public_url=``...).
        ``allow_anonymous`` is true here for embedding (tests, benchmarks); the worker
        passes ``CALLSCRIBE_INGEST_ALLOW_ANONYMOUS``, false unless set. 0: no address cap.
        ``broker_reachable``: whether Kafka answers (``BrokerProbe.reachable``); ``/readyz``
        fails while it says no, but calls are still accepted (their audio is buffered and
        back-pressured until Kafka answers again). ``buffer_s``: seconds of a call's audio
        held until Kafka acknowledges it (:mod:`workers.ingest.outbox`); ``max_in_flight``:
        of those, how many records the producer may hold unacknowledged; ``budget``: the bytes
        every call may hold together (shared with the subscriptions; unbounded if None)."""
        self._producer = producer
        self._topics = topics
        self._host = host
        self._port = port
        self._chunk_ms = chunk_ms
        self._max_frame_bytes = max_frame_bytes
        self._max_in_flight = max_in_flight
        self._buffer_s = buffer_s
        self._budget = budget if budget is not None else Budget(UNBOUNDED)
        if options is not None and credentials:
            raise TypeError("pass provider credentials as options or as keywords, not both")
        self._options = options if options is not None else ProviderOptions(**credentials)
        self._allow_anonymous = allow_anonymous
        self._open_timeout_s = open_timeout_s
        self._max_per_address = max_connections_per_address
        self.registry = registry if registry is not None else CallRegistry()
        self._server: Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._bad_signature: weakref.WeakKeyDictionary[ServerConnection, CloseAfterAccept] = \
            weakref.WeakKeyDictionary()
        self.ready = False
        self._broker_reachable = broker_reachable

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await serve(
            self._handle, self._host, self._port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=self._max_frame_bytes,
            max_queue=64,
            # No permessage-deflate: audio barely compresses; inflating every 20 ms frame
            # is CPU for nothing, and a zlib context per connection (bench.ingest_scale).
            # Clients that offer it (websockets, Node's ws) get none.
            compression=None,
            ping_interval=20, ping_timeout=20,
            open_timeout=self._open_timeout_s,
        )
        self.ready = True
        log.info("ingest listening on %s:%d", self._host, self.port)

    async def drain(self, deadline_s: float) -> None:
        """SIGTERM: not ready → refuse new calls → let live calls end → close the rest 1001.

        The listener stays open until the deadline so that ``/readyz`` answers 503 and a new
        call is refused with 503 (rather than a refused connection) while live calls finish.
        """
        self.ready = False
        if self._server is None:
            return
        if self._sessions:
            log.info("draining %d live calls for up to %.0fs", len(self._sessions), deadline_s)
            await asyncio.wait(self._sessions, timeout=deadline_s)
        self._server.close(close_connections=False)
        # The calls still live at the deadline, all at once: each close waits up to 10 s for
        # the provider's close handshake, which a socket whose reading is paused (Kafka not
        # taking the audio) may not get; one after another, the last ones were still open
        # when the stop deadline ended the process (bench.faults stop-frozen: close 1006).
        await asyncio.gather(*(connection.close(1001, "callscribe ingest is shutting down")
                               for connection in list(self._server.connections)),
                             return_exceptions=True)
        if self._sessions:
            await asyncio.wait(self._sessions, timeout=10)
        await self._server.wait_closed()

    def _select_subprotocol(self, connection: ServerConnection,
                            offered: Sequence[Subprotocol]) -> Subprotocol | None:
        # Echo the provider's name offered (jambonz: either spelling); accept clients that
        # offer none.
        request = connection.request
        provider = providers.by_path(request.path.split("?", 1)[0]) if request else None
        for name in offered:
            if provider is not None and name in provider.subprotocols:
                return name
        return None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return http_response(HTTPStatus.OK, b"ok\n")
        if path == "/readyz":
            if self.ready and (self._broker_reachable is None or self._broker_reachable()):
                return http_response(HTTPStatus.OK, b"ready\n")
            return http_response(HTTPStatus.SERVICE_UNAVAILABLE, b"not ready\n")
        if path == "/metrics":
            body, content_type = metrics.exposition()
            return http_response(HTTPStatus.OK, body, content_type)
        provider = providers.by_path(path)
        if provider is None:
            metrics.INGEST_REJECTED.labels("unknown", "unknown_path").inc()
            listed = ", ".join(PROVIDER_PATHS[:-1]) + " or " + PROVIDER_PATHS[-1]
            return http_response(HTTPStatus.NOT_FOUND, b"unknown path; providers connect to "
                                 + listed.encode() + b"\n")
        if not self.ready:
            return http_response(HTTPStatus.SERVICE_UNAVAILABLE, b"shutting down\n")
        refused = self._check_anonymous(provider) or self._check_address(connection)
        if refused is not None:
            return refused
        return self._check_provider(provider, connection, request)

    def _check_provider(self, provider: Provider, connection: ServerConnection,
                        request: Request) -> Response | None:
        handshake = Handshake(path=request.path, headers=request.headers,
                              urls=tuple(request_urls(request, self._options.public_url)),
                              now=time.time())
        verdict = provider.check(handshake, self._options)
        if isinstance(verdict, CloseAfterAccept):
            self._bad_signature[connection] = verdict  # accepted, then closed
            return None
        if verdict is None:
            return None
        metrics.INGEST_REJECTED.labels(provider.name, verdict.reason).inc()
        log.warning("%s connection refused: %s", provider.name, verdict.log or verdict.reason)
        return refusal(verdict)

    def anonymous_paths(self) -> list[str]:
        """Provider paths without a configured credential (open to anyone who reaches us)."""
        return [path for provider in providers.providers() for path in provider.paths
                if provider.anonymous_allowed and not provider.configured(self._options)]

    def refused_paths(self) -> list[str]:
        """Provider paths refused whatever ``allow_anonymous`` says (credential unset)."""
        return [path for provider in providers.providers() for path in provider.paths
                if not provider.anonymous_allowed and not provider.configured(self._options)]

    def anonymous_settings(self) -> list[str]:
        """The settings that would configure the anonymous paths' credentials."""
        return [setting for provider in providers.providers()
                if provider.paths and provider.anonymous_allowed
                and not provider.configured(self._options)
                for setting in provider.credential_settings]

    def refused_settings(self) -> list[str]:
        """The settings that would open the refused paths."""
        return [setting for provider in providers.providers()
                if provider.paths and not provider.anonymous_allowed
                and not provider.configured(self._options)
                for setting in provider.credential_settings]

    def _check_anonymous(self, provider: Provider) -> Response | None:
        if provider.configured(self._options) or (self._allow_anonymous
                                                  and provider.anonymous_allowed):
            return None
        metrics.INGEST_REJECTED.labels(provider.name, "anonymous").inc()
        if provider.anonymous_allowed:
            log.warning("%s connection refused: no %s credentials are configured and "
                        "CALLSCRIBE_INGEST_ALLOW_ANONYMOUS is false", provider.name,
                        provider.name)
        else:
            log.warning("%s connection refused: %s is not set (this path is never anonymous)",
                        provider.name, " / ".join(provider.credential_settings))
        return refusal(provider.anonymous())

    def _check_address(self, connection: ServerConnection) -> Response | None:
        """429 when this client address already has the most connections it may have."""
        if not self._max_per_address or self._server is None:
            return None
        address = _host(connection)
        open_ = sum(1 for c in self._server.all_connections
                    if c is not connection and _host(c) == address
                    and c.protocol.state is not State.CLOSED)
        if open_ < self._max_per_address:
            return None
        metrics.INGEST_REJECTED.labels("unknown", "too_many_connections").inc()
        log.warning("connection from %s refused: it has %d open (the most allowed)",
                    address, open_)
        response = http_response(HTTPStatus.TOO_MANY_REQUESTS,
                                 b"too many connections from this address\n")
        response.headers["Retry-After"] = "5"
        return response

    async def _handle(self, connection: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        path = connection.request.path.split("?", 1)[0] if connection.request else ""
        provider = providers.by_path(path)
        assert provider is not None, "the handshake refused unknown paths"
        codec = provider.codec(self._options)
        publisher = CallPublisher.for_call(
            self._producer, self._topics, provider=codec.provider, chunk_ms=self._chunk_ms,
            max_in_flight=self._max_in_flight, buffer_s=self._buffer_s, budget=self._budget)
        stream = CallStream(publisher, provider=codec.provider, chunk_ms=self._chunk_ms)
        session = ProviderSession(connection, stream, codec, registry=self.registry)
        try:
            close = self._bad_signature.pop(connection, None)
            if close is not None:
                metrics.INGEST_REJECTED.labels(codec.provider, "auth").inc()
                log.warning("%s connection closed: signature validation failed",
                            codec.provider)
                await connection.close(close.code, close.reason)
                return
            await session.run()
        except KafkaError:
            metrics.INGEST_PUBLISH_FAILURES.labels("any").inc()
            log.exception("call %s: Kafka refused its records", session.call_id)
            await connection.close(1011, "callscribe could not store the audio")
        finally:
            await stream.close()
            self._sessions.discard(task)


__all__ = ["PROVIDER_PATHS", "IngestServer", "basic_auth_ok", "http_response", "refusal",
           "request_urls"]
