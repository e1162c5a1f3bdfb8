"""Bland live listen (outbound: callscribe is the WebSocket client, see
:mod:`workers.ingest.subscriptions`): listen-only, hang-up and transfer over REST."""

from __future__ import annotations

from workers.ingest.dialects import bland
from workers.ingest.dialects.events import CallStart
from workers.ingest.providers.base import (
    HangUp,
    Provider,
    ProviderApis,
    RestRequest,
    Transfer,
    need,
    segment,
)
from workers.ingest.providers.registry import register


def plan(command: HangUp | Transfer, call_id: str, start: CallStart,
         apis: ProviderApis) -> RestRequest:
    base = apis.bland_api_url.rstrip("/")
    headers = {"authorization": need(apis.bland_api_key, "CALLSCRIBE_BLAND_API_KEY")}
    if isinstance(command, HangUp):
        return RestRequest("POST", f"{base}/v1/calls/{segment(call_id)}/stop", headers)
    return RestRequest("POST", f"{base}/v1/calls/active/transfer", headers,
                       json={"call_id": call_id, "transfer_number": command.target})


PROVIDER = register(Provider(
    name=bland.PROVIDER, codec=lambda options: bland.BlandCodec(""), plan=plan,
    call_id_key="callId"))
