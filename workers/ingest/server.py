"""The ingest WebSocket server: provider path → dialect session, auth, health, metrics, drain.

Paths: ``/jambonz`` (jambonz ``listen``), ``/plivo`` (Plivo Audio Streams), ``/twilio``
(Twilio Media Streams), ``/healthz``, ``/readyz``, ``/metrics``. (``POST /v1/subscriptions``
is on the ingest API port, :mod:`workers.ingest.api`: this server is ``websockets``, GET only.)

Auth per path: jambonz HTTP Basic (401 at the handshake); Plivo ``X-Plivo-Signature-V3``
(checked when a Plivo auth token is set: the upgrade is accepted and closed **1008
"Signature validation failed"**, as Plivo's own server SDK does); Twilio ``X-Twilio-Signature``
(checked when a Twilio auth token is set: 403 at the handshake).

Anonymous connections: a provider path whose credential is not configured is refused at the
handshake unless ``allow_anonymous`` (``CALLSCRIBE_INGEST_ALLOW_ANONYMOUS``, false by default
in ``callscribe ingest``; ``callscribe up`` sets it): 401 with ``WWW-Authenticate`` on
/jambonz, 403 on /plivo and /twilio, the failures each provider documents for a refused
upgrade. A client address with ``max_connections_per_address`` connections open (or opening)
gets **429** at the handshake; a handshake not finished within ``open_timeout_s`` is dropped.

Close codes used on provider connections (``docs/providers.md``): 1000 normal, 1001 worker
shutting down, 1003 unsupported audio (rate, mix, encoding), 1007 a first frame that is not
a JSON object, 1008 protocol violation (audio before the start) or bad signature, 1009
message too big, 1011 internal error (Kafka refused the audio).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import weakref
from collections.abc import Callable, Sequence
from http import HTTPStatus

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from workers import metrics
from workers.ingest.dialects import jambonz, plivo, twilio
from workers.ingest.dialects.events import Codec
from workers.ingest.session import CallPublisher, CallRegistry, CallStream, ProviderSession
from workers.kafka import OrderedSender
from workers.records import Topics

log = logging.getLogger(__name__)

PROVIDER_PATHS = ("/jambonz", "/plivo", "/twilio")


def http_response(status: HTTPStatus, body: bytes, content_type: str = "text/plain") -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


def basic_auth_ok(header: str | None, username: str, password: str) -> bool:
    """Whether an ``Authorization: Basic`` header carries exactly ``username:password``."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(given, f"{username}:{password}".encode())


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
                 max_in_flight: int = 200, jambonz_auth: tuple[str, str] | None = None,
                 plivo_auth_token: str | None = None, twilio_auth_token: str | None = None,
                 twilio_bidirectional: bool = False, public_url: str | None = None,
                 registry: CallRegistry | None = None, allow_anonymous: bool = True,
                 open_timeout_s: float = 10.0, max_connections_per_address: int = 0) -> None:
        """``allow_anonymous`` is true here for embedding (tests, benchmarks); the worker
        passes ``CALLSCRIBE_INGEST_ALLOW_ANONYMOUS``, false unless set. 0: no address cap."""
        self._producer = producer
        self._topics = topics
        self._host = host
        self._port = port
        self._chunk_ms = chunk_ms
        self._max_frame_bytes = max_frame_bytes
        self._max_in_flight = max_in_flight
        self._jambonz_auth = jambonz_auth
        self._plivo_token = plivo_auth_token
        self._twilio_token = twilio_auth_token
        self._twilio_bidirectional = twilio_bidirectional
        self._public_url = public_url
        self._allow_anonymous = allow_anonymous
        self._open_timeout_s = open_timeout_s
        self._max_per_address = max_connections_per_address
        self.registry = registry if registry is not None else CallRegistry()
        self._server: Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._bad_signature: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        self.ready = False

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
        for connection in list(self._server.connections):  # calls still live at the deadline
            await connection.close(1001, "callscribe ingest is shutting down")
        if self._sessions:
            await asyncio.wait(self._sessions, timeout=10)
        await self._server.wait_closed()

    def _select_subprotocol(self, connection: ServerConnection,
                            offered: Sequence[Subprotocol]) -> Subprotocol | None:
        # Echo the jambonz name offered (either spelling); accept clients that offer none.
        for name in offered:
            if name in jambonz.SUBPROTOCOLS:
                return name
        return None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return http_response(HTTPStatus.OK, b"ok\n")
        if path == "/readyz":
            if self.ready:
                return http_response(HTTPStatus.OK, b"ready\n")
            return http_response(HTTPStatus.SERVICE_UNAVAILABLE, b"not ready\n")
        if path == "/metrics":
            body, content_type = metrics.exposition()
            return http_response(HTTPStatus.OK, body, content_type)
        if path not in PROVIDER_PATHS:
            metrics.INGEST_REJECTED.labels("unknown", "unknown_path").inc()
            return http_response(HTTPStatus.NOT_FOUND, b"unknown path; providers connect to "
                                 b"/jambonz, /plivo or /twilio\n")
        if not self.ready:
            return http_response(HTTPStatus.SERVICE_UNAVAILABLE, b"shutting down\n")
        refused = self._check_anonymous(path) or self._check_address(connection)
        if refused is not None:
            return refused
        if path == "/jambonz":
            return self._check_jambonz(request)
        if path == "/twilio":
            return self._check_twilio(request)
        if self._plivo_token and not plivo.signature_ok(
                self._plivo_token, request_urls(request, self._public_url),
                request.headers.get(plivo.NONCE_HEADER),
                request.headers.get(plivo.SIGNATURE_HEADER)):
            self._bad_signature.add(connection)  # accepted, then closed 1008 (as Plivo's SDK)
        return None

    def anonymous_paths(self) -> list[str]:
        """Provider paths without a configured credential (open to anyone who reaches us)."""
        configured = {"/jambonz": self._jambonz_auth, "/plivo": self._plivo_token,
                      "/twilio": self._twilio_token}
        return [path for path in PROVIDER_PATHS if not configured[path]]

    def _check_anonymous(self, path: str) -> Response | None:
        if self._allow_anonymous or path not in self.anonymous_paths():
            return None
        provider = path.removeprefix("/")
        metrics.INGEST_REJECTED.labels(provider, "anonymous").inc()
        log.warning("%s connection refused: no %s credentials are configured and "
                    "CALLSCRIBE_INGEST_ALLOW_ANONYMOUS is false", provider, provider)
        if path == "/jambonz":
            response = http_response(HTTPStatus.UNAUTHORIZED, b"credentials required\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="callscribe"'
            return response
        return http_response(HTTPStatus.FORBIDDEN, b"signature required\n")

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

    def _check_jambonz(self, request: Request) -> Response | None:
        if self._jambonz_auth and not basic_auth_ok(request.headers.get("Authorization"),
                                                    *self._jambonz_auth):
            metrics.INGEST_REJECTED.labels("jambonz", "auth").inc()
            log.warning("jambonz connection refused: bad or missing Basic credentials")
            response = http_response(HTTPStatus.UNAUTHORIZED, b"bad credentials\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="callscribe"'
            return response
        return None

    def _check_twilio(self, request: Request) -> Response | None:
        if self._twilio_token and not twilio.signature_ok(
                self._twilio_token, request_urls(request, self._public_url),
                request.headers.get(twilio.SIGNATURE_HEADER)):
            metrics.INGEST_REJECTED.labels("twilio", "auth").inc()
            log.warning("twilio connection refused: bad or missing X-Twilio-Signature")
            return http_response(HTTPStatus.FORBIDDEN, b"bad signature\n")
        return None

    def _codec_for(self, path: str) -> Callable[[], Codec]:
        if path == "/plivo":
            return plivo.PlivoCodec
        if path == "/twilio":
            return lambda: twilio.TwilioCodec(bidirectional=self._twilio_bidirectional)
        return jambonz.JambonzCodec

    async def _handle(self, connection: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        codec = self._codec_for(connection.request.path.split("?", 1)[0]
                                if connection.request else "/jambonz")()
        sender = OrderedSender(self._producer, max_in_flight=self._max_in_flight)
        stream = CallStream(CallPublisher(sender, self._topics), provider=codec.provider,
                            chunk_ms=self._chunk_ms)
        session = ProviderSession(connection, stream, codec, registry=self.registry)
        try:
            if connection in self._bad_signature:
                self._bad_signature.discard(connection)
                metrics.INGEST_REJECTED.labels(codec.provider, "auth").inc()
                log.warning("%s connection closed: signature validation failed",
                            codec.provider)
                await connection.close(1008, "Signature validation failed")
                return
            await session.run()
        except KafkaError:
            metrics.INGEST_PUBLISH_FAILURES.labels("any").inc()
            log.exception("call %s: Kafka refused its records", session.call_id)
            await connection.close(1011, "callscribe could not store the audio")
        finally:
            self._sessions.discard(task)
