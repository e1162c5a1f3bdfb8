"""Text helpers shared by the assist modules: words, light stems, stop words, sentences.

Everything here is deterministic and language-specific to English, which is what the
transcriber produces by default. The stemmer is deliberately light (a handful of suffix rules):
it only has to make "cancelling", "cancellation" and "cancel" meet, not be a linguist.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")

#: Common English function words; negations ("not", "no", "never") are kept out on purpose.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i i'd i'll i'm i've if in
into is it it's its itself just let's me more most my myself nor of off on once only or other
ought our ours ourselves out over own same she should so some such than that that's the their
theirs them themselves then there there's these they they'd they'll they're they've this those
through to too under until up very was we we'd we'll we're we've were what what's when where
which while who whom why with would you you'd you'll you're you've your yours yourself
yourselves okay ok yes yeah uh um hmm oh well please thank thanks hi hello also get got
going want wanted like just really know think
will won't can can't could couldn't would wouldn't shall may might must need needs
sure fine good great perfect nice lovely right alright sorry hey bye goodbye
now today tonight tomorrow yesterday next last first second time times ago soon
take took make made give gave put see saw say said tell told ask asked come came go
thing things something anything nothing everything way lot lots bit much many
one two three four five six seven eight nine ten
actually basically honestly literally maybe probably still even already ever
""".split())

#: Words that negate what follows; kept in :func:`content_stems` (intents need them) and
#: dropped from knowledge-base queries by :func:`query_stems`.
NEGATIONS = frozenset({"not", "no", "never", "don't", "doesn't", "didn't", "isn't", "aren't",
                       "wasn't", "nobody", "nothing", "none"})

_SUFFIXES = (
    ("ational", "ate"), ("ations", ""), ("ation", ""), ("ness", ""), ("ments", ""),
    ("ment", ""), ("ingly", ""), ("ings", ""), ("ing", ""), ("edly", ""), ("ies", "y"),
    ("ied", "y"), ("ed", ""), ("ly", ""), ("es", ""), ("s", ""),
)


def words(text: str) -> list[str]:
    """Lower-case words and numbers of ``text``, apostrophes inside words kept (``don't``)."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def stem(word: str) -> str:
    """A light English stem: ``cancelling``/``cancellation``/``cancels`` → ``cancel``,
    ``charged``/``charge`` → ``charg``, ``bills``/``billing`` → ``bil``."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                continue
            if suffix == "es" and not word.endswith(("ches", "shes", "xes", "sses", "zes")):
                continue
            word = word[: len(word) - len(suffix)] + replacement
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeious":
        word = word[:-1]
    return word


def stems(text: str) -> list[str]:
    """Every word of ``text`` stemmed, stop words included (for phrase matching)."""
    return [stem(w) for w in words(text)]


def content_stems(text: str) -> list[str]:
    """Stems of the words of ``text`` that are not stop words, numbers or single letters (for
    similarity and search)."""
    return [stem(w) for w in words(text)
            if w not in STOPWORDS and len(w) > 1 and not w.isdigit()]


def contains_sequence(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    """Whether ``needle`` occurs in ``haystack`` as a contiguous run."""
    n = len(needle)
    if n == 0:
        return False
    first = needle[0]
    return any(haystack[i] == first and list(haystack[i:i + n]) == list(needle)
               for i in range(len(haystack) - n + 1))


#: "don't want to cancel", "not going to leave": the verb a caller says they will not do.
_NEGATED_INTENT = re.compile(
    r"\b(?:don't|do not|doesn't|does not|didn't|not going to|not planning to|no need to|"
    r"never)\s+(?:(?:want|need|plan|intend|mean)\s+to\s+)?(\w+)", re.IGNORECASE)


def query_stems(text: str) -> list[str]:
    """The terms of a search query: :func:`content_stems` without negation words and without
    the verb of a negated intent ("I don't want to *cancel*")."""
    text = _NEGATED_INTENT.sub(" ", text.replace("\u2019", "'"))
    return [stem(w) for w in words(text) if w not in STOPWORDS and w not in NEGATIONS
            and len(w) > 1 and not w.isdigit()]


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` and ``?``; empty pieces dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def bm25_idf(document_frequency: int, documents: int) -> float:
    """BM25's inverse document frequency, always positive."""
    return math.log(1 + (documents - document_frequency + 0.5) / (document_frequency + 0.5))


class Bm25:
    """Okapi BM25 over tokenised documents (``k1`` term saturation, ``b`` length norm)."""

    def __init__(self, documents: Sequence[Sequence[str]], *, k1: float = 1.2,
                 b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.frequencies = [Counter(d) for d in documents]
        self.lengths = [len(d) for d in documents]
        self.average = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        df: Counter[str] = Counter()
        for counts in self.frequencies:
            df.update(counts.keys())
        self.idf = {t: bm25_idf(n, len(documents)) for t, n in df.items()}

    def score(self, query: Iterable[str], index: int) -> float:
        """BM25 score of document ``index`` for ``query`` (repeated query terms count once)."""
        counts, length = self.frequencies[index], self.lengths[index]
        norm = self.k1 * (1 - self.b + self.b * length / self.average) if self.average else 0
        total = 0.0
        for term in set(query):
            tf = counts.get(term, 0)
            if tf:
                total += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
        return total

    def scores(self, query: Sequence[str]) -> list[float]:
        return [self.score(query, i) for i in range(len(self.frequencies))]
