"""The decode policy's pure parts: window selection and what a prefixed decode adds."""

from __future__ import annotations

import pytest

from workers.transcribe.asr import (
    MIN_TAIL_S,
    _merge_punctuation,
    after_prefix,
    cut_restart,
    holds_sentence_end,
    parse_windows,
    resolve_lanes,
    window_for,
)


@pytest.mark.parametrize(("seconds", "window"), [
    (0.3, 5), (4.0, 5), (4.01, 10), (9.0, 10), (13.9, 15), (14.5, 30), (29.0, 30), (29.5, None)])
def test_each_utterance_gets_the_smallest_window_with_a_tail_of_padding(
        seconds: float, window: int | None) -> None:
    assert window_for(seconds, (5, 10, 15, 30)) == window
    if window is not None:
        assert seconds + MIN_TAIL_S <= window


def test_windows_never_exceed_the_configured_whole_window() -> None:
    assert parse_windows("5,10,15,30") == (5, 10, 15, 30)
    assert parse_windows("10, 5", chunk_length=15) == (5, 10, 15)
    assert parse_windows("", chunk_length=20) == (20,)  # empty: always the whole window
    assert parse_windows(None) == (30,)
    with pytest.raises(ValueError, match="1-30"):
        parse_windows("0,45")


@pytest.mark.parametrize(("prefix", "continuation", "new"), [
    ("Oh no, I am", "sorry to hear that.", "sorry to hear that."),
    # whisper began the audio again after a prefix that already covered it
    ("Oh no, I am sorry to hear that.", "Oh no, I am sorry to hear that.", ""),
    ("Oh no, I am sorry", "Oh no, I am sorry to hear that.", "to hear that."),
    ("Oh no, I am sorry", "Oh no, I was", ""),
    # or repeated the prefix's last words
    ("let me look at your", "at your account", "account"),
    ("", "Hello there.", "Hello there."),
    ("Hello there.", "", ""),
])
def test_a_prefixed_decode_adds_only_what_is_new(prefix: str, continuation: str,
                                                 new: str) -> None:
    assert after_prefix(prefix, continuation) == new


def test_aligned_punctuation_joins_its_word() -> None:
    found = [{"word": " Hello", "start": 0.0, "end": 0.4}, {"word": ".", "start": 0.4,
                                                            "end": 0.42},
             {"word": " How", "start": 0.6, "end": 0.8}, {"word": "...", "start": 0.8,
                                                          "end": 0.8}]
    words = _merge_punctuation(found)
    assert [w.word for w in words] == ["Hello.", "How..."]
    assert (words[0].start_s, words[0].end_s) == (0.0, 0.42)


def test_sentence_end_before_the_last_word() -> None:
    assert holds_sentence_end("Hello. How")
    assert not holds_sentence_end("Hello how are you.")


@pytest.mark.parametrize(("prefix", "continuation", "kept"), [
    ("", "Let me look at your account. Let me look at your account. Let me look",
     "Let me look at your account."),
    ("Let me", "look at your account. Let me look at your account.", "look at your account."),
    ("Oh no, I am", "sorry to hear that.", "sorry to hear that."),
    ("", "I said no no no to him", "I said no no no to him"),
])
def test_whisper_starting_the_utterance_over_is_cut(prefix: str, continuation: str,
                                                    kept: str) -> None:
    assert cut_restart(prefix, continuation) == kept


@pytest.mark.parametrize(("lanes", "device", "threads", "expected"), [
    (0, "cpu", 2, (2, 1)),   # automatic on CPU: a lane per core, at most two
    (0, "cpu", 1, (1, 1)),
    (0, "cpu", 8, (2, 4)),
    (0, "cuda", 8, (1, 8)),  # one lane on a GPU
    (3, "cpu", 6, (3, 2)),   # as asked, the threads shared out
    (4, "cpu", 2, (4, 1)),   # never under one thread a lane
])
def test_decode_lanes_share_out_the_threads(lanes: int, device: str, threads: int,
                                            expected: tuple[int, int]) -> None:
    assert resolve_lanes(lanes, device, threads) == expected
