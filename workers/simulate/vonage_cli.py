"""``callscribe simulate vonage`` (registered in :mod:`workers.cli`; the simulator is imported
only when it runs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from workers.settings import IngestSettings
from workers.simulate.options import Fast, Wav


def command(
    wav: Wav,
    url: Annotated[str, typer.Option(help="Ingest URL (default: local /vonage).")] = "",
    rate: Annotated[int, typer.Option(help="8000 | 16000 | 24000 (audio/l16;rate=…).")] = 16000,
    call_uuid: Annotated[str | None, typer.Option(help="The call uuid header.")] = None,
    fast: Fast = False,
) -> None:
    """Connect to /vonage as the Vonage Voice API would and play WAV's first channel (20 ms
    L16 frames, real time); adds ?token= from CALLSCRIBE_VONAGE_TOKEN."""
    from workers.simulate.vonage import simulate_vonage

    settings = IngestSettings()
    target = url or f"ws://127.0.0.1:{settings.ingest_port}/vonage"
    call = asyncio.run(simulate_vonage(target, wav, rate=rate, call_uuid=call_uuid,
                                       token=settings.vonage_token, realtime=not fast))
    typer.echo(f"call {call.call_id}: sent {call.samples_sent} samples at {rate} Hz; "
               f"closed {call.close_code}; {len(call.received)} messages back")


__all__ = ["command"]
