"""G.711 μ-law against the standard's table values (not against another implementation)."""

from __future__ import annotations

import struct

import pytest

from workers.ingest.dialects.audio import mulaw_to_pcm16, pcm16_to_mulaw, resample_pcm16


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def test_decode_known_codes() -> None:
    # 0xFF/0x7F are the two zeros, 0x00/0x80 the extremes (±32124), 0xF0 a small positive.
    assert mulaw_to_pcm16(bytes([0xFF, 0x7F, 0x00, 0x80, 0xF0, 0x70])) == pcm(
        0, 0, -32124, 32124, 120, -120)


def test_encode_known_values_and_round_trip() -> None:
    assert pcm16_to_mulaw(pcm(0, 32767, -32768, 120, -120)) == bytes([0xFF, 0x80, 0x00, 0xF0,
                                                                     0x70])
    codes = bytes(range(256))
    # Every code decodes to a value that encodes back to it (both zeros to 0xFF).
    back = pcm16_to_mulaw(mulaw_to_pcm16(codes))
    assert all(b == c or (c, b) == (0x7F, 0xFF) for b, c in zip(back, codes, strict=True))


def test_bad_lengths_and_resampling() -> None:
    with pytest.raises(ValueError):
        pcm16_to_mulaw(b"\x00")
    with pytest.raises(ValueError):
        resample_pcm16(b"\x00", 8000, 16000)
    assert resample_pcm16(pcm(1, 2), 8000, 8000) == pcm(1, 2)
    assert len(resample_pcm16(bytes(1600), 8000, 16000)) == 3200
