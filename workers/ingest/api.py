"""The ingest worker's HTTP API (aiohttp) on ``CALLSCRIBE_INGEST_API_PORT`` (default 8083).

The provider WebSocket server (``websockets``) answers only GET upgrades, so requests with a
body have this second, small server in the same process::

    POST /v1/subscriptions   {"provider": "bland", "call_id": "…"}   Authorization: Bearer <key>
        202 {"status": "accepted", "id": "…", "provider": "bland", "call_id": "…"}
        400 {"error": "invalid_request", "description": "…"}     (bad JSON, provider, call_id)
        401 {"error": "unauthorized", "description": "…"}        (no or unknown key)
        503 {"error": "unavailable", "description": "…"}         (Kafka did not take it)
    GET  /healthz

An accepted request is a record on ``<prefix>.subscriptions`` (keyed by call id) once the
broker has it; whichever replica's consumer takes it runs the subscription.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from workers import metrics
from workers.ingest.subscriptions import PROVIDERS, SubscriptionRequest, publish_request
from workers.records import Topics

log = logging.getLogger(__name__)

MAX_CALL_ID = 200


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "description": description}, status=status)


def bearer_ok(header: str | None, keys: frozenset[str]) -> bool:
    """Whether ``Authorization: Bearer <key>`` names one of ``keys`` (compared in constant
    time; no keys configured = nobody)."""
    if not header or not header.lower().startswith("bearer "):
        return False
    given = header[7:].strip().encode()
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        matched |= hmac.compare_digest(given, key.encode())
    return matched


class IngestApi:
    """``POST /v1/subscriptions``: validate, authenticate, publish the request."""

    def __init__(self, *, producer: AIOKafkaProducer, topics: Topics,
                 api_keys: frozenset[str]) -> None:
        self._producer = producer
        self._topics = topics
        self._keys = api_keys
        if not api_keys:
            log.warning("CALLSCRIBE_API_KEYS is unset: POST /v1/subscriptions refuses all")

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024)
        app.router.add_post("/v1/subscriptions", self.subscribe)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def subscribe(self, request: web.Request) -> web.Response:
        if not bearer_ok(request.headers.get("Authorization"), self._keys):
            metrics.INGEST_REJECTED.labels("api", "auth").inc()
            response = _error(401, "unauthorized", "Send 'Authorization: Bearer <api key>'.")
            response.headers["WWW-Authenticate"] = 'Bearer realm="callscribe"'
            return response
        try:
            body: Any = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = None
        problem = self._invalid(body)
        if problem:
            return _error(400, "invalid_request", problem)
        subscription = SubscriptionRequest(provider=body["provider"], call_id=body["call_id"])
        try:
            await publish_request(self._producer, self._topics, subscription)
        except KafkaError as exc:
            metrics.INGEST_PUBLISH_FAILURES.labels(self._topics.subscriptions).inc()
            log.warning("subscription for call %s not stored: %s", subscription.call_id, exc)
            return _error(503, "unavailable", "the request could not be stored; retry")
        log.info("subscription %s requested for %s call %s", subscription.id,
                 subscription.provider, subscription.call_id)
        return web.json_response({"status": "accepted", "id": subscription.id,
                                  "provider": subscription.provider,
                                  "call_id": subscription.call_id}, status=202)

    @staticmethod
    def _invalid(body: Any) -> str | None:
        if not isinstance(body, dict):
            return 'expected a JSON object {"provider": "bland", "call_id": "..."}'
        if body.get("provider") not in PROVIDERS:
            return f"provider {str(body.get('provider'))[:40]!r} is not one callscribe " \
                   f"subscribes to; expected one of {', '.join(PROVIDERS)}"
        call_id = body.get("call_id")
        if not isinstance(call_id, str) or not call_id.strip() or len(call_id) > MAX_CALL_ID:
            return f"call_id must be a non-empty string of at most {MAX_CALL_ID} characters"
        return None


__all__ = ["IngestApi", "bearer_ok"]
