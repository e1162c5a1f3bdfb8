"""The endpointer on the committed speech fixtures: bytes in, utterances out, no mocks.

Expectations come from ``tests/fixtures/speech/manifest.json`` (where each sentence's audible
speech starts and ends) and, for the end of speech, from WebRTC VAD's own frame decisions:
its hangover marks a few frames after the last audible sample as voiced, by an amount that
depends on how the sentence ends, so the end is checked against the frames the VAD itself
reports and, more loosely, against the manifest.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import webrtcvad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.transcribe.vad import Endpointer, InputGain, Utterance

SPEECH = Path(__file__).parent.parent / "fixtures" / "speech"
MANIFEST: dict[str, Any] = json.loads((SPEECH / "manifest.json").read_text())
FRAME_MS = 30
PADDING_MS = 210
END_SILENCE_MS = 360
TAIL_MS = 150
BYTES_PER_MS = 32  # 16 kHz PCM16 mono


def pcm_16k(name: str, channel: int = 0) -> bytes:
    """One channel of a fixture as 16 kHz PCM16 (soxr upsampling for 8 kHz files)."""
    with wave.open(str(SPEECH / name)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    mono = samples.reshape(-1, channels)[:, channel]
    if rate != 16_000:
        up = soxr.resample(mono.astype(np.float32) / 32768.0, rate, 16_000)
        mono = np.clip(np.round(up * 32768.0), -32768, 32767).astype("<i2")
    return mono.astype("<i2").tobytes()


def sentences(name: str, channel: int = 0) -> list[tuple[int, int]]:
    """(start_ms, end_ms) of each sentence's audible speech, from the manifest."""
    track = MANIFEST["files"][name]["tracks"][channel]
    return [(round(s["start_s"] * 1000), round(s["end_s"] * 1000)) for s in track["sentences"]]


def vad_frames(pcm: bytes, aggressiveness: int = 2) -> list[bool]:
    """WebRTC VAD's decision for each whole 30 ms frame, straight from the library."""
    vad = webrtcvad.Vad(aggressiveness)
    size = FRAME_MS * BYTES_PER_MS
    return [vad.is_speech(pcm[i : i + size], 16_000) for i in range(0, len(pcm) - size + 1, size)]


def run(pcm: bytes, **kwargs: int) -> list[Utterance]:
    endpointer = Endpointer(**kwargs)
    return endpointer.push(pcm) + endpointer.flush()


def run_chunked(pcm: bytes, sizes: list[int], **kwargs: int) -> list[Utterance]:
    endpointer = Endpointer(**kwargs)
    out: list[Utterance] = []
    offset, i = 0, 0
    while offset < len(pcm):
        size = sizes[i % len(sizes)]
        out += endpointer.push(pcm[offset : offset + size])
        offset, i = offset + size, i + 1
    return out + endpointer.flush()


def floor_frame(ms: int) -> int:
    return ms // FRAME_MS * FRAME_MS


