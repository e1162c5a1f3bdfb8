"""The bridge's HTTP and WebSocket server (aiohttp): its parts, split by role, put together.

* :class:`~workers.bridge.feed.TopicFeed` — the Kafka consumer of the calls and transcripts
  topics that fills the :class:`~workers.bridge.hub.CallHub` (every replica reads every
  partition itself, no consumer group, so any replica can serve any call).
* :class:`~workers.bridge.connection.LiveCallsEndpoint` — ``GET /ws/v1/liveCalls``, the
  liveCalls protocol; client commands go out through a
  :class:`~workers.bridge.connection.CommandPublisher` to the control topic, and which calls
  clients watch with interims through an
  :class:`~workers.bridge.interest.InterestPublisher` to the interest topic.
* :class:`~workers.bridge.listen_server.LiveListen` — ``POST /v1/calls/{call_id}/listen`` and
  ``GET /v1/listen/<token>`` (supervisor live listen).
* :class:`~workers.bridge.rest.RestRoutes` — ``POST /v1/tokens``, ``GET /v1/calls``, ``GET /``
  (the live web view), ``/healthz``, ``/readyz``, ``/metrics``.
* :mod:`workers.bridge.logfilter` — tokens blanked in the logs.

:class:`Bridge` owns what they share (readiness, the open sockets, the producer) and the
lifecycle: on start the producer, then the feed; on shutdown (SIGTERM) not ready (new
handshakes get 503), every socket closed with 1001 so clients reconnect to another replica,
the feeds and the consumer stopped, the producer flushed.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from workers.bridge import livecalls
from workers.bridge.connection import CommandPublisher, LiveCallsEndpoint
from workers.bridge.feed import TopicFeed
from workers.bridge.hub import CallHub
from workers.bridge.interest import InterestPublisher
from workers.bridge.listen_server import AudioFanout, LiveListen
from workers.bridge.logfilter import install_redaction
from workers.bridge.rest import RestRoutes
from workers.bridge.sockets import CLOSE_TIMEOUT_S, close_socket
from workers.bridge.tokens import TokenIssuer
from workers.kafka import BrokerProbe, new_producer, start_producer
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.records import Topics


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
                 max_connections_per_address: int = 0, interest_s: float = 15.0) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self.hub = hub
        self.close_timeout_s = close_timeout_s
        self.instance = uuid.uuid4().hex[:12]
        self.ready = False
        #: Open liveCalls and listen sockets, with their requests (to abort a stuck one).
        self._sockets: dict[web.WebSocketResponse, web.BaseRequest] = {}
        self.feed = TopicFeed(
            bootstrap=bootstrap, security=security, calls_topic=topics.calls,
            # The assist worker's redacted copy of the transcripts (with its assist messages)
            # unless configured otherwise.
            transcripts_topic=transcripts_topic or topics.transcripts_redacted,
            hub=hub, client_id=f"bridge-{self.instance}", fetch_max_wait_ms=fetch_max_wait_ms,
            on_call_ended=lambda call_id: self.listen.fanout.call_ended(call_id))
        self.commands = CommandPublisher(hub=hub, topic=topics.control, instance=self.instance)
        #: Calls watched here with interims, for CALLSCRIBE_INTERIMS=watched (None: off).
        self.interest = (InterestPublisher(topic=topics.interest, instance=self.instance,
                                           interval_s=interest_s) if interest_s > 0 else None)
        self.live_calls = LiveCallsEndpoint(
            hub=hub, issuer=issuer, api_keys=api_keys, commands=self.commands,
            ready=lambda: self.ready, sockets=self._sockets, client_queue_max=client_queue_max,
            heartbeat_s=heartbeat_s, client_messages_per_s=client_messages_per_s,
            client_messages_burst=client_messages_burst, close_timeout_s=close_timeout_s,
            max_per_address=max_connections_per_address, interest=self.interest)
        self.listen = LiveListen(
            hub=hub, issuer=issuer, api_keys=api_keys, enabled=live_listen_enabled,
            ready=lambda: self.ready, sockets=self._sockets, public_url=public_url,
            heartbeat_s=heartbeat_s, close_timeout_s=close_timeout_s,
            max_per_address=max_connections_per_address,
            fanout=AudioFanout(bootstrap=bootstrap, security=security, topic=topics.audio,
                               fetch_max_wait_ms=fetch_max_wait_ms,
                               partition_count=self.feed.partition_count,
                               client_id=f"bridge-{self.instance}-listen",
                               queue_frames=listen_queue_frames))
        #: Readiness follows Kafka: a metadata request every second on a client of its own.
        self._probe = BrokerProbe(bootstrap, security=security, name="bridge")
        self.rest = RestRoutes(hub=hub, issuer=issuer, api_keys=api_keys,
                               ready=lambda: (self.ready and self.feed.running
                                              and self._probe.reachable))

    def web_app(self) -> web.Application:
        install_redaction()
        app = web.Application(client_max_size=64 * 1024)
        self.live_calls.add_routes(app)
        self.rest.add_routes(app)
        self.listen.add_routes(app)
        self.rest.add_pages(app)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        producer = new_producer(self._bootstrap, client_id=f"bridge-{self.instance}",
                                security=self._security)
        await start_producer(producer, security=self._security)
        self.commands.producer = producer
        if self.interest is not None:
            self.interest.start(producer)
        await self.feed.start()
        await self._probe.start()
        self.ready = True

    async def _on_shutdown(self, app: web.Application) -> None:
        """Drain: not ready (new handshakes get 503), tell clients to reconnect elsewhere
        (1001), stop the feeds and the consumer, flush the producer."""
        self.ready = False
        await asyncio.gather(*(
            close_socket(ws, request, 1001, b"callscribe bridge is shutting down",
                         self.close_timeout_s)
            for ws, request in list(self._sockets.items())), return_exceptions=True)
        await self.listen.fanout.stop()
        await self.feed.stop()
        if self.interest is not None:
            await self.interest.stop()
        if self.commands.producer is not None:
            await self.commands.producer.stop()
        await self._probe.stop()


__all__ = ["Bridge"]
