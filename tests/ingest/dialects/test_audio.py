"""G.711 μ-law and A-law against the standard's table values (not against another
implementation); the byte swap of network-order PCM16."""

from __future__ import annotations

import struct

import pytest

from workers.ingest.dialects.audio import (
    alaw_to_pcm16,
    mulaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_mulaw,
    resample_pcm16,
    swap16,
)


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


def test_alaw_known_codes_and_round_trip() -> None:
    # 0xD5/0x55 are the smallest steps (±8), 0xAA/0x2A the extremes (±32256); 0xDA and 0xFA
    # the tops of segments 0 and 2 (+248, +1008).
    assert alaw_to_pcm16(bytes([0xD5, 0x55, 0xAA, 0x2A, 0xDA, 0xFA])) == pcm(
        8, -8, 32256, -32256, 248, 1008)
    assert pcm16_to_alaw(pcm(0, -1, 32767, -32768, 248, 1008)) == bytes([0xD5, 0x55, 0xAA, 0x2A,
                                                                         0xDA, 0xFA])
    codes = bytes(range(256))
    assert pcm16_to_alaw(alaw_to_pcm16(codes)) == codes  # A-law has no second zero
    with pytest.raises(ValueError):
        pcm16_to_alaw(b"\x00")


def test_network_order_pcm16_is_swapped_both_ways() -> None:
    big = struct.pack(">3h", 1, -2, 32767)
    assert swap16(big) == pcm(1, -2, 32767) and swap16(swap16(big)) == big
    with pytest.raises(ValueError):
        swap16(b"\x00\x01\x02")