def ceil_frame(ms: int) -> int:
    return -(-ms // FRAME_MS) * FRAME_MS


def assert_pcm_matches_timeline(pcm: bytes, utterance: Utterance, origin_ms: int = 0) -> None:
    start = (utterance.start_ms - origin_ms) * BYTES_PER_MS
    end = (utterance.end_ms - origin_ms) * BYTES_PER_MS
    assert utterance.pcm == pcm[start:end]


# ---- boundaries ---------------------------------------------------------------------------

CHANNELS = [
    ("caller.wav", 0),
    ("agent.wav", 0),
    ("call_mono_16k.wav", 0),
    ("call_stereo_8k.wav", 0),
    ("call_stereo_8k.wav", 1),
]


@pytest.mark.parametrize(("name", "channel"), CHANNELS)
def test_one_utterance_per_sentence_at_the_right_place(name: str, channel: int) -> None:
    pcm = pcm_16k(name, channel)
    utterances = run(pcm)
    expected = sentences(name, channel)
    assert len(utterances) == len(expected)
    voiced = vad_frames(pcm)
    for utterance, (start, end) in zip(utterances, expected, strict=True):
        assert not utterance.forced_cut
        # Opens padding_ms before the frame where the sentence's speech begins.
        assert abs(utterance.start_ms - (floor_frame(start) - PADDING_MS)) <= FRAME_MS
        # Speech ends at the last frame the VAD marks voiced before the closing silence ...
        last = max(i for i in range(min(len(voiced), end // FRAME_MS + 8)) if voiced[i])
        assert abs(utterance.voiced_end_ms - (last + 1) * FRAME_MS) <= FRAME_MS
        # ... which is the end of the sentence give or take the VAD's hangover.
        assert -5 * FRAME_MS <= utterance.voiced_end_ms - ceil_frame(end) <= 4 * FRAME_MS
        # The audio keeps a short tail after the speech, and matches the input exactly.
        assert utterance.end_ms == utterance.voiced_end_ms + TAIL_MS
        assert_pcm_matches_timeline(pcm, utterance)


def test_utterances_do_not_overlap_and_are_in_order() -> None:
    pcm = pcm_16k("call_stereo_8k.wav", 0) + pcm_16k("caller.wav")
    utterances = run(pcm)
    assert len(utterances) == 4
    for before, after in itertools.pairwise(utterances):
        assert before.end_ms <= after.start_ms


# ---- chunking -----------------------------------------------------------------------------

_CALLER = pcm_16k("caller.wav")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=20),
    max_utterance_ms=st.sampled_from([15_000, 1_200]),
)
def test_any_chunking_gives_the_same_utterances(sizes: list[int], max_utterance_ms: int) -> None:
    whole = run(_CALLER, max_utterance_ms=max_utterance_ms)
    assert whole
    assert run_chunked(_CALLER, sizes, max_utterance_ms=max_utterance_ms) == whole


def test_byte_at_a_time_gives_the_same_utterances() -> None:
    pcm = _CALLER[: 3_000 * BYTES_PER_MS]
    assert run_chunked(pcm, [1]) == run(pcm)


# ---- long utterances ----------------------------------------------------------------------


def test_hard_cut_at_max_length_loses_and_repeats_nothing() -> None:
    """Cut every sentence of the caller at 1.2 s: the pieces tile each sentence exactly."""
    pcm = _CALLER
    utterances = run(pcm, max_utterance_ms=1_200)
    groups: list[list[Utterance]] = [[]]
    for utterance in utterances:
        groups[-1].append(utterance)
        if not utterance.forced_cut:
            groups.append([])
    groups.pop()
    assert len(groups) == len(sentences("caller.wav"))
    voiced = vad_frames(pcm)
    for group, (start, end) in zip(groups, sentences("caller.wav"), strict=True):
        assert len(group) >= 2
        assert all(u.duration_ms <= 1_200 for u in group)
        # Continuous speech (no 90 ms pause in the last third) is cut exactly at the limit.
        assert group[0].duration_ms == 1_200
        for before, after in itertools.pairwise(group):
            assert before.end_ms == after.start_ms
        joined = b"".join(u.pcm for u in group)
        assert joined == pcm[group[0].start_ms * BYTES_PER_MS : group[-1].end_ms * BYTES_PER_MS]
        # Every frame the VAD calls voiced inside the sentence is inside the tiled range.
        inside = [i for i in range(start // FRAME_MS, end // FRAME_MS) if voiced[i]]
        assert group[0].start_ms <= inside[0] * FRAME_MS
        assert (inside[-1] + 1) * FRAME_MS <= group[-1].voiced_end_ms


def test_long_cut_prefers_the_latest_pause_in_the_last_third() -> None:
    """Two sentences 240 ms apart (shorter than end_silence_ms): cut in that pause."""
    pcm = _CALLER
    (_, a_end), (b_start, b_end) = sentences("caller.wav")
    gap = b"\x00" * (240 * BYTES_PER_MS)
    joined = pcm[: a_end * BYTES_PER_MS] + gap + pcm[b_start * BYTES_PER_MS :]
    b_shift = a_end + 240 - b_start  # where sentence B moved to
    utterances = run(joined, max_utterance_ms=3_000)
    assert len(utterances) == 2
    first, second = utterances
    assert first.forced_cut
    assert not second.forced_cut
    # The cut falls in the silence between the two sentences, not inside a word.
    assert a_end <= first.end_ms <= a_end + 240
    assert abs(first.voiced_end_ms - ceil_frame(a_end)) <= 4 * FRAME_MS
    assert second.start_ms == first.end_ms
    assert abs(second.voiced_end_ms - ceil_frame(b_end + b_shift)) <= 5 * FRAME_MS
    for utterance in utterances:
        assert_pcm_matches_timeline(joined, utterance)


def test_default_max_length_bounds_memory_in_endless_speech() -> None:
    """25 s of speech without a pause: 15 s pieces, open audio never above the limit."""
    (a_start, a_end), (b_start, b_end) = sentences("caller.wav")
    speech = _CALLER[a_start * BYTES_PER_MS : a_end * BYTES_PER_MS]
    speech += _CALLER[b_start * BYTES_PER_MS : b_end * BYTES_PER_MS]
    pcm = b"\x00" * (300 * BYTES_PER_MS) + speech * 6 + b"\x00" * (1_000 * BYTES_PER_MS)
    endpointer = Endpointer()
    utterances: list[Utterance] = []
    for offset in range(0, len(pcm), 4_000):
        utterances += endpointer.push(pcm[offset : offset + 4_000])
        assert len(endpointer.open_audio()) <= 15_000 * BYTES_PER_MS
    utterances += endpointer.flush()
    assert utterances[0].forced_cut
    assert all(u.duration_ms <= 15_000 for u in utterances)
    for before, after in itertools.pairwise(utterances):
        if before.forced_cut:
            assert before.end_ms == after.start_ms
    for utterance in utterances:
        assert_pcm_matches_timeline(pcm, utterance)


# ---- silence, flush, state, origin --------------------------------------------------------


def test_digital_silence_produces_nothing() -> None:
    endpointer = Endpointer()
    assert endpointer.push(b"\x00" * (5_000 * BYTES_PER_MS)) == []
    assert not endpointer.in_speech
    assert endpointer.flush() == []


def test_line_hiss_produces_nothing() -> None:
    assert run(pcm_16k("silence_noise_8k.wav")) == []


def test_flush_closes_an_open_utterance() -> None:
    (start, end), _ = sentences("caller.wav")
    pcm = _CALLER[: (end + 60) * BYTES_PER_MS]  # the stream stops right after the speech
    endpointer = Endpointer()
    assert endpointer.push(pcm) == []
    assert endpointer.in_speech
    [utterance] = endpointer.flush()
    assert not utterance.forced_cut
    assert not endpointer.in_speech
    assert utterance.start_ms == floor_frame(start) - PADDING_MS
    assert utterance.end_ms <= end + 60
    assert ceil_frame(end) - 5 * FRAME_MS <= utterance.voiced_end_ms <= utterance.end_ms
    assert_pcm_matches_timeline(pcm, utterance)
    assert endpointer.flush() == []


def test_flush_drops_a_too_short_utterance() -> None:
    (start, _), _ = sentences("caller.wav")
    endpointer = Endpointer()
    assert endpointer.push(_CALLER[: (start + 180) * BYTES_PER_MS]) == []
    assert endpointer.in_speech
    assert endpointer.flush() == []


def test_open_state_while_speaking() -> None:
    (start, end), _ = sentences("caller.wav")
    endpointer = Endpointer()
    assert endpointer.open_start_ms is None
    assert endpointer.open_audio() == b""
    upto = (start + 1_000) * BYTES_PER_MS + 7  # mid-sentence, mid-frame, mid-sample
    assert endpointer.push(_CALLER[:upto]) == []
    assert endpointer.in_speech
    assert endpointer.open_start_ms == floor_frame(start) - PADDING_MS
    audio = endpointer.open_audio()
    begin = (floor_frame(start) - PADDING_MS) * BYTES_PER_MS
    assert audio == _CALLER[begin : begin + len(audio)]
    assert begin + len(audio) == upto // (FRAME_MS * BYTES_PER_MS) * (FRAME_MS * BYTES_PER_MS)
    [utterance] = endpointer.push(_CALLER[upto : (end + 500) * BYTES_PER_MS])
    assert utterance.pcm.startswith(audio)
    assert not endpointer.in_speech
    assert endpointer.open_start_ms is None


def test_origin_shifts_every_time() -> None:
    pcm = pcm_16k("call_stereo_8k.wav", 1)
    plain = run(pcm)
    shifted = run(pcm, origin_ms=123_456)
    assert plain
    assert shifted == [
        dataclasses.replace(
            u,
            start_ms=u.start_ms + 123_456,
            end_ms=u.end_ms + 123_456,
            voiced_end_ms=u.voiced_end_ms + 123_456,
        )
        for u in plain
    ]


def test_stream_continues_after_flush() -> None:
    """Audio pushed after a flush is placed after everything pushed before it."""
    pcm = _CALLER
    endpointer = Endpointer()
    first = endpointer.push(pcm) + endpointer.flush()
    second = endpointer.push(pcm) + endpointer.flush()
    offset = len(pcm) // BYTES_PER_MS
    assert [u.pcm for u in second] == [u.pcm for u in first]
    assert [u.start_ms for u in second] == [u.start_ms + offset for u in first]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aggressiveness": 4},
        {"frame_ms": 25},
        {"start_ms": 0},
        {"end_silence_ms": 10},
        {"padding_ms": -1},
        {"min_utterance_ms": -30},
        {"max_utterance_ms": 900},
    ],
)
def test_bad_settings_say_what_was_expected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Endpointer(**kwargs)


def _scaled(pcm: bytes, db: float, noise_dbfs: float | None = None) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) * 10 ** (db / 20)
    if noise_dbfs is not None:  # steady white noise (a seeded generator: the same every run)
        noise = np.random.default_rng(7).standard_normal(samples.size)
        samples += noise * 32768 * 10 ** (noise_dbfs / 20)
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def test_quiet_speech_is_found_through_the_input_gain() -> None:
    """The caller 50 dB down (speech peaking near -50 dBFS, as on the FLEURS clips of the
    evaluation set): without the gain the VAD loses the start of the first sentence and the end
    of the second; with it, the cuts are those of the same speech at its normal level."""
    normal = [(u.start_ms, u.end_ms) for u in run(_CALLER)]
    quiet = _scaled(_CALLER, -50.0)
    ungained = [(u.start_ms, u.end_ms) for u in run(quiet, max_gain_db=0)]
    assert ungained[0][0] - normal[0][0] > 300 or ungained[-1][1] < normal[-1][1] - 300
    found = run(quiet)
    assert len(found) == len(normal)
    for utterance, (start, end) in zip(found, normal, strict=True):
        assert abs(utterance.start_ms - start) <= 4 * FRAME_MS
        assert abs(utterance.end_ms - end) <= 4 * FRAME_MS
        assert_pcm_matches_timeline(quiet, utterance)  # the utterance keeps the quiet audio


def test_the_gain_never_lifts_steady_noise_into_speech() -> None:
    """Hiss alone at -45 dBFS stays nothing: the noise floor caps the gain."""
    hiss = _scaled(bytes(len(_CALLER)), 0.0, noise_dbfs=-45.0)
    assert run(hiss) == []
    gain = InputGain()
    for offset in range(0, 32 * 3000, 960):
        gain.apply(hiss[offset:offset + 960])
    assert gain.gain_db == 0.0


def test_a_line_at_a_normal_level_is_left_as_it_is() -> None:
    """The fixtures' speech (espeak-ng, peaks near -1 dBFS) gets no gain: every frame the VAD
    hears is the frame that came in."""
    gain = InputGain()
    frames = [_CALLER[o:o + 960] for o in range(0, len(_CALLER) - 960, 960)]
    assert all(gain.apply(frame) == frame for frame in frames)
    assert gain.gain_db == 0.0


# ---- a long turn -------------------------------------------------------------------------


def one_turn(pause_ms: int) -> tuple[bytes, list[tuple[int, int]]]:
    """caller.wav's and agent.wav's sentences as one turn, ``pause_ms`` apart (shorter than
    end_silence_ms): (pcm, each sentence's (start_ms, end_ms) in it)."""
    pieces, spans, at = [bytes(16_000)], [], 500
    for name in ("caller.wav", "agent.wav"):
        pcm = pcm_16k(name)
        for start, end in sentences(name):
            pieces += [pcm[start * BYTES_PER_MS:end * BYTES_PER_MS], bytes(pause_ms * 32)]
            spans.append((at, at + end - start))
            at += end - start + pause_ms
    return b"".join([*pieces, bytes(16_000)]), spans


def test_a_long_turn_is_closed_at_breaths_once_it_is_long() -> None:
    pcm, spans = one_turn(pause_ms=300)
    whole = run(pcm)
    assert len(whole) == 1  # every pause is shorter than end_silence_ms: one 10 s utterance
    soft = run(pcm, soft_after_ms=3000, soft_silence_ms=150)
    assert len(soft) >= 2
    for one, after in itertools.pairwise(soft):  # nothing lost, nothing twice
        assert one.end_ms <= after.start_ms
        assert after.start_ms - one.end_ms <= 300
    for utterance in soft:
        assert_pcm_matches_timeline(pcm, utterance)
        # closed at a pause between sentences, never inside one
        assert not any(start < utterance.voiced_end_ms - 30 < end - 150
                       and utterance is not soft[-1] for start, end in spans[:-1]
                       if start < utterance.voiced_end_ms)
    assert soft[0].start_ms == whole[0].start_ms and soft[-1].end_ms == whole[0].end_ms
    # short utterances are left alone: the soft rule starts only at soft_after_ms
    assert all(u.duration_ms >= 3000 for u in soft[:-1])


@pytest.mark.parametrize("chunk_ms", [30, 100, 170])
def test_pending_close_is_the_utterance_the_close_returns(chunk_ms: int) -> None:
    """Once the trailing silence is settled, ``pending_close`` is byte for byte what the
    close later returns when no speech follows (the transcriber decodes it early); before
    that, and while speech goes on, there is none."""
    pcm = pcm_16k("call_mono_16k.wav") + bytes(1000 * BYTES_PER_MS)  # two sentences
    endpointer = Endpointer()
    size = chunk_ms * BYTES_PER_MS
    pending: Utterance | None = None
    closed: list[tuple[Utterance | None, Utterance]] = []
    for offset in range(0, len(pcm), size):
        for utterance in endpointer.push(pcm[offset : offset + size]):
            closed.append((pending, utterance))
        candidate = endpointer.pending_close()
        if candidate is not None:
            assert endpointer.in_speech
            # Settled: the trailing silence already holds the tail a close keeps.
            assert candidate.end_ms - candidate.voiced_end_ms == TAIL_MS
            assert candidate.end_ms <= offset // BYTES_PER_MS + chunk_ms
        pending = candidate
    assert len(closed) == 2
    for before, utterance in closed:
        assert before == utterance
