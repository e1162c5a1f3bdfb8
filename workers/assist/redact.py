"""PII/PCI redaction of transcript text: typed placeholders for card numbers, CVVs, expiry
dates, SSNs, e-mail addresses and phone numbers. Pure: text and per-call state in, text out.

What is found, and when (the table in ``docs/assist.md`` has examples of each):

``[CARD]``
    13-19 digits, written (``4539 1488 0343 6467``, ``4539-1488-...``, ``4,539,148...``) or
    spoken (``four five three nine ...``, ``double four``, ``forty five``), whose first digit is
    2-6 (the card networks) and that pass the Luhn check. A card followed in the same number by
    a CVV or an expiry date is found too. Numbers that fail Luhn ("near misses") are left alone.
``[CVV]`` / ``[EXPIRY]``
    3-4 digits (or a month name and a year) within the next four utterances of the speaker
    after a card number, or after an agent question about the security code or the expiry date
    when a card was talked about. 4 digits that start with a month are an expiry, unless the
    card is an Amex or a security code was asked for.
``[SSN]``
    ``123-45-6789`` (valid area, group and serial), or 9 digits when a social security number is
    being talked about.
``[EMAIL]``
    ``name@example.com``, and spoken ``name dot surname at example dot com``.
``[PHONE]``
    ``+`` and 8-15 digits, ``(508) 308-4809``, any 10-digit North American number or 11 starting
    with 1, and 7-15 digits when a phone number is being talked about.

**Numbers split across utterances.** People pause while reading a card number, and the
transcriber cuts an utterance at every pause longer than its end-of-speech silence. The
:class:`RedactionState` of a call keeps, per speaker, the digits at the end of their last
utterance. When the speaker's next utterance starts with digits, the two are checked together,
and the second part is redacted if the whole is a card (or SSN or phone number). Because the
first part was already published, a number at the very end of an utterance is redacted
*provisionally* whenever a card, SSN or phone number is being talked about ("what is the card
number?"): over-redaction is the price of never publishing half a card number.

**Interim transcripts** are redacted with the same state (read-only), and in addition every
other number of two or more digits (or one at the end) is replaced: by the placeholder of the
card, SSN or phone number being talked about, else by ``[NUMBER]``. An interim's number may
still grow into one that the final transcript redacts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from workers.assist.numbers import GAP, NumberRun, find_numbers
from workers.entities import ENTITIES, parse_entities

#: Placeholder for numbers withheld from interim transcripts only.
INTERIM_NUMBER = "NUMBER"

_AT_END = re.compile(r"[\s.,!?;:\"')\]]*")
_MONTH = re.compile(
    r"\b(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b(?:\s+of)?[\s,]*$",
    re.IGNORECASE)

_CONTEXT = {
    "CARD": re.compile(r"\b(cards?|credit|debit|visa|master ?card|amex|american express|"
                       r"discover|long number)\b", re.I),
    "CVV": re.compile(r"\b(security code|cvv|cvc|csc|cid|verification code|three digits?|"
                      r"3 digits?|back of the card)\b", re.I),
    "EXPIRY": re.compile(r"\b(expir\w*|exp date|valid (thru|through|until)|"
                         r"good (thru|through))\b", re.I),
    "SSN": re.compile(r"\b(social|ssn|social security|tax id)\b", re.I),
    "PHONE": re.compile(r"\b(phone|cell|mobile|telephone|call me|reach me|call ?back|"
                        r"landline|text me|contact number)\b", re.I),
    "EMAIL": re.compile(r"(e-?mail|@)", re.I),
}
#: Words right before a number that ask for the security code (after a card only).
_NEAR_CVV = re.compile(r"\b(code|cvv|cvc|csc|security|back)\b", re.I)
_EMAIL_WRITTEN = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_TLD = r"(?:com|net|org|edu|gov|io|co|uk|us|ca|de|fr|au|info|biz|me|mail)"
_EMAIL_SPOKEN = re.compile(
    r"\b[A-Za-z0-9._%+-]+(?:\s+(?:dot|underscore|dash)\s+[A-Za-z0-9]+)*\s+at\s+"
    r"[A-Za-z0-9-]+(?:(?:\s*\.\s*|\s+dot\s+)[A-Za-z0-9-]+)*(?:\s*\.\s*|\s+dot\s+)" + _TLD
    + r"\b", re.IGNORECASE)
_EMAIL_PARTIAL = re.compile(r"\S*@\S*|\b[A-Za-z0-9._%+-]+\s+at\s+[A-Za-z0-9-]*"
                            r"(?:(?:\s*\.\s*|\s+dot\s*)[A-Za-z0-9-]*)*\s*$", re.IGNORECASE)
_SSN_WRITTEN = re.compile(r"\b(\d{3})[- ](\d{2})[- ](\d{4})\b")
_PHONE_WRITTEN = re.compile(r"(?<!\d)\(\d{3}\)\s*\d{3}[\s.-]?\d{4}(?!\d)")

#: Utterances after a card number during which its speaker's 3-4 digit numbers are CVV/expiry.
CARD_FOLLOW_UTTERANCES = 4
#: ... and the longest time (audio seconds) after the card that this holds.
CARD_FOLLOW_S = 60.0
#: Longest pause (audio seconds) between two utterances whose digits are joined.
SPLIT_GAP_S = 15.0
#: Longest number kept at the end of an utterance for the next one; a longer one is complete.
PENDING_MAX_DIGITS = 12


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check that every payment card number passes."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Span:
    """Characters ``start``-``end`` of the original text are an ``entity``."""

    start: int
    end: int
    entity: str


@dataclass(frozen=True, slots=True)
class Redaction:
    """The redacted text and the spans (in the original text) that were replaced."""

    text: str
    spans: tuple[Span, ...]

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(s.entity for s in self.spans)


@dataclass(slots=True)
class _Pending:
    digits: str
    run_starts: tuple[int, ...]  # where each number of the run began in ``digits``
    entity: str | None  # provisionally redacted as this, or None (shown)
    offset: float | None


@dataclass(slots=True)
class _Speaker:
    utterances: int = 0
    pending: _Pending | None = None
    card_at: int | None = None  # utterance count at the last card number
    card_offset: float | None = None
    amex: bool = False


@dataclass(slots=True)
class RedactionState:
    """What redaction remembers about one call: per speaker, the digits at the end of their
    last utterance and when they last gave a card number; the call's previous utterance (an
    agent's question gives the context of the answer)."""

    speakers: dict[str, _Speaker] = field(default_factory=dict)
    previous_text: str = ""

    def speaker(self, role: str) -> _Speaker:
        found = self.speakers.get(role)
        if found is None:
            found = self.speakers[role] = _Speaker()
        return found


