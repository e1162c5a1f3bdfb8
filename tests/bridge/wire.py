"""Test helpers for the bridge's wire: what message types the tests saw (checked against
``schemas/asyncapi.yaml`` by ``test_asyncapi.py``, which runs last), and a raw WebSocket client
on a plain TCP socket for a client that stops reading."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from typing import Any

#: One message of each type the bridge tests received ("server") and sent ("client"), and
#: binary listen frames ("listen", type "audio"), by direction and type.
SEEN: dict[str, dict[str, Any]] = {"server": {}, "client": {}, "listen": {}}


def saw(direction: str, message: dict[str, Any] | bytes) -> None:
    """Note a message seen on the wire (a dict with ``type``, or binary audio)."""
    if isinstance(message, bytes):
        SEEN["listen"].setdefault("audio", message)
    elif isinstance(message.get("type"), str):
        SEEN[direction].setdefault(message["type"], message)


class RawClient:
    """A WebSocket client on a plain socket with a tiny receive buffer, that reads only when
    told to (a client that stopped reading, as far as the server can tell)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, path_qs: str,
                      headers: dict[str, str]) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path_qs} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status = await reader.readuntil(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {status[:80]!r}")
        return cls(reader, writer)

    async def read_all(self) -> list[tuple[int, bytes]]:
        """Every frame (opcode, payload) until the server closes the TCP connection."""
        data = bytearray()
        try:
            while chunk := await self.reader.read(1 << 16):
                data += chunk
        except ConnectionResetError:
            pass
        self.writer.close()
        return parse_frames(bytes(data))


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Unmasked server frames in ``data`` (a trailing partial frame is ignored)."""
    frames: list[tuple[int, bytes]] = []
    at = 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, at)
            at += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, at)
            at += 8
        if at + length > len(data):
            break
        frames.append((opcode, data[at:at + length]))
        at += length
    return frames


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    """The code of the close frame among ``frames``, if there is one."""
    for opcode, payload in frames:
        if opcode == 0x8 and len(payload) >= 2:
            code: int = struct.unpack("!H", payload[:2])[0]
            return code
    return None
