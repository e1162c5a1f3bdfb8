"""Options the ``callscribe simulate`` commands share (typer ``Annotated`` types), so each
reads and helps the same way in every provider's command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: A stereo WAV to play.
StereoWav = Annotated[Path, typer.Option(
    exists=True, dir_okay=False, help="PCM16 WAV to play (stereo: caller left, agent right).")]
#: A WAV of which the simulator plays what its provider carries.
Wav = Annotated[Path, typer.Option(exists=True, dir_okay=False, help="PCM16 WAV to play.")]
Tracks = Annotated[str | None, typer.Option(help="inbound | outbound | both (default: both "
                                                 "for a stereo WAV, inbound for mono)")]
Dtmf = Annotated[list[str] | None, typer.Option(help="SECONDS:DIGIT, repeatable.")]
Fast = Annotated[bool, typer.Option(help="Send as fast as possible.")]

__all__ = ["Dtmf", "Fast", "StereoWav", "Tracks", "Wav"]
