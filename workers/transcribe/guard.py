"""The hallucination guard: decides what whisper output, or input, must never become words.

Two gates, each counted by reason in ``callscribe_transcribe_suppressed_total``:

* before decoding, :func:`too_quiet` skips audio whose level is below ``min_dbfs`` (line
  hiss and silence that the VAD let through): whisper invents text on near-silence;
* after decoding, :func:`guard` drops segments with a high no-speech probability and a low
  average log-probability, repetitive text (high compression ratio), and known phantom phrases
  ("thank you.", "thanks for watching!") when whisper is unsure of them, and texts made only
  of tone words ("beep beep beep") always;
* on a decoded text, :func:`voiced_words` keeps only words that speech can hold: no word
  without a letter or digit ("//", which whisper repeats on line noise), none that the alignment
  places after the last voiced frame, and no more than a fast speaker says in the voiced audio
  (a continuation whisper invents after a sentence, "… genuine regret. The first time he was
  in the end of the year, he was in the end", held 15 words where no speech was).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from workers import metrics

#: Phrases whisper emits on non-speech (line noise, hold music); dropped when whisper is unsure.
PHANTOM_PHRASES = frozenset({
    "thank you.", "thank you", "thank you!", "thanks for watching!", "thank you for watching.",
    "you",
    "bye.", "bye", "please subscribe.", "so", "okay.", ".", "...", "oh", "uh", "hmm.",
    "beep.", "beep", "beep beep.", "music", "[music]", "(music)",
})


#: Words whisper writes for tones (ringback, busy, DTMF, beeps) and wordless singing: a text of
#: these alone is a phantom whatever whisper's confidence (on 8 kHz ringback it wrote "beep beep
#: beep"; a caller's "Ah." alone carries nothing an agent needs).
TONE_WORDS = frozenset({"beep", "beeps", "boop", "bip", "ring", "ringing", "ding", "dong",
                        "buzz", "buzzing", "tone", "music",
                        # and for wordless singing ("A" on 8 kHz choir music): sounds, no words
                        "a", "ah", "aah", "ahh", "ooh", "oooh", "la", "na",
                        # ringback in a 15 s window (16 and 8 kHz): "Be Be Be", "Beeeeeeeee"
                        "be", "bee"})


#: A word drawn out as no speaker writes it ("Beeeeeeeee", "Aaaaah"): a tone or a held note.
_DRAWN_OUT = re.compile(r"[a-z]*([a-z])\1{3,}[a-z]*")


def only_tone_words(text: str) -> bool:
    words = re.findall(r"[a-z]+", text.lower())
    return bool(words) and all(w in TONE_WORDS or _DRAWN_OUT.fullmatch(w) for w in words)


def one_word_looped(text: str) -> bool:
    """One word four times or more and nothing else ("It'll... It'll... It'll... It'll..." on
    8 kHz choir music): too short for the compression ratio to catch."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return len(words) >= 4 and len(set(words)) == 1


#: Words a second that a fast speaker reaches (conversational English is 2.5-3.5); a text with
#: more than this many for its voiced audio, plus :data:`WORDS_SLACK`, ran on past the speech.
MAX_WORDS_PER_S = 6.0
WORDS_SLACK = 2
#: An aligned word that starts this long after the last voiced frame was said in no speech
#: (whisper's word times are rough by 0.1-0.2 s).
UNVOICED_MARGIN_S = 0.4
#: A word after the committed ones that the alignment squeezes into the end of the audio
#: (starting less than this before the last voiced frame, and shorter than
#: :data:`SQUEEZED_MAX_S`) was invented: on the evaluation set, every continuation whisper
#: made up after a prefix holding all the words started 0.02 s before to 0.13 s after the
#: voiced end and lasted 0-0.14 s (a word really said can only be that short and that late if
#: it is a clipped last syllable; the whole test suite's speech keeps every word).
SQUEEZED_BEFORE_END_S = 0.08
SQUEEZED_MAX_S = 0.2


class TimedWord(Protocol):
    """An aligned word, as :class:`workers.transcribe.asr.Word` is."""

    @property
    def start_s(self) -> float: ...

    @property
    def end_s(self) -> float: ...


def voiced_words(text: str, words: Sequence[TimedWord], *, voiced_s: float, committed: int = 0,
                 ) -> tuple[list[int], str | None]:
    """Which words of ``text`` (split on spaces) speech can hold, given ``voiced_s`` seconds of
    audio up to its last voiced frame and, when ``words`` are aligned one to one with the text,
    their times: the indices of the words kept, and why the text was cut (None if it was not).

    The first ``committed`` words (already committed to clients) are always kept. After them,
    a word with no letter or digit is left out, and the text is cut at the first word that
    starts after the voiced audio or is squeezed into its end (:data:`SQUEEZED_BEFORE_END_S`),
    or once it holds more words than :data:`MAX_WORDS_PER_S` allow. Counted by reason in
    ``callscribe_transcribe_suppressed_total``."""
    tokens = text.split()
    aligned = len(words) == len(tokens)
    limit = int(MAX_WORDS_PER_S * max(voiced_s, 0.0)) + WORDS_SLACK
    keep: list[int] = list(range(min(committed, len(tokens))))
    reason: str | None = None
    no_word = False
    for index in range(len(keep), len(tokens)):
        if aligned and (words[index].start_s > voiced_s + UNVOICED_MARGIN_S or (
                words[index].start_s >= voiced_s - SQUEEZED_BEFORE_END_S
                and words[index].end_s - words[index].start_s < SQUEEZED_MAX_S)):
            reason = "unvoiced"
            break
        if not any(c.isalnum() for c in tokens[index]):
            no_word = True
            continue
        if len(keep) >= limit:
            reason = "too_many_words"
            break
        keep.append(index)
    if no_word:
        metrics.TRANSCRIBE_SUPPRESSED.labels("no_word").inc()
    if reason is not None:
        metrics.TRANSCRIBE_SUPPRESSED.labels(reason).inc()
    return keep, reason


def level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 audio in dB relative to full scale (-inf for digital silence)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20 * float(np.log10(rms / 32768.0)) if rms > 0 else float("-inf")


def too_quiet(pcm: bytes, *, min_dbfs: float = -70.0) -> bool:
    """Whether ``pcm`` is too quiet to hold speech; counted when it is."""
    if level_dbfs(pcm) >= min_dbfs:
        return False
    metrics.TRANSCRIBE_SUPPRESSED.labels("too_quiet").inc()
    return True


def guard(segments: Iterable[Any], *, no_speech_threshold: float = 0.6,
          logprob_threshold: float = -1.0, compression_threshold: float = 2.4,
          ) -> tuple[list[Any], tuple[str, ...]]:
    """Drop segments whisper likely invented; return (kept, reasons for the dropped)."""
    kept: list[Any] = []
    reasons: list[str] = []
    for segment in segments:
        text = segment.text.strip()
        reason = None
        if not any(c.isalnum() for c in text):
            reason = "empty"  # nothing, or punctuation alone (" . . . ." on line hiss)
        elif (segment.no_speech_prob > no_speech_threshold
              and segment.avg_logprob < logprob_threshold):
            reason = "no_speech"
        elif segment.compression_ratio > compression_threshold or one_word_looped(text):
            reason = "repetitive"
        elif ((text.lower() in PHANTOM_PHRASES and segment.avg_logprob < -0.5)
              or only_tone_words(text)):
            reason = "phantom_phrase"
        if reason is None:
            kept.append(segment)
        else:
            reasons.append(reason)
            metrics.TRANSCRIBE_SUPPRESSED.labels(reason).inc()
    return kept, tuple(reasons)