# --------------------------------------------------------------------------- the redactor


class Redactor:
    """Finds sensitive spans and replaces those of the ``entities`` enabled with placeholders.

    Detection always runs for every entity (a CVV is only recognised after a card number, even
    when cards are not redacted); only the enabled ones are replaced.
    """

    def __init__(self, entities: Iterable[str] = ENTITIES) -> None:
        self.entities = frozenset(entities)
        unknown = self.entities - set(ENTITIES)
        if unknown:
            raise ValueError(f"unknown entities {sorted(unknown)}; expected {ENTITIES}")

    def redact(self, text: str, *, role: str = "other", state: RedactionState | None = None,
               offset: float | None = None, interim: bool = False) -> Redaction:
        """Redact one utterance of ``role``. A final utterance (``interim=False``) updates
        ``state``; an interim one only reads it."""
        if state is None:
            state = RedactionState()
        speaker = state.speaker(role)
        if interim:
            speaker = replace(speaker)
        else:
            speaker.utterances += 1
        found = _Finder(text, state.previous_text, speaker, offset, interim).run()
        if not interim:
            state.previous_text = text
        return self._apply(text, found)

    def _apply(self, text: str, spans: Sequence[Span]) -> Redaction:
        kept = [s for s in sorted(spans, key=lambda s: s.start)
                if s.entity in self.entities or s.entity == INTERIM_NUMBER]
        merged: list[Span] = []
        for span in kept:
            if merged and (span.start < merged[-1].end or (
                    span.entity == merged[-1].entity
                    and GAP.fullmatch(text, merged[-1].end, span.start))):
                last = merged[-1]
                merged[-1] = Span(last.start, max(last.end, span.end), last.entity)
            else:
                merged.append(span)
        pieces, position = [], 0
        for span in merged:
            pieces += [text[position:span.start], f"[{span.entity}]"]
            position = span.end
        pieces.append(text[position:])
        return Redaction("".join(pieces), tuple(merged))


