"""What the simulators send by default: the WAV's own rate and channels (a 16 kHz mono WAV must
not go out as 8 kHz stereo, which doubles every line as `other:` and `assistant:`)."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from workers.clients import (
    default_tracks,
    format_calls,
    jambonz_layout,
    plivo_content_type,
    wav_format,
)
from workers.errors import UsageError

MONO_16K = FIXTURES / "speech" / "call_mono_16k.wav"
STEREO_8K = FIXTURES / "speech" / "call_stereo_8k.wav"


def silent_wav(path: Path, rate: int, channels: int, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(b"\0" * (width * channels * rate // 10))
    return path


def test_the_wav_decides_the_jambonz_layout() -> None:
    assert jambonz_layout(MONO_16K, None, None) == (16000, "mono")
    assert jambonz_layout(STEREO_8K, None, None) == (8000, "stereo")


def test_options_override_the_wav() -> None:
    assert jambonz_layout(MONO_16K, 8000, "stereo") == (8000, "stereo")
    assert jambonz_layout(STEREO_8K, None, "mixed") == (8000, "mixed")


def test_a_rate_jambonz_lacks_goes_up_to_the_next(tmp_path: Path) -> None:
    assert jambonz_layout(silent_wav(tmp_path / "cd.wav", 44100, 2), None, None) \
        == (48000, "stereo")
    assert plivo_content_type(silent_wav(tmp_path / "a.wav", 22050, 1), None) \
        == "audio/x-l16;rate=24000"
    assert plivo_content_type(silent_wav(tmp_path / "b.wav", 48000, 1), None) \
        == "audio/x-l16;rate=24000"  # Plivo's highest


def test_tracks_follow_the_channels() -> None:
    assert default_tracks(MONO_16K, None) == "inbound"
    assert default_tracks(STEREO_8K, None) == "both"
    assert default_tracks(MONO_16K, "both") == "both"
    assert plivo_content_type(MONO_16K, None) == "audio/x-l16;rate=16000"
    assert plivo_content_type(STEREO_8K, None) == "audio/x-l16;rate=8000"


@pytest.mark.parametrize(("rate", "channels", "width", "expected"), [
    (8000, 1, 1, "8-bit samples; expected 16-bit PCM (convert it: sox IN.wav -b 16 OUT.wav)"),
    (8000, 3, 2, "3 channels; expected 1 (one party) or 2 (caller left, agent right)"),
])
def test_wavs_we_cannot_send_are_named(tmp_path: Path, rate: int, channels: int, width: int,
                                       expected: str) -> None:
    path = silent_wav(tmp_path / "x.wav", rate, channels, width)
    with pytest.raises(UsageError) as raised:
        wav_format(path)
    assert str(raised.value) == f"{path} has {expected}"


def test_bad_overrides_are_named() -> None:
    with pytest.raises(UsageError, match="--rate 11025 is not a jambonz rate"):
        jambonz_layout(MONO_16K, 11025, None)
    with pytest.raises(UsageError, match="--tracks 'left'"):
        default_tracks(MONO_16K, "left")


def test_no_calls_says_how_to_play_one() -> None:
    assert format_calls([], "callscribe") == \
        "no live calls (play one: `callscribe simulate jambonz --wav YOUR.wav`)"
