"""Kafka helpers shared by every worker: topic creation, producers, consumers, bounded in-flight
sends. Every aiokafka client callscribe builds is built here, with the worker's
:class:`~workers.kafka_security.KafkaSecurity` (tests/test_kafka_security.py checks that no other
module constructs one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from workers import metrics
from workers.errors import AuthError, BrokerUnavailable, RecordError, TopicNotFound
from workers.kafka_security import PLAINTEXT, KafkaSecurity, aiokafka_kwargs
from workers.logs import call_context

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that retrying cannot fix: the broker refused our credentials or mechanism.
AUTH_ERRORS = (SaslAuthenticationFailed, UnsupportedSaslMechanismError)


class KafkaAuthFailed(AuthError):
    """The brokers refused this client's credentials, mechanism or TLS handshake (fatal)."""


def client_kwargs(bootstrap: str, security: KafkaSecurity = PLAINTEXT) -> dict[str, Any]:
    """``bootstrap_servers`` and the security keyword arguments of any aiokafka client."""
    return {"bootstrap_servers": bootstrap, **aiokafka_kwargs(security)}


def new_consumer(bootstrap: str, *topics: str, security: KafkaSecurity = PLAINTEXT,
                 **kwargs: Any) -> AIOKafkaConsumer:
    """An ``AIOKafkaConsumer`` of ``topics`` with the worker's security settings."""
    return AIOKafkaConsumer(*topics, **client_kwargs(bootstrap, security), **kwargs)


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, *, attempts: int = 100,
                        interval_s: float = 0.1) -> set[int]:
    """The partitions of ``topic``, refreshing ``consumer``'s metadata while it knows none (a
    topic created a moment ago), ``attempts`` times; then :class:`TopicNotFound`."""
    for _ in range(attempts):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(interval_s)
    raise TopicNotFound(topic)


def decode_or_skip(message: Any, decode: Callable[[Any], T], *,
                   logger: logging.Logger = log,
                   errors: tuple[type[Exception], ...] = (RecordError,)) -> T | None:
    """``decode(message)``, or ``None`` when it raises one of ``errors``: the record is then
    skipped, counted in ``callscribe_records_skipped_total{topic, reason="malformed"}`` and
    logged with its position (on ``logger``, the consuming module's). ``message`` is an aiokafka
    ``ConsumerRecord`` or a faust ``Message`` (both have ``topic``, ``partition``, ``offset``,
    ``key``, ``value`` and ``headers``); ``decode`` may also hand the record on, when what
    follows the decoding can find the record malformed too. Lines logged meanwhile are about
    the record's call (:func:`record_call`)."""
    with call_context(record_call(message)):
        try:
            return decode(message)
        except errors as exc:
            metrics.RECORDS_SKIPPED.labels(message.topic, "malformed").inc()
            logger.warning("skipped record %s[%d]@%d: %s", message.topic, message.partition,
                           message.offset, exc)
            return None


def record_call(message: Any) -> str | None:
    """The call a record is about: its key (every callscribe record is keyed by call id)."""
    key = message.key
    if isinstance(key, bytes | bytearray) and key:
        return bytes(key).decode("utf-8", "replace")
    return None


def new_admin(bootstrap: str, *, security: KafkaSecurity = PLAINTEXT,
              request_timeout_ms: int = 5000) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_kwargs(bootstrap, security),
                               request_timeout_ms=request_timeout_ms)


def auth_failure(exc: BaseException, bootstrap: str,
                 security: KafkaSecurity) -> KafkaAuthFailed | None:
    """A :class:`KafkaAuthFailed` that says what was refused, if ``exc`` is a refusal.

    aiokafka reports a SCRAM refusal whose server-final message has no ``v=`` as a bare
    ``KeyError('v')`` (Tansu answers an unknown user so), hence the second test.
    """
    if isinstance(exc, AUTH_ERRORS) or (security.mechanism and security.mechanism.startswith(
            "SCRAM") and isinstance(exc, KeyError) and exc.args == ("v",)):
        return KafkaAuthFailed(
            f"Kafka at {bootstrap} refused SASL {security.mechanism} as "
            f"{security.username!r} over {security.protocol}: {exc!r}. Check "
            "CALLSCRIBE_KAFKA_SASL_* and that the mechanism is enabled on the listener.")
    return None


