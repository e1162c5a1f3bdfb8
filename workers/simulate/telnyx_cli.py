"""``callscribe simulate telnyx`` (registered in :mod:`workers.cli`; the simulator is imported
only when it runs)."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Annotated, get_args

import typer

from workers import localenv
from workers.errors import UsageError
from workers.settings import IngestSettings
from workers.simulate.options import Dtmf, Fast, StereoWav, Tracks


def command(
    wav: StereoWav,
    url: Annotated[str, typer.Option(help="Ingest URL (default: local /telnyx).")] = "",
    tracks: Tracks = None,
    encoding: Annotated[str, typer.Option(help="media_format encoding: PCMU | PCMA | L16.")]
    = "PCMU",
    rate: Annotated[int, typer.Option(help="sample_rate (PCMU/PCMA: 8000; L16: 8000 | 16000 "
                                           "| 24000).")] = 8000,
    call_control_id: Annotated[str | None, typer.Option(help="start.call_control_id.")] = None,
    dtmf: Dtmf = None,
    fast: Fast = False,
) -> None:
    """Connect to /telnyx as Telnyx Media Streaming would and play WAV (20 ms media, real
    time); sends the stream auth token from CALLSCRIBE_TELNYX_TOKEN when it is set."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from workers.clients import closed, default_tracks, unreachable
    from workers.ingest.dialects.telnyx import RATES, Encoding
    from workers.simulate.telnyx import simulate_telnyx

    localenv.load()
    settings = IngestSettings()
    send_tracks = default_tracks(wav, tracks)
    name: Encoding | None = next((e for e in get_args(Encoding) if e == encoding.upper()), None)
    if name is None or rate not in RATES[name]:
        raise UsageError(f"--encoding {encoding} --rate {rate}; expected PCMU or PCMA at 8000, "
                         "or L16 at 8000, 16000 or 24000")
    presses = []
    for press in dtmf or []:
        at, _, digit = press.partition(":")
        try:
            presses.append((float(at), digit))
        except ValueError:
            digit = ""
        if not digit:
            raise UsageError(f"--dtmf {press!r}; expected SECONDS:DIGIT, e.g. 2.5:1")
    base = os.environ.get("CALLSCRIBE_INGEST_URL") or f"ws://127.0.0.1:{settings.ingest_port}"
    target = url or f"{base.rstrip('/')}/telnyx"
    call_control_id = call_control_id or "v3:" + uuid.uuid4().hex
    typer.echo(f"call {call_control_id}: playing {wav.name} ({name} {rate} Hz, tracks "
               f"{send_tracks}) to {target}")
    try:
        call = asyncio.run(simulate_telnyx(
            target, wav, tracks=send_tracks, encoding=name, rate=rate,
            call_control_id=call_control_id, token=settings.telnyx_token, dtmf=presses,
            realtime=not fast))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except InvalidStatus as exc:
        raise UsageError(f"the ingest refused the connection: HTTP "
                         f"{exc.response.status_code}") from None
    except ConnectionClosed as exc:
        raise closed(exc, "ingest") from None
    except OSError as exc:
        raise unreachable("ingest", target, exc) from None
    typer.echo(f"call {call.call_id}: sent {call.samples_sent} samples at {rate} Hz; "
               f"closed {call.close_code}; {len(call.received)} messages back")


__all__ = ["command"]
