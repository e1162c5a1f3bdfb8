"""A liveCalls client (``callscribe watch``, the demo, tests and benchmarks), and the live
listen request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus


def resume_position(message: dict[str, Any]) -> str | None:
    """What to pass as ``resumeAfter`` after receiving ``message``: its ``id``, or
    ``<id>#<revision>`` for a ``transcript:interim`` (an utterance's interims share the id of
    its final ``transcript``, so the revision says which of them you have). ``None`` for a
    message without an id (``ack``, a connection-level ``error``)."""
    message_id = message.get("id")
    if not isinstance(message_id, str):
        return None
    if message.get("type") == "transcript:interim":
        return f"{message_id}#{message.get('revision')}"
    return message_id


async def request_listen_url(http_base: str, call_id: str, api_key: str, *,
                             bearer: bool = False) -> tuple[int, dict[str, Any]]:
    """``POST /v1/calls/{call_id}/listen`` → (HTTP status, Bland-shaped body). The key goes as
    ``Authorization: <key>`` (as Bland's clients send it) or, with ``bearer``, ``Bearer <key>``."""
    import aiohttp

    url = f"{http_base.rstrip('/')}/v1/calls/{quote(call_id, safe='')}/listen"
    headers = {"Authorization": f"Bearer {api_key}" if bearer else api_key}
    async with aiohttp.ClientSession() as http, http.post(url, headers=headers) as response:
        return response.status, dict(await response.json())


def live_calls_url(base: str, token: str, *, interim: bool = False,
                   resume_after: str | None = None) -> str:
    """``ws://host:port/ws/v1/liveCalls?conversationToken=...`` from the bridge's base URL."""
    query: dict[str, str] = {"conversationToken": token}
    if interim:
        query["interim"] = "true"
    if resume_after:
        query["resumeAfter"] = resume_after
    return f"{base.rstrip('/')}/ws/v1/liveCalls?{urlencode(query)}"


async def open_live_call(base: str, token: str, api_key: str, *, interim: bool = False,
                         resume_after: str | None = None, wait_s: float = 0.0,
                         ) -> ClientConnection:
    """Connect to liveCalls; while the bridge answers 404 (call not known yet), retry for up to
    ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    url = live_calls_url(base, token, interim=interim, resume_after=resume_after)
    while True:
        try:
            return await connect(url, additional_headers={"Authorization": f"Bearer {api_key}"})
        except InvalidStatus as exc:
            if exc.response.status_code != 404 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def messages(ws: ClientConnection) -> AsyncIterator[tuple[float, dict[str, Any]]]:
    """(receipt wall time, message) for each message until the server closes."""
    async for raw in ws:
        yield time.time(), json.loads(raw)


def render(message: dict[str, Any]) -> str:
    """One line for a terminal."""
    kind = message.get("type")
    if kind == "transcript":
        return f"[{message.get('offset', 0):7.2f}s] {message['role']:>9}: {message['msg']}"
    if kind == "transcript:interim":
        return f"[{message.get('offset', 0):7.2f}s] {message['role']:>9}… {message['msg']}"
    if kind == "event:start":
        return f"── call started  phone={message.get('phone') or '?'}  {message['timestamp']}"
    if kind == "event:callEnd":
        return f"── call ended    {message['timestamp']}"
    if kind == "event:end":
        return f"── {message.get('msg') or 'screening ended'}"
    if kind == "assist":
        return f"{'':>11} ↳ {message.get('kind', 'hint')}: {message.get('title', '')}"
    if kind == "error":
        return f"── error: {message.get('description', '')}"
    return json.dumps(message)
