"""What the user-facing commands (``watch``, ``calls``, ``simulate``) share: where the local
stack is, what a WAV holds, and every failure turned into one :class:`UsageError` line that
says what the server or the file said and what to do next."""

from __future__ import annotations

import errno
import json
import wave
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus

from workers.errors import UsageError
from workers.ingest.dialects.jambonz import SUPPORTED_RATES as JAMBONZ_RATES

#: Sample rates Plivo streams L16 at (the smallest that holds the WAV's is chosen).
PLIVO_L16_RATES = (8000, 16000, 24000)


def http_url(base: str) -> str:
    """``http(s)://host:port`` of a bridge given as ``ws(s)://`` or ``http(s)://``."""
    if base.startswith("ws"):
        base = "http" + base[2:]
    return base.rstrip("/")


def ws_url(base: str) -> str:
    """``ws(s)://host:port`` of a bridge given as ``ws(s)://`` or ``http(s)://``."""
    if base.startswith("http"):
        base = "ws" + base[4:]
    return base.rstrip("/")


def unreachable(what: str, url: str, exc: OSError) -> UsageError:
    """Nothing (or nothing that speaks HTTP) listens at ``url``."""
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED \
            or "Connect call failed" in str(exc):
        reason = "connection refused"
    else:
        reason = exc.strerror or str(exc) or type(exc).__name__
    return UsageError(f"cannot reach the {what} at {url} ({reason}); is `callscribe up` "
                      "running, and on that port?")


def refusal(exc: InvalidStatus) -> UsageError:
    """The bridge's JSON ``{"error", "description"}`` for a refused handshake, on one line."""
    status = exc.response.status_code
    error, description = _error_body(exc.response.body or b"")
    hint = {401: " (the API key is CALLSCRIBE_API_KEYS, the secret CALLSCRIBE_TOKEN_SECRET: "
                 "both must be the bridge's)",
            404: " (live calls: `callscribe calls`; --wait SECONDS waits for a call that has "
                 "not started yet)"}.get(status, "")
    return UsageError(f"the bridge refused (HTTP {status}) {error}: {description}{hint}")


def _error_body(body: bytes | bytearray) -> tuple[str, str]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return "error", body.decode("utf-8", "replace").strip()[:200] or "no reason given"
    if not isinstance(parsed, dict):
        return "error", str(parsed)[:200]
    return str(parsed.get("error", "error")), str(parsed.get("description", ""))


def closed(exc: ConnectionClosed, what: str) -> UsageError:
    """A WebSocket the server closed with an error code."""
    frame = exc.rcvd
    if frame is None:
        return UsageError(f"the {what} dropped the connection without a close frame")
    return UsageError(f"the {what} closed the connection: {frame.code} {frame.reason}".rstrip())


def wav_format(path: Path) -> tuple[int, int]:
    """(sample rate, channels) of a PCM16 WAV; :class:`UsageError` for anything else."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
    except (wave.Error, EOFError) as exc:
        raise UsageError(f"{path} is not a WAV file ({exc}); expected a PCM16 WAV "
                         "(RIFF/WAVE, 16-bit samples)") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if width != 2:
        raise UsageError(f"{path} has {8 * width}-bit samples; expected 16-bit PCM "
                         "(convert it: sox IN.wav -b 16 OUT.wav)")
    if channels not in (1, 2):
        raise UsageError(f"{path} has {channels} channels; expected 1 (one party) or 2 "
                         "(caller left, agent right)")
    return rate, channels


def smallest_rate_holding(rate: int, allowed: Iterable[int]) -> int:
    """The smallest of ``allowed`` at or above ``rate`` (the largest when none is)."""
    rates = sorted(allowed)
    return next((r for r in rates if r >= rate), rates[-1])


def jambonz_layout(path: Path, rate: int | None, mix: str | None) -> tuple[int, str]:
    """(sampleRate, mixType) to send ``path`` with: the file's own unless overridden."""
    file_rate, channels = wav_format(path)
    if rate is not None and rate not in JAMBONZ_RATES:
        allowed = ", ".join(str(r) for r in sorted(JAMBONZ_RATES))
        raise UsageError(f"--rate {rate} is not a jambonz rate; expected one of {allowed}")
    if mix is not None and mix not in ("mono", "mixed", "stereo"):
        raise UsageError(f"--mix {mix!r}; expected mono, mixed or stereo")
    return (rate or smallest_rate_holding(file_rate, JAMBONZ_RATES),
            mix or ("stereo" if channels == 2 else "mono"))


