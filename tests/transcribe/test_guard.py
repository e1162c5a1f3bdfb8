"""The hallucination guard on whisper segments shaped as faster-whisper returns them: each
reason, and real words kept."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from workers.transcribe.asr import Word
from workers.transcribe.guard import guard, only_tone_words, too_quiet, voiced_words


def segment(text: str, *, no_speech: float = 0.1, logprob: float = -0.3,
            compression: float = 1.2) -> SimpleNamespace:
    return SimpleNamespace(text=text, no_speech_prob=no_speech, avg_logprob=logprob,
                           compression_ratio=compression)


@pytest.mark.parametrize(("seg", "reason"), [
    (segment(" . . . ."), "empty"),
    (segment(""), "empty"),
    (segment(" Thank you.", no_speech=0.8, logprob=-1.2), "no_speech"),
    (segment(" the the the the the the the", compression=3.1), "repetitive"),
    (segment(" It'll... It'll... It'll... It'll...", compression=1.9), "repetitive"),
    (segment(" Thank you.", logprob=-0.7), "phantom_phrase"),
    (segment(" Beep beep beep.", logprob=-0.2), "phantom_phrase"),  # 8 kHz ringback
    (segment(" Ring, ring.", logprob=-0.1), "phantom_phrase"),
    (segment(" A", logprob=-0.2), "phantom_phrase"),  # 8 kHz choir music
])
def test_each_reason(seg: SimpleNamespace, reason: str) -> None:
    kept, reasons = guard([seg])
    assert kept == [] and reasons == (reason,)


def test_real_words_are_kept_even_when_they_look_like_phantoms() -> None:
    sure_thanks = segment(" Thank you.", logprob=-0.2)  # said clearly: whisper is sure
    sentence = segment(" The phone kept ringing, then a beep.")
    refusal = segment(" No, no, no.")  # three times is speech
    kept, reasons = guard([sure_thanks, sentence, refusal])
    assert kept == [sure_thanks, sentence, refusal] and reasons == ()


def test_tone_words() -> None:
    assert only_tone_words("Beep. Beep. Boop!")
    assert not only_tone_words("beep me later")
    assert not only_tone_words("a card")
    assert not only_tone_words("...")
    assert only_tone_words("Be Be Be")  # ringback in a 15 s window
    assert only_tone_words("Beeeeeeeee")
    assert not only_tone_words("Be there at three")
    assert not only_tone_words("Bookkeeper")  # doubled letters are not drawn out


def test_too_quiet() -> None:
    quiet = (np.ones(16000) * 3).astype("<i2").tobytes()  # about -80 dBFS
    speech_level = (np.sin(np.arange(16000) / 5) * 3000).astype("<i2").tobytes()
    assert too_quiet(quiet, min_dbfs=-70)
    assert not too_quiet(speech_level, min_dbfs=-70)
    assert too_quiet(b"", min_dbfs=-70)


def test_words_without_a_letter_are_left_out() -> None:
    """Whisper writes "//" on line noise after speech (tiny.en, seen on eval audio)."""
    text = "genuine regret. // //"
    assert voiced_words(text, (), voiced_s=3.0) == ([0, 1], None)


def test_the_text_is_cut_at_the_first_word_aligned_after_the_voiced_audio() -> None:
    spoken = [Word("deep", 0.2, 0.5), Word("regret.", 0.5, 1.1), Word("The", 1.7, 2.0),
              Word("first", 2.0, 2.3), Word("time", 2.3, 2.5)]
    text = " ".join(w.word for w in spoken)
    assert voiced_words(text, spoken, voiced_s=1.2) == ([0, 1], "unvoiced")
    # Within the margin (word times are rough), a word is kept.
    assert voiced_words(text, spoken, voiced_s=1.95) == ([0, 1, 2, 3, 4], None)


def test_no_more_words_than_a_fast_speaker_says() -> None:
    """A continuation invented after a sentence: 24 words where 3.2 s were voiced."""
    text = ("Harry gave his farewells with deep and genuine regret. The first time he was in "
            "the end of the year, he was in the end of it")
    keep, reason = voiced_words(text, (), voiced_s=3.2)
    assert reason == "too_many_words" and len(keep) == int(6.0 * 3.2) + 2
    # Natural speech keeps every word: 9 words in 3.2 s.
    assert voiced_words(" ".join(text.split()[:9]), (), voiced_s=3.2)[1] is None


def test_committed_words_always_stay() -> None:
    """Words already committed to clients are never taken back, even past the limits."""
    text = "one two three four five six seven"
    assert voiced_words(text, (), voiced_s=0.0, committed=5)[0] == [0, 1, 2, 3, 4]


def test_words_squeezed_into_the_end_of_the_audio_after_the_committed_ones_are_dropped() -> None:
    """Given every word as its prefix, whisper went on ("… that hovel. The") and the alignment
    put the invented words at the very end of the audio, with no length: they are dropped;
    a real last word, which starts well before the end of speech, stays."""
    said = [Word("in", 2.5, 2.62), Word("that", 2.62, 2.8), Word("hovel.", 2.8, 3.1)]
    invented = [Word("The", 3.28, 3.28), Word("first", 3.28, 3.28)]
    text = " ".join(w.word for w in said + invented)
    assert voiced_words(text, said + invented, voiced_s=3.15, committed=3) == ([0, 1, 2],
                                                                               "unvoiced")
    # Not committed yet, "hovel." (from 2.8 s, 0.3 s long) is kept all the same.
    assert voiced_words(text, said + invented, voiced_s=3.15) == ([0, 1, 2], "unvoiced")
    assert voiced_words(" ".join(w.word for w in said), said, voiced_s=3.15) == ([0, 1, 2],
                                                                                 None)
