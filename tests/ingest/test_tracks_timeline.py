"""Track-based audio on the chunker (pure): one channel at a time, gaps filled from the
provider's clock, and a channel's role switched at an exact sample."""

from __future__ import annotations

from workers.ingest.chunker import Chunker, TrackTimeline


def test_gaps_beyond_jitter_are_filled_and_overlaps_appended() -> None:
    timeline = TrackTimeline(2, rate=8000, tolerance_ms=10, max_gap_ms=1000)
    assert timeline.silence_before(0, 160, 0) == 0
    assert timeline.silence_before(0, 160, 160 + 40) == 0  # 5 ms late: jitter
    assert timeline.silence_before(0, 160, 1000) == 1000 - 320  # a lost packet or two
    assert timeline.silence_before(1, 160, None) == 0  # no clock: appended
    assert timeline.silence_before(1, 160, 100_000) == 8000  # at most max_gap_ms at once
    assert timeline.silence_before(0, 160, 0) == 0  # before what we have: appended
    assert timeline.overlaps == 1
    assert timeline.filled_samples == 680 + 8000


def test_push_channel_keeps_each_channel_seq_and_time() -> None:
    chunker = Chunker(call_id="c", rate=8000, roles=("other", "assistant"), chunk_ms=100)
    out = chunker.push_channel(1, bytes(2 * 900))
    assert [(c.channel, c.seq, c.t_ms) for c in out] == [(1, 0, 0)]
    assert chunker.samples_of(1) == 900 and chunker.samples_of(0) == 0
    assert chunker.duration_ms == 112 and chunker.position_ms == 0
    out = chunker.push_channel(0, bytes(2 * 1600))
    assert [(c.channel, c.seq, c.t_ms) for c in out] == [(0, 0, 0), (0, 1, 100)]


def test_set_role_flushes_the_partial_chunk_under_the_old_role() -> None:
    chunker = Chunker(call_id="c", rate=8000, roles=("other", "assistant"), chunk_ms=100)
    chunker.push_channel(1, bytes(2 * 1000))
    [short] = chunker.set_role(1, "user")
    assert (short.role, short.samples, short.seq, short.last) == ("assistant", 200, 1, False)
    assert chunker.set_role(1, "user") == []
    [next_chunk] = chunker.push_channel(1, bytes(2 * 800))
    assert (next_chunk.role, next_chunk.seq, next_chunk.t_ms) == ("user", 2, 125)
    assert [c.role for c in chunker.close()] == ["other", "user"]
