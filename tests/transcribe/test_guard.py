"""The hallucination guard on whisper segments shaped as faster-whisper returns them: each
reason, and real words kept."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from workers.transcribe.guard import guard, only_tone_words, too_quiet


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
