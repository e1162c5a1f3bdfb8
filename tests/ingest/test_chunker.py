"""The pure :class:`Chunker`: per-channel seq without gaps, a timeline from sample counts, the
final ``last`` chunk, and errors for audio that does not fit the call."""

from __future__ import annotations

import numpy as np
import pytest

from workers.ingest.chunker import Chunker
from workers.records import AudioChunk


def pcm(samples: int, *, start: int = 0) -> bytes:
    """``samples`` PCM16 samples whose values count up from ``start`` (so order is checkable)."""
    return (np.arange(start, start + samples) % 30000).astype("<i2").tobytes()


def feed(chunker: Chunker, blocks: list[int]) -> tuple[list[AudioChunk], list[bytes]]:
    """Push mono blocks of the given sample counts, then close; return chunks and input."""
    out: list[AudioChunk] = []
    sent: list[bytes] = []
    position = 0
    for size in blocks:
        block = pcm(size, start=position)
        position += size
        sent.append(block)
        out += chunker.push([block])
    out += chunker.close()
    return out, sent


def test_seq_is_contiguous_and_audio_is_kept_in_order() -> None:
    chunker = Chunker(call_id="c1", rate=8000, roles=("other",), chunk_ms=100)
    # Uneven block sizes: some smaller than a chunk, some spanning several.
    chunks, sent = feed(chunker, [160, 7, 1000, 2400, 33, 799, 5000, 1])
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert b"".join(c.pcm for c in chunks) == b"".join(sent)
    assert all(c.samples == 800 for c in chunks[:-1])
    assert all(c.call_id == "c1" and c.channel == 0 and c.role == "other" for c in chunks)
    assert chunker.last_seq == (len(chunks) - 1,)


def test_stereo_channels_count_seq_separately() -> None:
    chunker = Chunker(call_id="c2", rate=16000, roles=("other", "assistant"), chunk_ms=20)
    out: list[AudioChunk] = []
    for i in range(7):
        out += chunker.push([pcm(150, start=i * 150), pcm(150, start=50_000 + i * 150)])
    out += chunker.close()
    for channel, role in ((0, "other"), (1, "assistant")):
        mine = [c for c in out if c.channel == channel]
        assert [c.seq for c in mine] == list(range(len(mine)))
        assert {c.role for c in mine} == {role}
        assert {c.channels for c in mine} == {2}
        assert sum(c.samples for c in mine) == 7 * 150
    assert chunker.last_seq == (3, 3)  # 1050 samples: three of 320, then 90 in the last


@pytest.mark.parametrize(("rate", "chunk_ms"), [(8000, 100), (16000, 100), (44100, 15),
                                                (11025, 30), (22050, 20)])
def test_t_ms_comes_from_sample_counts(rate: int, chunk_ms: int) -> None:
    chunker = Chunker(call_id="c3", rate=rate, roles=("other",), chunk_ms=chunk_ms)
    chunks, _ = feed(chunker, [rate // 7] * 20)  # about 2.86 s in blocks of ~143 ms
    before = 0
    for chunk in chunks:
        assert chunk.rate == rate
        assert chunk.t_ms == before * 1000 // rate, (chunk.seq, chunk.t_ms)
        before += chunk.samples
    total = (rate // 7) * 20
    assert before == total
    assert chunker.samples_in == total
    assert chunker.position_ms == total * 1000 // rate
    # The chunk size is whole samples for the duration; at 44.1 kHz / 15 ms that is 661 samples,
    # so t_ms drifts below seq * chunk_ms: the timeline is the audio's, not a multiplication.
    assert chunks[0].samples == rate * chunk_ms // 1000


def test_t_ms_at_an_odd_rate_is_not_seq_times_chunk_ms() -> None:
    chunker = Chunker(call_id="c4", rate=44100, roles=("other",), chunk_ms=15)
    chunks, _ = feed(chunker, [2 * 44100])
    assert chunks[100].t_ms == 100 * 661 * 1000 // 44100 == 1498  # not 1500


def test_last_chunk_carries_the_remainder() -> None:
    chunker = Chunker(call_id="c5", rate=8000, roles=("other",), chunk_ms=100)
    chunks, _ = feed(chunker, [2000])
    assert [c.last for c in chunks] == [False, False, True]
    assert [c.samples for c in chunks] == [800, 800, 400]
    assert chunks[-1].t_ms == 200


def test_last_chunk_is_empty_when_audio_fills_whole_chunks() -> None:
    chunker = Chunker(call_id="c6", rate=8000, roles=("other", "assistant"), chunk_ms=100)
    out = chunker.push([pcm(1600), pcm(1600)])
    last = chunker.close()
    assert [c.last for c in out] == [False] * 4
    assert [(c.channel, c.seq, c.pcm, c.last, c.t_ms) for c in last] == [
        (0, 2, b"", True, 200), (1, 2, b"", True, 200)]
    assert chunker.last_seq == (2, 2)


def test_a_call_without_audio_still_ends_with_a_last_chunk() -> None:
    chunker = Chunker(call_id="c7", rate=16000, roles=("other",), chunk_ms=100)
    assert chunker.last_seq == (-1,)
    assert chunker.position_ms == 0
    [last] = chunker.close()
    assert (last.seq, last.t_ms, last.pcm, last.last) == (0, 0, b"", True)


def test_channel_count_mismatch_is_an_error() -> None:
    chunker = Chunker(call_id="c8", rate=8000, roles=("other", "assistant"), chunk_ms=100)
    with pytest.raises(ValueError, match="got 1 channels of audio; expected 2"):
        chunker.push([pcm(10)])
    with pytest.raises(ValueError, match="got 3 channels"):
        chunker.push([pcm(10)] * 3)
    assert chunker.samples_in == 0  # nothing was taken from the bad blocks


def test_push_after_close_is_an_error() -> None:
    chunker = Chunker(call_id="c9", rate=8000, roles=("other",), chunk_ms=100)
    chunker.close()
    with pytest.raises(RuntimeError, match="closed"):
        chunker.push([pcm(10)])
