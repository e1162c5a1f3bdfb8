"""WebSocket plumbing shared by the bridge's liveCalls and live-listen sockets: closing a
socket under a deadline (aborting a peer that does not take the close frame), ending a
connection's relay task, closing a client whose outbox overflowed (1013), and the cap on
sockets per client address (HTTP 429 before the upgrade)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from aiohttp import web

from workers import metrics
from workers.bridge.hub import Outbox

log = logging.getLogger(__name__)

#: How long a close handshake with an unresponsive peer may take before the socket is aborted.
CLOSE_TIMEOUT_S = 5.0


async def close_socket(ws: web.WebSocketResponse, request: web.BaseRequest, code: int,
                       message: bytes, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``ws`` with ``code``; abort the TCP connection if the peer does not take the close
    frame within ``timeout_s`` (a client that stopped reading must not keep its socket)."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), timeout_s)
    except (TimeoutError, ConnectionError):
        _abort(request)
    except asyncio.CancelledError:
        _abort(request)  # whoever cancelled us, the socket must not linger half-closed
        raise


def _abort(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.abort()


async def stop_relay(relay: asyncio.Task[None], outbox: Outbox[Any], request: web.BaseRequest,
                     timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """End a connection's relay task once its handler is done with the socket.

    The relay is not cancelled while it may be waiting for the socket to drain: aiohttp's
    writers of one connection share a single drain future, so cancelling the relay's wait
    would cancel a close frame waiting behind it. The outbox is closed (the relay returns
    once it is empty); a relay still blocked after ``timeout_s`` (a peer that does not read)
    has its connection aborted, which fails the drain and ends it.
    """
    outbox.close()
    if relay.done():
        return
    done, _ = await asyncio.wait({relay}, timeout=timeout_s)
    if not done:
        _abort(request)
        await asyncio.wait({relay}, timeout=1.0)
        relay.cancel()


class SlowCloser:
    """The ``on_overflow`` of a client's outbox: close the socket with 1013 at once (the
    relay may be blocked writing to a client that stopped reading; it ends on its own once the
    close is done). The closing task is kept (``_running``) until it ends."""

    #: Shared by every closer: strong references to the closing tasks until they end.
    _running: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self, ws: web.WebSocketResponse, request: web.BaseRequest, reason: bytes,
                 timeout_s: float) -> None:
        self._ws = ws
        self._request = request
        self._reason = reason
        self._timeout_s = timeout_s
        self.task: asyncio.Task[None] | None = None

    def __call__(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(close_socket(
                self._ws, self._request, 1013, self._reason, self._timeout_s))
            self._running.add(self.task)
            self.task.add_done_callback(self._running.discard)

    async def wait(self) -> None:
        """Until the close is done; being cancelled meanwhile does not cancel the close."""
        if self.task is not None:
            await asyncio.shield(self.task)


def too_many_from(request: web.BaseRequest,
                  sockets: dict[web.WebSocketResponse, web.BaseRequest],
                  cap: int) -> web.Response | None:
    """HTTP 429 (before the upgrade) when ``request``'s client address already holds ``cap``
    of this bridge's sockets (liveCalls and live listen together); ``None`` otherwise."""
    if not cap:
        return None
    address = request.remote
    held = sum(1 for other in sockets.values() if other.remote == address)
    if held < cap:
        return None
    metrics.BRIDGE_HANDSHAKE_REJECTED.labels("429").inc()
    log.warning("connection from %s refused: it holds %d sockets (the most allowed)",
                address, held)
    return web.json_response({"error": "too many connections from this address",
                              "status": 429}, status=429, headers={"Retry-After": "5"})


__all__ = ["CLOSE_TIMEOUT_S", "SlowCloser", "close_socket", "stop_relay", "too_many_from"]
