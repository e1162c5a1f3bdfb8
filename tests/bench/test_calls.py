"""Call layouts (bench/calls.py) on a tiny generated corpus: the default one-utterance turns,
and continuous turns (several utterances trimmed to their speech and joined by pauses shorter
than the VAD's end-of-speech wait), their rendering and their word alignment (bench/words.py)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.calls import (
    CONTINUOUS_PAUSE_S,
    CONTINUOUS_TURN_S,
    CallPlan,
    Corpus,
    Piece,
    Turn,
    lay_out,
    render,
    write_wav,
)
from bench.words import AlignCache, align, word_timings

RATE = 16000
#: The transcriber's default CALLSCRIBE_VAD_END_SILENCE_MS.
VAD_END_SILENCE_S = 0.36
LEAD_S, TAIL_S = 0.4, 0.3  # digital silence around each generated utterance


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Two speakers with three 'utterances' each: noise bursts of 3-7 s with silence around
    them, as the recorded corpus has 0.2-0.6 s of silence at each end."""
    root = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(7)
    rows = ["file\tduration_s\treference_text\tspeaker"]
    for speaker in ("alice", "bob"):
        for index, speech_s in enumerate((3.0, 5.0, 7.0)):
            burst = rng.normal(0, 3000, int(speech_s * RATE)).clip(-32000, 32000)
            samples = np.concatenate([np.zeros(int(LEAD_S * RATE)), burst,
                                      np.zeros(int(TAIL_S * RATE))]).astype(np.int16)
            name = f"{speaker}-{index}.wav"
            write_wav(root / name, samples[:, None], RATE)
            rows.append(f"{name}\t{len(samples) / RATE:.3f}\t{speaker.upper()} SAYS {index}"
                        f"\t{speaker}")
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return Corpus(tel8k=False, max_turn_s=10, speech_dir=root)


def silent_runs(samples: np.ndarray[Any, Any]) -> list[float]:
    """Lengths in seconds of the runs of digital silence in ``samples``."""
    silent = np.concatenate([[False], samples == 0, [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    return [(end - start) / RATE for start, end in zip(edges[::2], edges[1::2], strict=True)]


def test_speech_span_trims_the_silence_around_an_utterance(corpus: Corpus) -> None:
    start, end = corpus.speech_span("alice-1.wav")
    assert start == pytest.approx(LEAD_S, abs=0.02)
    assert end == pytest.approx(LEAD_S + 5.0, abs=0.02)


def test_default_turns_are_one_whole_utterance_each(corpus: Corpus) -> None:
    _, turns = lay_out(corpus, seconds=60, rng=random.Random(1))
    assert len(turns) > 4
    for turn in turns:
        assert turn.pieces == ()
        (piece,) = turn.parts
        assert (piece.offset_s, piece.file, piece.text, piece.clip_s) == (
            0.0, turn.file, turn.text, None)
    for before, after in itertools.pairwise(turns):
        assert after.channel != before.channel
        assert after.start_s - (before.start_s + before.duration_s) >= 0.4


def test_continuous_turns_have_no_pause_the_vad_would_end(corpus: Corpus) -> None:
    speakers, turns = lay_out(corpus, seconds=150, rng=random.Random(2), continuous=True)
    assert len(turns) >= 3
    audio = render(corpus, turns)
    for number, turn in enumerate(turns):
        assert turn.speaker == speakers[turn.channel]
        assert turn.channel == number % 2
        assert len(turn.pieces) >= 2
        assert turn.duration_s <= CONTINUOUS_TURN_S[1]
        if number < len(turns) - 1:  # the last one may be cut short by the call's end
            assert turn.duration_s >= CONTINUOUS_TURN_S[0] - 7.0 - CONTINUOUS_PAUSE_S[1]
        assert turn.text == " ".join(p.text for p in turn.pieces)
        assert turn.file == "+".join(p.file for p in turn.pieces)
        for before, after in itertools.pairwise(turn.pieces):
            pause = after.offset_s - (before.offset_s + before.duration_s)
            assert CONTINUOUS_PAUSE_S[0] - 0.001 <= pause <= CONTINUOUS_PAUSE_S[1] + 0.001
        # What is actually played: no silence inside the turn as long as the VAD's wait.
        begin = round(turn.start_s * RATE)
        played = audio[begin:begin + round(turn.duration_s * RATE), turn.channel]
        assert np.count_nonzero(played) > 0.9 * len(played)
        assert max(silent_runs(played), default=0.0) < VAD_END_SILENCE_S
        assert not audio[begin:begin + len(played), 1 - turn.channel].any()


def test_continuous_turns_stay_within_the_call(corpus: Corpus) -> None:
    _, turns = lay_out(corpus, seconds=30, rng=random.Random(3), continuous=True)
    assert turns[-1].start_s + turns[-1].duration_s <= 30 - 1.0


def test_alignment_places_every_piece_of_a_turn_at_its_offset(corpus: Corpus) -> None:
    clip_a, clip_b = corpus.speech_span("alice-0.wav"), corpus.speech_span("alice-1.wav")
    pieces = (Piece(0.0, 3.0, "alice-0.wav", "good morning", clip_a),
              Piece(3.2, 5.0, "alice-1.wav", "how are you", clip_b))
    turn = Turn(0, 1.0, 8.2, "alice-0.wav+alice-1.wav", "alice",
                "good morning how are you", pieces)
    plan = CallPlan(call_id="c", wav=Path("c.wav"), rate=RATE, duration_s=10.0,
                    speakers=("alice", "bob"), turns=[turn])
    # Already aligned (word, end in s from the clip's start), so no model is loaded.
    cache: AlignCache = {("alice-0.wav", clip_a): [("good", 0.4), ("morning", 1.0)],
                         ("alice-1.wav", clip_b): [("how", 0.3), ("are", 0.6), ("you", 1.1)]}
    aligned = align(corpus, [plan], model_path="unused", cache=cache)
    assert [(w.token, round(w.end_ms)) for w in aligned[("c", 0)]] == [
        ("good", 1400), ("morning", 2000), ("how", 4500), ("are", 4800), ("you", 5300)]
    # The transcriber cut the turn elsewhere than between the pieces: words still match.
    received = [(5.0, {"type": "transcript", "id": "c:0:800", "msg": "Good morning, how"}),
                (6.0, {"type": "transcript", "id": "c:0:4600", "msg": "are you?"})]
    records = {"c:0:800": {"id": "c:0:800", "channel": 0, "audioStartMs": 800},
               "c:0:4600": {"id": "c:0:4600", "channel": 0, "audioStartMs": 4600}}
    timings = word_timings("c", plan, received, records, aligned,
                           wall_time_of=lambda ms: ms / 1000)
    assert [(t.token, t.id, round(t.committed_s, 3)) for t in timings] == [
        ("good", "c:0:800", 3.6), ("morning", "c:0:800", 3.0), ("how", "c:0:800", 0.5),
        ("are", "c:0:4600", 1.2), ("you", "c:0:4600", 0.7)]