def default_tracks(path: Path, tracks: str | None) -> str:
    """Plivo/Twilio tracks: ``both`` for a stereo WAV, ``inbound`` for a mono one, unless set."""
    _, channels = wav_format(path)
    if tracks is not None and tracks not in ("inbound", "outbound", "both"):
        raise UsageError(f"--tracks {tracks!r}; expected inbound, outbound or both")
    return tracks or ("both" if channels == 2 else "inbound")


def plivo_content_type(path: Path, content_type: str | None) -> str:
    """L16 at the smallest Plivo rate that holds the WAV's, unless set."""
    file_rate, _ = wav_format(path)
    return content_type or f"audio/x-l16;rate={smallest_rate_holding(file_rate, PLIVO_L16_RATES)}"


def describe_layout(rate: int, channels: int) -> str:
    return f"{rate} Hz {'stereo' if channels == 2 else 'mono'}"


def format_calls(calls: list[dict[str, Any]], prog: str) -> str:
    """The live-calls table ``callscribe calls`` prints."""
    if not calls:
        return ("no live calls (play one: "
                f"`{prog} simulate jambonz --wav YOUR.wav`)")
    rows = [("CALL ID", "PROVIDER", "FROM", "TO", "STARTED", "MESSAGES")]
    for call in calls:
        rows.append((str(call.get("callId", "?")), str(call.get("provider") or "?"),
                     str(call.get("from") or "-"), str(call.get("to") or "-"),
                     str(call.get("timestamp") or "-"), str(call.get("messages", 0))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.append(f"watch one: {prog} watch CALL_ID")
    return "\n".join(lines)


async def fetch_live_calls(http_base: str, api_key: str) -> list[dict[str, Any]]:
    """``GET /v1/calls`` of the bridge; :class:`UsageError` with its reason if refused."""
    import aiohttp

    url = f"{http_base}/v1/calls"
    try:
        async with aiohttp.ClientSession() as http, http.get(
                url, headers={"Authorization": f"Bearer {api_key}"}) as response:
            body = await response.read()
            if response.status != 200:
                error, description = _error_body(body)
                raise UsageError(f"the bridge refused (HTTP {response.status}) {error}: "
                                 f"{description}")
            calls = json.loads(body).get("calls", [])
    except aiohttp.ClientConnectorError as exc:
        raise unreachable("bridge", http_base, exc.os_error) from None
    except aiohttp.ClientConnectionError as exc:
        raise unreachable("bridge", http_base, OSError(str(exc))) from None
    return [c for c in calls if isinstance(c, dict)]


async def watch(base: str, token: str, api_key: str, *, interim: bool, wait_s: float,
                echo: Callable[[str], None]) -> None:
    """Print a call's liveCalls messages until the bridge ends the call."""
    from workers.bridge.client import messages, open_live_call, render

    try:
        ws = await open_live_call(base, token, api_key, interim=interim, wait_s=wait_s)
    except InvalidStatus as exc:
        raise refusal(exc) from None
    except OSError as exc:
        raise unreachable("bridge", base, exc) from None
    try:
        async for _, message in messages(ws):
            echo(render(message))
    except ConnectionClosed as exc:
        raise closed(exc, "bridge") from None
    if ws.close_code not in (None, 1000):
        raise UsageError(f"the bridge closed the connection: {ws.close_code} "
                         f"{ws.close_reason or ''}".rstrip())
