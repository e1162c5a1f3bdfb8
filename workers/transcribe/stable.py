"""Interim stability by local agreement (pure).

While an utterance is open it is decoded again every so often. A word is *stable* once two
consecutive hypotheses agree on it and on every word before it (LocalAgreement-2, as in
whisper_streaming); the stable prefix only ever grows, so a client may show it as committed.
The final transcript of the utterance replaces all of it.
"""

from __future__ import annotations

import re

_PUNCT = re.compile(r"[^\w']+")


def _norm(word: str) -> str:
    return _PUNCT.sub("", word.lower())


def agreed_prefix(previous: list[str], current: list[str]) -> int:
    """How many leading words ``previous`` and ``current`` share (ignoring case and
    punctuation)."""
    count = 0
    for before, now in zip(previous, current, strict=False):
        if _norm(before) != _norm(now):
            break
        count += 1
    return count


class StablePrefix:
    """Tracks one open utterance's hypotheses and the committed (stable) words."""

    def __init__(self) -> None:
        self._previous: list[str] = []
        self.stable: list[str] = []
        self.revision = 0

    def update(self, text: str) -> tuple[str, str]:
        """Take a new hypothesis; return (stable prefix, whole hypothesis to show).

        The stable prefix never shrinks or changes: a later hypothesis that disagrees with it
        is shown with the stable words in front, so what a client saw as stable stays true.
        """
        words = text.split()
        agreed = agreed_prefix(self._previous, words)
        if agreed > len(self.stable) and agreed_prefix(self.stable, words) == len(self.stable):
            # Committed words keep the spelling a client was shown (the previous hypothesis),
            # even if a later hypothesis punctuates them differently.
            self.stable = self.stable + self._previous[len(self.stable):agreed]
        self._previous = words
        self.revision += 1
        tail = words[agreed_prefix(self.stable, words):] if words else []
        return " ".join(self.stable), " ".join(self.stable + tail)
