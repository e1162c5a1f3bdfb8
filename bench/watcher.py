"""A liveCalls client that survives its bridge: ``interim=true``, and on any disconnect it
reconnects to the next bridge address with ``resumeAfter`` set to the last message it holds
(``workers.bridge.client.resume_position``), as a UI behind a Service does. Everything it
receives is kept, with the connection it came on, for the fault ledger (``bench.ledger``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus

from workers.bridge.client import open_live_call, resume_position

log = logging.getLogger(__name__)

#: Pause between two connection attempts.
RETRY_S = 0.2


@dataclass
class Connection:
    """One liveCalls connection of a watcher."""

    bridge: str
    resume_after: str | None
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None
    messages: int = 0


@dataclass
class Received:
    at: float  # time.time() of receipt
    message: dict[str, Any]
    connection: int  # index in Watcher.connections


@dataclass
class Watcher:
    """Watches one call until ``event:callEnd``; see the module docstring."""

    call_id: str
    bridges: Sequence[str]
    token: str
    api_key: str
    first_bridge: int = 0
    received: list[Received] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    #: (time.time() a connection was lost, time.time() the next one opened) per reconnect.
    outages: list[tuple[float, float]] = field(default_factory=list)
    ended: bool = False
    failed_attempts: int = 0

    async def run(self, deadline_s: float) -> None:
        """Until ``event:callEnd`` arrives or ``deadline_s`` seconds pass (then it returns
        without ``ended``)."""
        try:
            async with asyncio.timeout(deadline_s):
                await self._run()
        except TimeoutError:
            log.warning("call %s: no event:callEnd within %.0f s", self.call_id, deadline_s)

    async def _run(self) -> None:
        index = self.first_bridge
        resume: str | None = None
        lost_at: float | None = None
        while not self.ended:
            base = self.bridges[index % len(self.bridges)]
            try:
                ws = await open_live_call(base, self.token, self.api_key, interim=True,
                                          resume_after=resume)
            except InvalidStatus as exc:
                self.failed_attempts += 1
                if exc.response.status_code != 404:  # 404: the call is not known yet
                    index += 1
                await asyncio.sleep(RETRY_S)
                continue
            except (OSError, TimeoutError, ConnectionClosed):
                self.failed_attempts += 1
                index += 1  # that replica is gone: the next one
                await asyncio.sleep(RETRY_S)
                continue
            opened = time.time()
            if lost_at is not None:
                self.outages.append((lost_at, opened))
            connection = Connection(bridge=base, resume_after=resume, opened_at=opened)
            self.connections.append(connection)
            number = len(self.connections) - 1
            try:
                async for raw in ws:
                    message = json.loads(raw)
                    self.received.append(Received(time.time(), message, number))
                    connection.messages += 1
                    resume = resume_position(message) or resume
                    if message.get("type") == "event:callEnd":
                        self.ended = True
            except ConnectionClosed:
                pass
            connection.closed_at = lost_at = time.time()
            connection.close_code = ws.close_code
            if not self.ended:
                index += 1
                await asyncio.sleep(RETRY_S)

    def finals(self) -> list[Received]:
        return [r for r in self.received if r.message.get("type") == "transcript"]


__all__ = ["Connection", "Received", "Watcher"]
