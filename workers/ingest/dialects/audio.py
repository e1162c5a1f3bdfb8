"""Sample formats the dialects need (pure): G.711 μ-law and A-law ⇄ PCM16 LE, big-endian
(network order) PCM16 ⇄ little-endian, and resampling.

``audioop`` would do G.711, but it is deprecated in 3.11 and gone in 3.13; these are the
ITU-T G.711 tables (μ-law with the usual 0x84 bias; A-law with its even bits inverted, 0x55),
built once with numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import soxr

_BIAS = 0x84


def _decode_table() -> np.ndarray[Any, Any]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2")


def _encode_table() -> np.ndarray[Any, Any]:
    # Sun's g711.c (as CPython's audioop): 14-bit magnitude, segment search, bits inverted.
    samples = np.arange(-32768, 32768, dtype=np.int32) >> 2  # arithmetic shift, as in C
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), 8159) + (_BIAS >> 2)
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    segment = np.searchsorted(segment_ends, magnitude)  # first end >= magnitude
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)  # beyond the last segment: the maximum
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _alaw_decode_table() -> np.ndarray[Any, Any]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (codes >> 4) & 0x07
    value = ((codes & 0x0F) << 4) + 8  # the middle of the step
    value = np.where(segment == 0, value, (value + 0x100) << np.maximum(segment - 1, 0))
    return np.where(codes & 0x80, value, -value).astype("<i2")


def _alaw_encode_table() -> np.ndarray[Any, Any]:
    # Sun's g711.c (as CPython's audioop): 13-bit magnitude, segment search, even bits inverted.
    samples = np.arange(-32768, 32768, dtype=np.int32) >> 3  # arithmetic shift, as in C
    mask = np.where(samples >= 0, 0xD5, 0x55)
    magnitude = np.where(samples >= 0, samples, -samples - 1)
    segment_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    segment = np.searchsorted(segment_ends, magnitude)  # first end >= magnitude (at most 7)
    step = np.where(segment < 2, magnitude >> 1, magnitude >> np.maximum(segment, 1))
    code = (segment << 4) | (step & 0x0F)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


_DECODE = _decode_table()
_ENCODE = _encode_table()
_ALAW_DECODE = _alaw_decode_table()
_ALAW_ENCODE = _alaw_encode_table()


def mulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 μ-law bytes (one per sample) → PCM16 little-endian."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_mulaw(pcm: bytes) -> bytes:
    """PCM16 little-endian (whole samples) → G.711 μ-law, one byte per sample."""
    if len(pcm) % 2:
        raise ValueError(f"{len(pcm)} bytes of PCM16; expected whole 16-bit samples")
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    return _ENCODE[samples + 32768].tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    """G.711 A-law bytes (one per sample) → PCM16 little-endian."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """PCM16 little-endian (whole samples) → G.711 A-law, one byte per sample."""
    if len(pcm) % 2:
        raise ValueError(f"{len(pcm)} bytes of PCM16; expected whole 16-bit samples")
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    return _ALAW_ENCODE[samples + 32768].tobytes()


def swap16(data: bytes) -> bytes:
    """PCM16 big-endian (RTP's network order) ⇄ little-endian: the byte order of whole
    samples swapped (the same function both ways)."""
    if len(data) % 2:
        raise ValueError(f"{len(data)} bytes of PCM16; expected whole 16-bit samples")
    return np.frombuffer(data, dtype=">i2").astype("<i2").tobytes()


def resample_pcm16(pcm: bytes, source_rate: int, rate: int) -> bytes:
    """PCM16 LE mono from ``source_rate`` to ``rate`` (soxr; unchanged when equal)."""
    if len(pcm) % 2:
        raise ValueError(f"{len(pcm)} bytes of PCM16; expected whole 16-bit samples")
    if source_rate == rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    out = soxr.resample(samples, source_rate, rate)
    return np.ascontiguousarray(out, dtype="<i2").tobytes()


__all__ = ["alaw_to_pcm16", "mulaw_to_pcm16", "pcm16_to_alaw", "pcm16_to_mulaw",
           "resample_pcm16", "swap16"]