async def ensure_topics(bootstrap: str, names: Iterable[str], *, partitions: int,
                        replication: int = 1, wait_s: float = 30.0,
                        security: KafkaSecurity = PLAINTEXT) -> None:
    """Create each topic that does not exist yet; wait up to ``wait_s`` for the cluster."""
    deadline = time.monotonic() + wait_s
    while True:
        admin = new_admin(bootstrap, security=security)
        try:
            try:
                await admin.start()
            except (KeyError, *AUTH_ERRORS) as exc:
                refused = auth_failure(exc, bootstrap, security)
                if refused is None:
                    raise
                raise refused from exc
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication)
                     for n in missing]
                )
                log.info("created topics %s with %d partitions", ",".join(missing), partitions)
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"cannot create topics on {bootstrap} ({security.protocol}): {exc}"
                    + _hint(security)) from exc
            await asyncio.sleep(0.5)
        else:
            return
        finally:
            await admin.close()


def _hint(security: KafkaSecurity) -> str:
    """What to check when a cluster cannot be reached at all."""
    return (f". CALLSCRIBE_KAFKA_SECURITY_PROTOCOL is {security.protocol}: a TLS or SASL "
            "listener does not answer a PLAINTEXT client, nor the other way round; check it "
            "against the listener's port")


#: aiokafka's default ``max_batch_size``: the data buffered per partition, of which one batch
#: is in flight at a time; ``send`` waits while a partition's batch is full.
DEFAULT_BATCH_BYTES = 16 * 1024
#: The ingest's: 16 KiB is ten 100 ms records of 8 kHz audio, so a partition could take
#: (10 records / broker round trip): with 200 calls on one ingest process the round trips
#: stretched to 100-250 ms and audio waited seconds to be sent (bench.ingest_scale). 512 KiB
#: is 320 such records, under a broker's usual 1 MB message limit.
AUDIO_BATCH_BYTES = 512 * 1024


def new_producer(bootstrap: str, *, client_id: str, linger_ms: int = 2,
                 security: KafkaSecurity = PLAINTEXT,
                 max_batch_size: int = DEFAULT_BATCH_BYTES,
                 request_timeout_ms: int = 30000,
                 delivery_timeout_ms: int | None = None) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas (``acks=all``); ``max_batch_size``:
    bytes buffered per partition (see :data:`AUDIO_BATCH_BYTES`).

    ``request_timeout_ms``: how long one request waits for the broker's answer before it is
    retried. ``delivery_timeout_ms`` (Kafka's ``delivery.timeout.ms``): how long a batch is
    retried before its records fail; aiokafka has no such setting and fails a batch older
    than the request timeout (:func:`set_delivery_timeout`). The producer keeps one batch per
    partition in flight and retries it before the next, so records of one key stay in order
    through an outage shorter than the delivery timeout.

    Idempotence is off because not every Kafka-protocol broker (Tansu) implements producer ids;
    duplicates after a retry are harmless because every record carries a deterministic id.
    """
    producer = AIOKafkaProducer(
        **client_kwargs(bootstrap, security),
        client_id=client_id,
        acks="all",
        linger_ms=linger_ms,
        request_timeout_ms=request_timeout_ms,
        max_request_size=4 * 1024 * 1024,
        max_batch_size=max_batch_size,
    )
    if delivery_timeout_ms is not None:
        set_delivery_timeout(producer, delivery_timeout_ms / 1000)
    return producer


def set_delivery_timeout(producer: AIOKafkaProducer, seconds: float) -> None:
    """Retry ``producer``'s batches for ``seconds`` from their creation (aiokafka: the request
    timeout). aiokafka 0.11-0.14 keep this in the accumulator's ``_batch_ttl``, read when a batch
    is created and checked only before a retry; a test fails if a release renames it."""
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is None or not isinstance(getattr(accumulator, "_batch_ttl", None), float):
        raise RuntimeError("this aiokafka has no MessageAccumulator._batch_ttl: cannot set the "
                           "producer's delivery timeout")
    accumulator._batch_ttl = float(seconds)


async def start_producer(producer: AIOKafkaProducer, *, wait_s: float = 30.0,
                         security: KafkaSecurity = PLAINTEXT) -> None:
    """Start ``producer``, retrying while the cluster comes up; a refusal of our credentials
    raises :class:`KafkaAuthFailed` at once."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await producer.start()
        except (KeyError, *AUTH_ERRORS) as exc:
            refused = auth_failure(exc, "the cluster", security)
            if refused is None:
                raise
            raise refused from exc
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"producer cannot reach Kafka: {exc}"
                                        + _hint(security)) from exc
            await asyncio.sleep(0.5)
        else:
            return


