"""``callscribe simulate audiohook`` (registered in :mod:`workers.cli`; the simulator is
imported only when it runs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from workers.settings import IngestSettings
from workers.simulate.options import Fast, Wav


def command(
    wav: Wav,
    url: Annotated[str, typer.Option(help="Ingest URL (default: local /audiohook).")] = "",
    channels: Annotated[str, typer.Option(help="both | external (stereo WAV: external = "
                                               "left, the customer; internal = right, the "
                                               "agent)")] = "both",
    conversation_id: Annotated[str | None, typer.Option(help="open.conversationId (all "
                                                             "zeros: a probe).")] = None,
    fast: Fast = False,
) -> None:
    """Connect to /audiohook as Genesys Cloud AudioHook would and play WAV (100 ms PCMU
    frames, real time); sends X-API-KEY from CALLSCRIBE_AUDIOHOOK_API_KEY and signs the
    upgrade when CALLSCRIBE_AUDIOHOOK_CLIENT_SECRET is set."""
    from workers.simulate.audiohook import simulate_audiohook

    settings = IngestSettings()
    target = url or f"ws://127.0.0.1:{settings.ingest_port}/audiohook"
    call = asyncio.run(simulate_audiohook(
        target, wav, channels=channels, conversation_id=conversation_id,
        api_key=settings.audiohook_api_key, client_secret=settings.audiohook_client_secret,
        realtime=not fast))
    typer.echo(f"conversation {call.call_id}: sent {call.samples_sent} samples at 8000 Hz; "
               f"{len(call.received)} messages back; closed {call.close_code}"
               + (f"; protocol faults: {call.faults}" if call.faults else ""))



__all__ = ["command"]
