"""The Faust app of the stream workers (transcribe, assist): one factory, so each worker's
``app.py`` keeps only its topics and agents (faust-streaming's ``proj/<domain>/agents.py`` over
one app).

What every callscribe Faust app shares:

* **A low-latency consumer.** Faust hard-codes a 1.5 s ``fetch_max_wait_ms``, which against a
  broker that honours it (Tansu does) adds up to 1.5 s to every hop; the app's transport builds
  its consumers with ``CALLSCRIBE_FETCH_MAX_WAIT_MS`` instead (:attr:`App.fetch_max_wait_ms`).
* **Broker settings:** the bootstrap servers, TLS/SASL credentials of every client faust builds
  (consumer, producer, topic creation), short session and rebalance timeouts, ``acks=all``
  without linger, earliest offsets for a new group, an in-memory store.
* **Probe pages** on ``web_port``, all addresses: ``/healthz``, ``/readyz`` (ready once
  partitions were assigned, until the app stops, while the brokers answer a metadata request
  (:class:`workers.kafka.BrokerProbe`)) and ``/metrics``.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web import Request, Response, View

from workers import metrics
from workers.kafka import BrokerProbe
from workers.kafka_security import faust_credentials
from workers.settings import KafkaSettings

#: How long the broker may take to answer a request (seconds). A stopping worker's producer
#: flush, offset commit and group leave are each bounded by it (deploy/ sizes the termination
#: grace period from it: tests/deploy/test_manifests.py).
BROKER_REQUEST_TIMEOUT_S = 20


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        assert isinstance(app, App), app  # only App's transport builds this thread
        # Read by AIOKafkaConsumer.start(); faust offers no setting for it.
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        return consumer


class _LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _LowLatencyTransport(faust_aiokafka.Transport):
    Consumer = _LowLatencyConsumer


class App(faust.App):
    """A ``faust.App`` whose consumers wait at most :attr:`fetch_max_wait_ms` for data."""

    #: Longest a consumer fetch may wait for data, in ms (set by :func:`create_app`).
    fetch_max_wait_ms: int = 20
    #: Whether the brokers answer (set by :func:`create_app`): readiness, and a clock that
    #: stops during an outage.
    broker_probe: BrokerProbe | None = None

    def _new_transport(self) -> Any:
        return _LowLatencyTransport(self.conf.broker_consumer, self)


def create_app(settings: KafkaSettings, *, group_id: str, web_port: int,
               **conf: Any) -> App:
    """A Faust app consuming as ``group_id``, with the shared broker settings and probe pages
    on ``web_port``; ``conf`` adds or overrides faust settings for one worker."""
    servers = settings.bootstrap.split(",")
    shared: dict[str, Any] = dict(
        broker=f"kafka://{servers[0]}",
        broker_consumer=[f"kafka://{b}" for b in servers],
        broker_producer=[f"kafka://{b}" for b in servers],
        store="memory://",
        # TLS/SASL of every client faust builds (consumer, producer, topic creation).
        broker_credentials=faust_credentials(settings.kafka_security()),
        web_enabled=True, web_port=web_port, web_bind="0.0.0.0", web_host="127.0.0.1",
        broker_session_timeout=6, broker_rebalance_timeout=6, broker_heartbeat_interval=1,
        broker_request_timeout=BROKER_REQUEST_TIMEOUT_S,
        topic_disable_leader=True, topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1, producer_linger=0.0,
        broker_commit_every=50, broker_commit_interval=1.0,
        stream_buffer_maxsize=256,
    )
    app = App(group_id, **{**shared, **conf})
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.broker_probe = BrokerProbe(settings.bootstrap, security=settings.kafka_security(),
                                   name=group_id)
    add_probe_pages(app, app.broker_probe)
    return app


def add_probe_pages(app: faust.App, probe: BrokerProbe) -> None:
    """``/healthz``, ``/readyz`` (200 once partitions are assigned, 503 before, while the app
    stops and while ``probe`` gets no answer from the brokers) and ``/metrics`` (Prometheus
    exposition)."""
    state = {"ready": False}

    @app.task  # type: ignore[untyped-decorator]  # faust's task is untyped
    async def probe_brokers() -> None:
        await probe.run()  # cancelled when the app stops

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        state["ready"] = True

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.text("ok\n")

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            ready = state["ready"] and not app.should_stop and probe.reachable
            return self.text("ready\n" if ready else "not ready\n", status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body, content_type = metrics.exposition()
            return self.bytes(body, content_type=content_type.split(";")[0])


__all__ = ["BROKER_REQUEST_TIMEOUT_S", "App", "add_probe_pages", "create_app"]