class _Finder:
    """One utterance's detection pass (internal to :meth:`Redactor.redact`)."""

    def __init__(self, text: str, previous: str, speaker: _Speaker, offset: float | None,
                 interim: bool) -> None:
        self.text, self.previous, self.speaker = text, previous, speaker
        self.offset, self.interim = offset, interim
        self.spans: list[Span] = []

    def context(self, entity: str) -> bool:
        pattern = _CONTEXT[entity]
        return bool(pattern.search(self.text) or pattern.search(self.previous))

    def card_recent(self) -> bool:
        s = self.speaker
        if s.card_at is None or s.utterances - s.card_at > CARD_FOLLOW_UTTERANCES:
            return False
        return (self.offset is None or s.card_offset is None
                or self.offset - s.card_offset <= CARD_FOLLOW_S)

    def claimed(self, start: int, end: int) -> bool:
        return any(s.start < end and start < s.end for s in self.spans)

    def add(self, start: int, end: int, entity: str) -> None:
        self.spans.append(Span(start, end, entity))

    def run(self) -> list[Span]:
        for match in _EMAIL_WRITTEN.finditer(self.text):
            self.add(match.start(), match.end(), "EMAIL")
        for pattern, entity in ((_EMAIL_SPOKEN, "EMAIL"), (_PHONE_WRITTEN, "PHONE")):
            for match in pattern.finditer(self.text):
                if not self.claimed(match.start(), match.end()):
                    self.add(match.start(), match.end(), entity)
        runs = [r for r in find_numbers(self.text) if not self.claimed(r.start, r.end)]
        pending = self.speaker.pending
        if pending is not None and self.offset is not None and pending.offset is not None \
                and self.offset - pending.offset > SPLIT_GAP_S:
            pending = None
        classified: dict[int, str] = {}
        for index, number in enumerate(runs):
            joined = pending if index == 0 and self._starts_utterance(number) else None
            found = self._classify(number, joined)
            if found:
                classified[index] = found
        if self.interim:
            self._mask_interim(runs, classified)
        else:
            self._update_pending(runs, classified, pending)
        return self.spans

    # ---------------------------------------------------------------- classification

    def _classify(self, number: NumberRun, pending: _Pending | None) -> str | None:
        digits = number.digits
        card = _card_window(digits)
        if card is not None:
            self._card(number, card, amex=digits[:2] in ("34", "37"))
            return "CARD"
        if pending is not None:
            joined = self._joined(number, pending)
            if joined:
                return joined
        written_ssn = _SSN_WRITTEN.fullmatch(number.raw)
        if (written_ssn or (len(digits) == 9 and self.context("SSN"))) and _ssn_ok(digits):
            self.add(number.start, number.end, "SSN")
            return "SSN"
        if self._phone(number):
            self.add(number.start, number.end, "PHONE")
            return "PHONE"
        month = _MONTH.search(self.text, 0, number.start)
        if month and len(digits) in (2, 4) and (self.card_recent() or self.context("EXPIRY")):
            self.add(month.start(), number.end, "EXPIRY")
            return "EXPIRY"
        if self.card_recent() or (self.context("CARD") and (self.context("CVV")
                                                             or self.context("EXPIRY"))):
            entity = self._after_card(number)
            if entity:
                self.add(number.start, number.end, entity)
                return entity
        return None

    def _card(self, number: NumberRun, window: int, *, amex: bool) -> None:
        self.add(*number.char_span(0, window), "CARD")
        self.speaker.card_at, self.speaker.card_offset = self.speaker.utterances, self.offset
        self.speaker.amex = amex
        rest = number.digits[window:]
        if rest:
            tail = NumberRun(rest, number.spans[window:], number.spans[window][0], number.end,
                             self.text[number.spans[window][0]:number.end])
            for part, entity in _split_after_card(tail, amex=amex, cvv=self.context("CVV")):
                self.add(*tail.char_span(*part), entity)

    def _joined(self, number: NumberRun, pending: _Pending) -> str | None:
        """The entity that ``pending`` (the end of the speaker's last utterance) and
        ``number`` (the start of this one) form together, redacting this part of it."""
        digits = number.digits
        for start in pending.run_starts:
            head = pending.digits[start:]
            for keep in _card_ends(len(digits)):
                whole = head + digits[:keep]
                if _card_ok(whole, prefix=keep < len(digits)):
                    self.add(*number.char_span(0, keep), "CARD")
                    self.speaker.card_at = self.speaker.utterances
                    self.speaker.card_offset = self.offset
                    self.speaker.amex = whole[:2] in ("34", "37")
                    if keep < len(digits):
                        rest = NumberRun(digits[keep:], number.spans[keep:],
                                         number.spans[keep][0], number.end, "")
                        for part, entity in _split_after_card(
                                rest, amex=self.speaker.amex, cvv=self.context("CVV")):
                            self.add(*rest.char_span(*part), entity)
                    return "CARD"
            whole = head + digits
            if len(whole) == 9 and (pending.entity == "SSN" or self.context("SSN")) \
                    and _ssn_ok(whole):
                self.add(number.start, number.end, "SSN")
                return "SSN"
            if (pending.entity == "PHONE" or self.context("PHONE")) and _phone_digits_ok(
                    whole, context=True):
                self.add(number.start, number.end, "PHONE")
                return "PHONE"
        return None

    def _phone(self, number: NumberRun) -> bool:
        if self.text[max(0, number.start - 1):number.start] == "+" \
                and 8 <= len(number.digits) <= 15:
            self.add(number.start - 1, number.start, "PHONE")
            return True
        return _phone_digits_ok(number.digits, context=self.context("PHONE"))

    def _asked_for(self, number: NumberRun) -> str | None:
        """``CVV`` or ``EXPIRY`` if the words just before ``number`` ask for one (the nearer
        wins), else what the utterance or the previous one talks about, else ``None``."""
        before = self.text[max(0, number.start - 40):number.start]
        near = [(m.end(), e) for e, pattern in (("CVV", _NEAR_CVV), ("EXPIRY",
                                                                    _CONTEXT["EXPIRY"]))
                for m in pattern.finditer(before)]
        if near:
            return max(near)[1]
        cvv, expiry = self.context("CVV"), self.context("EXPIRY")
        return None if cvv == expiry else "CVV" if cvv else "EXPIRY"

    def _after_card(self, number: NumberRun) -> str | None:
        digits, raw = number.digits, number.raw
        asked = self._asked_for(number)
        if len(digits) == 3:
            return asked or "CVV"
        if len(digits) == 4:
            month_first = 1 <= int(digits[:2]) <= 12
            if "/" in raw or asked == "EXPIRY":
                return "EXPIRY"
            if self.speaker.amex or asked == "CVV" or not month_first:
                return "CVV"
            return "EXPIRY"
        if len(digits) == 6 and 1 <= int(digits[:2]) <= 12 and digits[2:4] == "20":
            return "EXPIRY"
        return None

    def _starts_utterance(self, number: NumberRun) -> bool:
        """Whether ``number`` comes first in the utterance (at most four words before it)."""
        return len(re.findall(r"[A-Za-z']+", self.text[:number.start])) <= 4

    # ---------------------------------------------------------------- across utterances

    def _update_pending(self, runs: list[NumberRun], classified: dict[int, str],
                        pending: _Pending | None) -> None:
        speaker = self.speaker
        speaker.pending = None
        if not runs:
            return
        index = len(runs) - 1
        last = runs[index]
        if not _AT_END.fullmatch(self.text, last.end):
            return
        if index in classified:
            return  # complete: nothing of it can still be cut
        continuing = pending is not None and index == 0 and self._starts_utterance(last)
        if continuing and pending is not None:
            digits = pending.digits + last.digits
            starts = (*pending.run_starts, len(pending.digits))
            entity = pending.entity
        else:
            digits, starts, entity = last.digits, (0,), None
        if len(digits) > PENDING_MAX_DIGITS:
            return
        if entity is None:
            entity = next((e for e in ("CARD", "SSN", "PHONE") if self.context(e)), None)
        if entity is not None:
            self.add(last.start, last.end, entity)
        speaker.pending = _Pending(digits, starts, entity, self.offset)

    def _mask_interim(self, runs: list[NumberRun], classified: dict[int, str]) -> None:
        for index, number in enumerate(runs):
            if index in classified:
                continue
            at_end = _AT_END.fullmatch(self.text, number.end) is not None
            if len(number.digits) >= 2 or at_end:
                entity = next((e for e in ("CARD", "SSN", "PHONE") if self.context(e)),
                              INTERIM_NUMBER)
                self.add(number.start, number.end, entity)
        if self.context("EMAIL") or "@" in self.text:
            for match in _EMAIL_PARTIAL.finditer(self.text):
                if not self.claimed(match.start(), match.end()):
                    self.add(match.start(), match.end(), "EMAIL")


