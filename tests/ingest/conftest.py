"""A second, fully configured ingest worker on the session stack's topics (so the stack's
transcriber transcribes its calls), with every provider's REST API and Bland's listen API
pointed at local simulators that record what callscribe asks of them (Vonage's application key
pair is made at test time: tests/ingest/vonage_keys.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.conftest import RunningStack
from tests.ingest.vonage_keys import VONAGE_APPLICATION_ID, key_pair
from workers.ingest.worker import IngestWorker
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.settings import IngestSettings
from workers.simulate.bland import BlandListenServer
from workers.simulate.provider_api import ProviderApiSimulator

PLIVO_TOKEN = "plivo-auth-token"
TWILIO_TOKEN = "twilio-auth-token"
BLAND_KEY = "bland-api-key"
AUDIOHOOK_KEY = "audiohook-api-key"
AUDIOHOOK_SECRET = "Y2FsbHNjcmliZSB0ZXN0IGNsaWVudCBzZWNyZXQgMzJi"  # base64
VONAGE_TOKEN = "vonage-shared-token"
TELNYX_TOKEN = "telnyx-stream-token"
TELNYX_KEY = "telnyx-api-key"
TRANSFER_TARGET = "+15550009999"


@dataclass
class ProviderRig:
    worker: IngestWorker
    settings: IngestSettings
    bland: BlandListenServer
    api: ProviderApiSimulator
    ws_base: str  # ws://127.0.0.1:PORT (append /plivo, /twilio, /jambonz)
    api_base: str  # http://127.0.0.1:PORT of POST /v1/subscriptions
    api_key: str


def rig_settings(stack: RunningStack, provider_url: str, **overrides: object) -> IngestSettings:
    values: dict[str, object] = dict(
        kafka_bootstrap=stack.bootstrap, topic_prefix=stack.topics.prefix,
        ingest_host="127.0.0.1", ingest_port=0, ingest_api_port=0, api_keys="ingest-key",
        plivo_auth_token=PLIVO_TOKEN, plivo_api_url=provider_url,
        twilio_auth_token=TWILIO_TOKEN, twilio_api_url=provider_url,
        jambonz_api_url=provider_url, jambonz_api_key="jambonz-key",
        bland_api_url=provider_url, bland_api_key=BLAND_KEY, bland_retry_s=3.0,
        audiohook_api_key=AUDIOHOOK_KEY, audiohook_client_secret=AUDIOHOOK_SECRET,
        vonage_token=VONAGE_TOKEN, vonage_application_id=VONAGE_APPLICATION_ID,
        vonage_private_key=key_pair()[0], vonage_api_url=provider_url,
        telnyx_token=TELNYX_TOKEN, telnyx_api_key=TELNYX_KEY, telnyx_api_url=provider_url,
        transfer_target=TRANSFER_TARGET,
        transfer_hook_url=provider_url + "/hooks/dial?to={target}&call={call_id}",
        ingest_group_id=f"{stack.topics.prefix}-ingest",
        audiohook_transcripts="raw",  # finals back to the AudioHook sessions (test_audiohook)
        # /jambonz has no credentials here (the safe default refusing that is tested in
        # test_server_security).
        ingest_allow_anonymous=True)
    values.update(overrides)
    return IngestSettings(**values)  # type: ignore[arg-type]  # mixed values: pydantic checks


@pytest.fixture(scope="session")
async def rig(stack: RunningStack) -> AsyncIterator[ProviderRig]:
    await ensure_topics(stack.bootstrap, (stack.topics.subscriptions,), partitions=4)
    api = ProviderApiSimulator(refuse={"refused-call"}, vonage_public_key=key_pair()[1])
    bland = BlandListenServer(api_key=BLAND_KEY, realtime=False, api=api)
    base = await bland.start()
    api.base_url = base
    settings = rig_settings(stack, base)
    producer = new_producer(stack.bootstrap, client_id=f"rig-{secrets.token_hex(3)}")
    await start_producer(producer)
    worker = IngestWorker(settings, producer)
    await worker.start()
    try:
        yield ProviderRig(worker, settings, bland, api, f"ws://127.0.0.1:{worker.server.port}",
                          f"http://127.0.0.1:{worker.api_port}", "ingest-key")
    finally:
        await worker.drain(1)
        await producer.stop()
        await bland.stop()
