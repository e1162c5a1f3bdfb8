"""Everything ``callscribe ingest`` runs, wired from :class:`IngestSettings`:

* :class:`~workers.ingest.server.IngestServer` — provider WebSockets (``/jambonz``,
  ``/plivo``, ``/twilio``, ``/audiohook``, ``/vonage``, ``/telnyx``) and probes on
  ``CALLSCRIBE_INGEST_PORT``;
* :class:`~workers.ingest.api.IngestApi` — ``POST /v1/subscriptions`` on
  ``CALLSCRIBE_INGEST_API_PORT``;
* :class:`~workers.ingest.executor.ControlExecutor` — liveCalls join/end for owned calls;
* :class:`~workers.ingest.subscriptions.SubscriptionManager` — Bland live-listen clients;
* :class:`~workers.ingest.audiohook_events.AudioHookTranscripts` — with
  ``CALLSCRIBE_AUDIOHOOK_TRANSCRIPTS``, final transcripts back to the AudioHook sessions held.

All share one :class:`~workers.ingest.session.CallRegistry` (the calls this replica owns).
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiokafka import AIOKafkaProducer

from workers.ingest.api import IngestApi
from workers.ingest.audiohook_events import AudioHookTranscripts, source_topic
from workers.ingest.control import CallControl, ProviderApis
from workers.ingest.executor import ControlExecutor
from workers.ingest.outbox import Budget
from workers.ingest.providers.base import ProviderOptions
from workers.ingest.server import IngestServer
from workers.ingest.session import CallRegistry
from workers.ingest.subscriptions import SubscriptionManager
from workers.kafka import BrokerProbe
from workers.kafka_security import PLAINTEXT, KafkaSecurity
from workers.records import Topics
from workers.settings import IngestSettings

log = logging.getLogger(__name__)


def provider_apis(settings: IngestSettings) -> ProviderApis:
    return ProviderApis(
        jambonz_api_url=settings.jambonz_api_url, jambonz_api_key=settings.jambonz_api_key,
        plivo_api_url=settings.plivo_api_url, plivo_auth_id=settings.plivo_auth_id,
        plivo_auth_token=settings.plivo_auth_token, twilio_api_url=settings.twilio_api_url,
        twilio_account_sid=settings.twilio_account_sid,
        twilio_auth_token=settings.twilio_auth_token, bland_api_url=settings.bland_api_url,
        bland_api_key=settings.bland_api_key, telnyx_api_url=settings.telnyx_api_url,
        telnyx_api_key=settings.telnyx_api_key, vonage_api_url=settings.vonage_api_url,
        vonage_application_id=settings.vonage_application_id,
        vonage_private_key=settings.vonage_private_key.get_secret_value()
        if settings.vonage_private_key else None,
        transfer_hook_url=settings.transfer_hook_url)


def provider_options(settings: IngestSettings) -> ProviderOptions:
    auth = None
    if settings.jambonz_username and settings.jambonz_password:
        auth = (settings.jambonz_username, settings.jambonz_password)
    return ProviderOptions(
        jambonz_auth=auth, plivo_auth_token=settings.plivo_auth_token,
        twilio_auth_token=settings.twilio_auth_token,
        twilio_bidirectional=settings.twilio_bidirectional,
        audiohook_api_key=settings.audiohook_api_key,
        audiohook_client_secret=settings.audiohook_client_secret,
        vonage_token=settings.vonage_token, telnyx_token=settings.telnyx_token,
        telnyx_tracks=settings.telnyx_tracks,
        telnyx_bidirectional=settings.telnyx_bidirectional,
        public_url=settings.ingest_public_url)


class IngestWorker:
    """The ingest worker's parts, started and drained together."""

    def __init__(self, settings: IngestSettings, producer: AIOKafkaProducer, *,
                 security: KafkaSecurity = PLAINTEXT) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.registry = CallRegistry()
        self.probe = BrokerProbe(settings.bootstrap, security=security, name="ingest")
        #: What every call's outbox may hold together (the server's and Bland's calls).
        self.budget = Budget(settings.ingest_buffer_max_bytes)
        self.server = IngestServer(
            producer=producer, topics=self.topics, host=settings.ingest_host,
            port=settings.ingest_port, chunk_ms=settings.chunk_ms,
            max_frame_bytes=settings.max_frame_bytes,
            max_in_flight=settings.ingest_max_in_flight, buffer_s=settings.ingest_buffer_s,
            budget=self.budget, options=provider_options(settings),
            registry=self.registry,
            allow_anonymous=settings.ingest_allow_anonymous,
            open_timeout_s=settings.ingest_open_timeout_s,
            max_connections_per_address=settings.ingest_max_connections_per_address,
            broker_reachable=lambda: self.probe.reachable)
        anonymous = self.server.anonymous_paths()
        if anonymous and settings.ingest_allow_anonymous:
            log.warning("provider paths %s accept anonymous connections "
                        "(CALLSCRIBE_INGEST_ALLOW_ANONYMOUS=true)", ",".join(anonymous))
        elif anonymous:
            log.warning("provider paths %s refuse every connection until their credentials are "
                        "set (%s) or CALLSCRIBE_INGEST_ALLOW_ANONYMOUS=true",
                        ",".join(anonymous), ", ".join(self.server.anonymous_settings()))
        if refused := self.server.refused_paths():
            log.warning("provider paths %s refuse every connection until their credentials are "
                        "set (%s)", ",".join(refused), ", ".join(self.server.refused_settings()))
        self.api = IngestApi(producer=producer, topics=self.topics,
                             api_keys=settings.api_key_set())
        self.control = CallControl(provider_apis(settings))
        self.executor = ControlExecutor(
            bootstrap=settings.bootstrap, topics=self.topics, registry=self.registry,
            control=self.control, transfer_target=settings.transfer_target,
            fetch_max_wait_ms=settings.fetch_max_wait_ms, security=security)
        self.subscriptions = SubscriptionManager(
            bootstrap=settings.bootstrap, topics=self.topics, group_id=settings.ingest_group_id,
            producer=producer, registry=self.registry, chunk_ms=settings.chunk_ms,
            max_in_flight=settings.ingest_max_in_flight, buffer_s=settings.ingest_buffer_s,
            budget=self.budget, api_url=settings.bland_api_url,
            api_key=settings.bland_api_key, retry_s=settings.bland_retry_s,
            fetch_max_wait_ms=settings.fetch_max_wait_ms, security=security)
        source = source_topic(settings.audiohook_transcripts, self.topics)
        self.audiohook_events = AudioHookTranscripts(
            bootstrap=settings.bootstrap, topic=source, registry=self.registry,
            fetch_max_wait_ms=settings.fetch_max_wait_ms, security=security) \
            if source is not None else None
        self._runner: web.AppRunner | None = None
        self.api_port: int | None = None

    async def start(self) -> None:
        """Control first (so no command for a call it takes is missed), then the sockets."""
        await self.probe.start()
        await self.executor.start()
        await self.subscriptions.start()
        if self.audiohook_events is not None:
            await self.audiohook_events.start()
        self._runner = web.AppRunner(self.api.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.ingest_host,
                           self.settings.ingest_api_port)
        await site.start()
        server = site._server  # aiohttp keeps the bound sockets here; the port may be 0
        sockets = getattr(server, "sockets", None) or []
        self.api_port = int(sockets[0].getsockname()[1]) if sockets else \
            self.settings.ingest_api_port
        await self.server.start()
        log.info("ingest API on %s:%d", self.settings.ingest_host, self.api_port)

    async def drain(self, deadline_s: float) -> None:
        """SIGTERM: the calls drain first (they may still be controlled), then the rest."""
        await self.server.drain(deadline_s)
        await self.subscriptions.stop(deadline_s=min(deadline_s, 10.0))
        await self.executor.stop()
        if self.audiohook_events is not None:
            await self.audiohook_events.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.probe.stop()


__all__ = ["IngestWorker", "provider_apis", "provider_options"]