# --------------------------------------------------------------------------- number checks


def _card_ok(digits: str, *, prefix: bool = False) -> bool:
    """A card number: 13-19 digits (15-19 when more digits follow it), network first digit
    2-6, Luhn."""
    shortest = 15 if prefix else 13
    return shortest <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits)


def _card_ends(length: int) -> list[int]:
    """Where a card may end in a number of ``length`` digits, most likely first: at its end,
    or before a CVV (3-4 digits), an expiry (4) or both (7-8). 16 digits (most networks) and
    15 (Amex) come before other lengths, so ``4539 1488 0343 6467 123`` is a card and a CVV
    even if all 19 digits happen to pass Luhn."""
    ends = {length} | {length - k for k in (3, 4, 7, 8) if length - k > 0}
    return sorted(ends, key=lambda e: (e != 16, e != 15, e != length, -e))


def _card_window(digits: str) -> int | None:
    """How many leading digits of a number are a card number, or ``None``."""
    for end in _card_ends(len(digits)):
        if _card_ok(digits[:end], prefix=end < len(digits)):
            return end
    return None


def _split_after_card(rest: NumberRun, *, amex: bool, cvv: bool
                      ) -> list[tuple[tuple[int, int], str]]:
    """The digits right after a card number in the same number: expiry and/or CVV."""
    d = rest.digits
    month_first = len(d) >= 4 and 1 <= int(d[:2]) <= 12
    if len(d) == 3 or (len(d) == 4 and (amex or cvv or not month_first)):
        return [((0, len(d)), "CVV")]
    if len(d) == 4:
        return [((0, 4), "EXPIRY")]
    if month_first:
        return [((0, 4), "EXPIRY"), ((4, len(d)), "CVV")]
    return [((0, len(d) - 4), "CVV"), ((len(d) - 4, len(d)), "EXPIRY")]


