"""Interim stability by local agreement (pure).

While an utterance is open it is decoded again every so often, each time after the words
already committed (the decoder's forced prefix), so every hypothesis begins with them. A word is
*stable* (committed) once two consecutive hypotheses agree on it, spelling and punctuation
included, and on every word before it (LocalAgreement-2, as in whisper_streaming): punctuation a
later hypothesis would move ("thank you." then "thank you for") is never frozen into the text.
A decode made in a pause of the speaker commits its words but the last at once
(:meth:`StablePrefix.commit`). The stable prefix only ever grows, and the final of the utterance
begins with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCT = re.compile(r"[^\w']+")
_SENTENCE_END = (".", "?", "!")


def normalize_word(word: str) -> str:
    """``word`` lower-cased, without punctuation (apostrophes kept): how two spellings of one
    spoken word are compared."""
    return _PUNCT.sub("", word.lower())


def agreed_prefix(previous: Sequence[str], current: Sequence[str], *, exact: bool = True,
                  ) -> int:
    """How many leading words ``previous`` and ``current`` share (``exact=False``: ignoring
    case and punctuation)."""
    count = 0
    for before, now in zip(previous, current, strict=False):
        if (before != now) if exact else (normalize_word(before) != normalize_word(now)):
            break
        count += 1
    return count


def ends_sentence(word: str) -> bool:
    return word.endswith(_SENTENCE_END) and any(c.isalnum() for c in word)


class StablePrefix:
    """One open utterance's hypotheses and its committed (stable) words.

    ``committed``: words to hold as stable from the start. ``shown``: how many stable words
    clients were sent.
    """

    def __init__(self, committed: Sequence[str] = (), *, start_ms: int = 0) -> None:
        self.stable: list[str] = list(committed)
        self._previous: list[str] | None = None
        self.words: list[str] = list(committed)  # the latest hypothesis
        self.revision = 0
        self.shown = 0
        self.start_ms = start_ms

    @property
    def prefix(self) -> str:
        """The committed words, as the decoder's forced prefix."""
        return " ".join(self.stable)

    def update(self, text: str) -> tuple[str, str]:
        """Take a new hypothesis; return (stable prefix, whole hypothesis to show).

        The stable prefix never shrinks or changes: a hypothesis that does not begin with it
        (decoded without it) is shown with the stable words in front."""
        words = text.split()
        held = len(self.stable)
        if words[:held] != self.stable:
            words = self.stable + words[agreed_prefix(self.stable, words, exact=False):]
        if self._previous is not None:
            agreed = agreed_prefix(self._previous, words)
            if agreed > held:
                self.stable = words[:agreed]
        self._previous = self.words = words
        self.revision += 1
        return " ".join(self.stable), " ".join(words)

    def commit(self, count: int) -> None:
        """Hold the first ``count`` words of the latest hypothesis as stable without waiting
        for a second one to agree: the speaker paused after them, and a decode of audio that
        ends in a pause is whisper's settled reading of it (the last word, and the full stop
        whisper puts where the audio stops, are left to agreement)."""
        if count > len(self.stable):
            self.stable = self.words[:count]

    @property
    def close_pending(self) -> bool:
        """The last stable word ends a sentence and the latest hypothesis goes on after it:
        one more hypothesis that agrees on the next word closes the sentence
        (:meth:`sentence_end`)."""
        return (bool(self.stable) and ends_sentence(self.stable[-1])
                and len(self.words) > len(self.stable))

    def sentence_end(self) -> int | None:
        """Index of the last stable word that ends a sentence and that may close the
        utterance there: the word after it is stable too (whisper ends every hypothesis with a
        full stop where the audio stops, so a sentence end agreed at the end of two hypotheses
        proves nothing), and no stable word after it was shown yet. None if there is none."""
        for index in range(len(self.stable) - 2, max(self.shown - 1, 0) - 1, -1):
            if ends_sentence(self.stable[index]):
                return index
        return None