#: Seconds without an answer from the brokers after which a worker's ``/readyz`` fails.
BROKER_STALE_S = 5.0


class BrokerProbe:
    """Whether the brokers answer: a metadata request every ``interval_s`` on a client of its
    own (so a busy producer or a rebalancing consumer does not hide an answer or fake one).
    :attr:`reachable` is false until the first answer and once none came for ``stale_s``
    (:data:`BROKER_STALE_S`): readiness, never liveness, so a Kafka outage takes a worker out
    of its Service but never restarts it. A frozen broker (SIGSTOP, a stuck node) still
    accepts TCP connections; only a Kafka answer counts."""

    def __init__(self, bootstrap: str, *, security: KafkaSecurity = PLAINTEXT,
                 interval_s: float = 1.0, timeout_s: float = 2.0,
                 stale_s: float = BROKER_STALE_S, name: str = "callscribe") -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._stale_s = stale_s
        self._name = name
        self._client: AIOKafkaClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_answer: float | None = None
        self._down_since: float | None = None
        self._unanswered_s = 0.0  # of the outages that ended, from their last answer on

    @property
    def reachable(self) -> bool:
        last = self._last_answer
        return last is not None and time.monotonic() - last <= self._stale_s

    def answered_clock(self) -> float:
        """``time.monotonic()`` less every second the brokers did not answer, from the last
        answer before each outage to the first after it: a clock that stops during an outage
        (the transcriber's idle timeout, so that an outage is not a call's silence). It steps
        back once an outage is noticed (by up to ``interval_s`` + ``timeout_s`` + 1 s)."""
        now = time.monotonic()
        unanswered = self._unanswered_s
        if self._down_since is not None and self._last_answer is not None:
            unanswered += now - self._last_answer
        return now - unanswered

    async def start(self) -> None:
        """Ask once (so that a worker that just reached Kafka is ready at once), then probe in
        the background until :meth:`stop`."""
        if self._task is None:
            await self._probe_once()
            self._task = asyncio.create_task(self.run(), name=f"{self._name}-broker-probe")

    async def run(self) -> None:
        """Probe until cancelled (then the client is closed)."""
        try:
            await self._probe_forever()
        finally:
            if self._client is not None:
                client, self._client = self._client, None
                await client.close()

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._probe_once()

    async def _probe_once(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s + 1):
                await self._ask()
        except (KafkaError, OSError, TimeoutError) as exc:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("%s: the Kafka brokers at %s do not answer (%s); /readyz fails "
                            "after %.0f s of this", self._name, self._bootstrap,
                            type(exc).__name__, self._stale_s)
            return
        now = time.monotonic()
        if self._down_since is not None:
            log.warning("%s: the Kafka brokers answer again after %.1f s", self._name,
                        now - self._down_since)
            self._down_since = None
            if self._last_answer is not None:
                self._unanswered_s += now - self._last_answer
        self._last_answer = now

    async def _ask(self) -> None:
        if self._client is None:
            client = AIOKafkaClient(**client_kwargs(self._bootstrap, self._security),
                                    client_id=f"{self._name}-probe",
                                    request_timeout_ms=int(self._timeout_s * 1000))
            try:
                await client.bootstrap()  # connects and fetches the cluster's metadata
            except BaseException:
                await client.close()
                raise
            self._client = client
            return
        await self._client.fetch_all_metadata()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
