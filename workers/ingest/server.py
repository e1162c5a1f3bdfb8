"""The ingest WebSocket server: provider path → session, auth, health, metrics, drain.

Paths: ``/jambonz`` (jambonz ``listen``), ``/healthz``, ``/readyz``, ``/metrics``.

Close codes used on provider connections (see ``docs/close-codes.md``):
1000 normal, 1001 worker shutting down, 1003 unsupported audio (rate, mix), 1007 metadata that
is not JSON, 1008 protocol violation (audio before metadata), 1009 message too big,
1011 internal error (Kafka refused the audio).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
from collections.abc import Sequence
from http import HTTPStatus

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from workers import metrics
from workers.ingest.dialects import jambonz
from workers.ingest.session import CallPublisher, JambonzSession
from workers.kafka import OrderedSender
from workers.records import Topics

log = logging.getLogger(__name__)


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


class IngestServer:
    """Accepts provider connections and runs one session per call."""

    def __init__(self, *, producer: AIOKafkaProducer, topics: Topics, host: str, port: int,
                 chunk_ms: int = 100, max_frame_bytes: int = 1 << 20,
                 max_in_flight: int = 200, jambonz_auth: tuple[str, str] | None = None) -> None:
        self._producer = producer
        self._topics = topics
        self._host = host
        self._port = port
        self._chunk_ms = chunk_ms
        self._max_frame_bytes = max_frame_bytes
        self._max_in_flight = max_in_flight
        self._jambonz_auth = jambonz_auth
        self._server: Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
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
        if path != "/jambonz":
            metrics.INGEST_REJECTED.labels("unknown", "unknown_path").inc()
            return http_response(HTTPStatus.NOT_FOUND, b"unknown path; providers connect to "
                                 b"/jambonz\n")
        if not self.ready:
            return http_response(HTTPStatus.SERVICE_UNAVAILABLE, b"shutting down\n")
        if self._jambonz_auth and not basic_auth_ok(request.headers.get("Authorization"),
                                                    *self._jambonz_auth):
            metrics.INGEST_REJECTED.labels(jambonz.__name__.rsplit(".", 1)[-1], "auth").inc()
            log.warning("jambonz connection refused: bad or missing Basic credentials")
            response = http_response(HTTPStatus.UNAUTHORIZED, b"bad credentials\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="callscribe"'
            return response
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        sender = OrderedSender(self._producer, max_in_flight=self._max_in_flight)
        session = JambonzSession(connection, CallPublisher(sender, self._topics),
                                 chunk_ms=self._chunk_ms)
        try:
            await session.run()
        except KafkaError:
            metrics.INGEST_PUBLISH_FAILURES.labels("any").inc()
            log.exception("call %s: Kafka refused its records", session.call_id)
            await connection.close(1011, "callscribe could not store the audio")
        finally:
            self._sessions.discard(task)
