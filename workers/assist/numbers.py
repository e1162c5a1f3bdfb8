"""Numbers in transcript text, written or spoken, with where each digit came from.

:func:`find_numbers` turns ``"my card is four five three nine, 1488"`` into one
:class:`NumberRun` with digits ``45391488`` and, for each digit, the characters that said it,
so a redactor can replace exactly those. Spoken forms: units (``oh``/``o``/``nought`` = 0),
teens, tens (``forty five`` = 45), ``double``/``triple``, ``X hundred [Y]``; digits and words
mix freely. Parts of one number are separated only by spaces, ``,``, ``.``, ``-`` or ``/``
(whisper writes ``4,539,148`` and ``4.5 3.9``). A lone ``oh`` is an interjection, not a zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_UNITS = {"zero": "0", "oh": "0", "o": "0", "nought": "0", "one": "1", "two": "2",
          "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
          "nine": "9"}
_TEENS = {"ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
          "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
          "nineteen": "19"}
_TENS = {"twenty": "2", "thirty": "3", "forty": "4", "fourty": "4", "fifty": "5", "sixty": "6",
         "seventy": "7", "eighty": "8", "ninety": "9"}
_REPEAT = {"double": 2, "triple": 3}
_ZEROS = frozenset({"zero", "oh", "o", "nought"})

_TOKEN = re.compile(r"\d+|[A-Za-z]+")
_JOIN = re.compile(r"[ \-]?")  # inside one spoken number: "twenty-seven", "double four"
GAP = re.compile(r"[\s,.\-/]*")  # between the parts of one number


@dataclass(frozen=True, slots=True)
class _Atom:
    digits: str
    spans: tuple[tuple[int, int], ...]  # one (start, end) per digit
    start: int
    end: int
    zero_word: bool = False  # a lone "oh"/"o": a number only next to other numbers


@dataclass(frozen=True, slots=True)
class NumberRun:
    """Consecutive written or spoken digits, only separators (space , . - /) between them."""

    digits: str
    spans: tuple[tuple[int, int], ...]  # character span in the text of each digit
    start: int
    end: int
    raw: str

    def char_span(self, first: int, last: int) -> tuple[int, int]:
        """Characters covering digits ``first`` to ``last - 1``."""
        return self.spans[first][0], self.spans[last - 1][1]


def _atoms(text: str) -> list[_Atom]:
    tokens = list(_TOKEN.finditer(text))
    out: list[_Atom] = []
    k = 0

    def joined(a: re.Match[str], b: re.Match[str]) -> bool:
        return _JOIN.fullmatch(text, a.end(), b.start()) is not None

    def word(i: int) -> str:
        return tokens[i].group().lower() if i < len(tokens) else ""

    def spoken(digits: str, start: int, end: int, **kw: Any) -> _Atom:
        return _Atom(digits, ((start, end),) * len(digits), start, end, **kw)

    while k < len(tokens):
        tok, w = tokens[k], word(k)
        nxt = tokens[k + 1] if k + 1 < len(tokens) else None
        if tok.group().isdigit():
            out.append(_Atom(tok.group(), tuple((tok.start() + i, tok.start() + i + 1)
                                                for i in range(len(tok.group()))),
                             tok.start(), tok.end()))
        elif w in _REPEAT and nxt and joined(tok, nxt) and (
                word(k + 1) in _UNITS or (nxt.group().isdigit() and len(nxt.group()) == 1)):
            unit = _UNITS.get(word(k + 1), nxt.group())
            out.append(spoken(unit * _REPEAT[w], tok.start(), nxt.end()))
            k += 1
        elif w in _TENS:
            if nxt and joined(tok, nxt) and word(k + 1) in _UNITS and word(k + 1) not in _ZEROS:
                out.append(spoken(_TENS[w] + _UNITS[word(k + 1)], tok.start(), nxt.end()))
                k += 1
            else:
                out.append(spoken(_TENS[w] + "0", tok.start(), tok.end()))
        elif w in _TEENS:
            out.append(spoken(_TEENS[w], tok.start(), tok.end()))
        elif w in _UNITS:
            if nxt and joined(tok, nxt) and word(k + 1) == "hundred":
                digits, end, k = _hundred(tokens, k, _UNITS[w], joined, word)
                out.append(spoken(digits, tok.start(), end))
            else:
                out.append(spoken(_UNITS[w], tok.start(), tok.end(), zero_word=w in _ZEROS))
        k += 1
    return out


def _hundred(tokens: list[re.Match[str]], k: int, unit: str, joined: Any,
             word: Any) -> tuple[str, int, int]:
    """``unit hundred [tens [unit] | teen | unit]`` from token ``k``: digits, end, last index."""
    h = k + 1
    after = tokens[h + 1] if h + 1 < len(tokens) and joined(tokens[h], tokens[h + 1]) else None
    w = word(h + 1) if after else ""
    if w in _TEENS:
        return unit + _TEENS[w], tokens[h + 1].end(), h + 1
    if w in _TENS:
        unit_after = (h + 2 < len(tokens) and joined(tokens[h + 1], tokens[h + 2])
                      and word(h + 2) in _UNITS and word(h + 2) not in _ZEROS)
        if unit_after:
            return unit + _TENS[w] + _UNITS[word(h + 2)], tokens[h + 2].end(), h + 2
        return unit + _TENS[w] + "0", tokens[h + 1].end(), h + 1
    if w in _UNITS and w not in _ZEROS:
        return unit + "0" + _UNITS[w], tokens[h + 1].end(), h + 1
    return unit + "00", tokens[h].end(), h


def find_numbers(text: str) -> list[NumberRun]:
    """Every number in ``text``, written or spoken, with each digit's character span."""
    runs: list[list[_Atom]] = []
    for atom in _atoms(text):
        if runs and GAP.fullmatch(text, runs[-1][-1].end, atom.start):
            runs[-1].append(atom)
        else:
            runs.append([atom])
    out = []
    for atoms in runs:
        if all(a.zero_word for a in atoms):
            continue  # "oh" on its own is an interjection
        spans = tuple(s for a in atoms for s in a.spans)
        out.append(NumberRun("".join(a.digits for a in atoms), spans, atoms[0].start,
                             atoms[-1].end, text[atoms[0].start:atoms[-1].end]))
    return out



__all__ = ["GAP", "NumberRun", "find_numbers"]
