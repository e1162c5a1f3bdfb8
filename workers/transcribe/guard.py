"""The hallucination guard: decides what whisper output, or input, must never become words.

Two gates, each counted by reason in ``callscribe_transcribe_suppressed_total``:

* before decoding, :func:`too_quiet` skips audio whose level is below ``min_dbfs`` (line
  hiss and silence that the VAD let through): whisper invents text on near-silence;
* after decoding, :func:`guard` drops segments with a high no-speech probability and a low
  average log-probability, repetitive text (high compression ratio), and known phantom phrases
  ("thank you.", "thanks for watching!") when whisper is unsure of them, and texts made only
  of tone words ("beep beep beep") always.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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