def _ssn_ok(digits: str) -> bool:
    return (len(digits) == 9 and digits[:3] not in ("000", "666") and digits[0] != "9"
            and digits[3:5] != "00" and digits[5:] != "0000")


def _phone_digits_ok(digits: str, *, context: bool) -> bool:
    if len(digits) == 10 and digits[0] in "23456789":
        return True
    if len(digits) == 11 and digits[0] == "1" and digits[1] in "23456789":
        return True
    return context and 7 <= len(digits) <= 15


# --------------------------------------------------------------------------- word timings


def redact_words(words: Sequence[dict[str, Any]], text: str,
                 redaction: Redaction) -> list[dict[str, Any]] | None:
    """Word timings of ``text`` with the redacted words replaced: the first word of each span
    becomes its placeholder (covering the span's words' times), the others are dropped.
    ``None`` when the words cannot be lined up with the text (drop them: never leak)."""
    if not redaction.spans:
        return [dict(w) for w in words]
    located: list[tuple[int, int]] = []
    position = 0
    for entry in words:
        token = str(entry.get("word", "")).strip()
        at = text.find(token, position) if token else position
        if at < 0:
            return None
        located.append((at, at + len(token)))
        position = at + len(token)
    out: list[dict[str, Any]] = []
    open_span: Span | None = None
    for entry, (start, end) in zip(words, located, strict=True):
        span = next((s for s in redaction.spans if s.start < end and start < s.end), None)
        if span is None:
            out.append(dict(entry))
            open_span = None
        elif span is open_span:
            if "end" in entry:
                out[-1]["end"] = entry["end"]
        else:
            placeholder = {"word": f" [{span.entity}]"}
            placeholder.update({k: entry[k] for k in ("start", "end") if k in entry})
            out.append(placeholder)
            open_span = span
    return out


__all__ = [
    "ENTITIES",
    "INTERIM_NUMBER",
    "NumberRun",
    "Redaction",
    "RedactionState",
    "Redactor",
    "Span",
    "find_numbers",
    "luhn_ok",
    "parse_entities",
    "redact_words",
]
