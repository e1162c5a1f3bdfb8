"""Redaction: the case table (written and spoken numbers, split across utterances, near
misses), properties over random card numbers, interims, word timings and configuration."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES
from workers.assist.redact import (
    ENTITIES,
    RedactionState,
    Redactor,
    find_numbers,
    luhn_ok,
    parse_entities,
    redact_words,
)

TABLE = yaml.safe_load((FIXTURES / "assist" / "redaction_cases.yaml").read_text())
CASES = [pytest.param(case, id=f"{group}: {case['name']}")
         for group, cases in TABLE.items() for case in cases]
WORDS = "zero one two three four five six seven eight nine".split()


def redact_call(said: list[list[str]], redactor: Redactor | None = None) -> list[str]:
    redactor = redactor or Redactor()
    state = RedactionState()
    return [redactor.redact(text, role=role, state=state, offset=4.0 * i).text
            for i, (role, text) in enumerate(said)]


def card_numbers(text: str) -> list[str]:
    """Every 13-19 digit window of the digits in ``text`` that passes Luhn and starts 2-6."""
    digits = "".join(c for c in text if c.isdigit())
    return [digits[i:j] for i in range(len(digits)) for j in range(i + 13, min(i + 19, len(
        digits)) + 1) if digits[i] in "23456" and luhn_ok(digits[i:j])]


@pytest.mark.parametrize("case", CASES)
def test_redaction_table(case: dict[str, Any]) -> None:
    assert redact_call(case["said"]) == case["want"]


#: The test cards the table reads (see its header).
TEST_CARDS = ("4539148803436467", "5128304756290138", "4111111111111111", "378282246310005")


def test_no_card_number_survives_the_table() -> None:
    """Across every case, all the caller's output digits in a row never hold a test card."""
    for case in (c for cases in TABLE.values() for c in cases):
        out = redact_call(case["said"])
        digits = "".join(c for text in out for c in text if c.isdigit())
        assert not any(card in digits for card in TEST_CARDS), (case["name"], out)


def test_luhn() -> None:
    assert luhn_ok("4539148803436467") and luhn_ok("378282246310005")
    assert not luhn_ok("4539148803436468")


def test_spoken_numbers_are_read_as_digits() -> None:
    runs = find_numbers("it's forty five, oh nine, double four, triple 7, two hundred twelve "
                        "and nineteen-ninety")
    assert [r.digits for r in runs] == ["450944777212", "1990"]
    # each digit maps back to the characters that said it
    text = "card 4539 1488"
    (run,) = find_numbers(text)
    assert text[slice(*run.char_span(4, 8))] == "1488"
    # "oh" alone is an interjection, not a zero
    assert [r.digits for r in find_numbers("Oh, I see. One moment.")] == ["1"]


# --------------------------------------------------------------------------- properties


def luhn_complete(prefix: str) -> str:
    for last in "0123456789":
        if luhn_ok(prefix + last):
            return prefix + last
    raise AssertionError("unreachable")


cards = st.builds(lambda first, body: luhn_complete(first + body),
                  st.sampled_from("3456"), st.text("0123456789", min_size=14, max_size=14))


def spell(digits: str, style: str) -> str:
    groups = [digits[i:i + 4] for i in range(0, len(digits), 4)]
    if style == "grouped":
        return " ".join(groups)
    if style == "dashes":
        return "-".join(groups)
    if style == "spoken":
        return ", ".join(" ".join(WORDS[int(d)] for d in g) for g in groups)
    if style == "oh":
        return " ".join("oh" if d == "0" else WORDS[int(d)] for d in digits)
    return digits


STYLES = st.sampled_from(["grouped", "dashes", "spoken", "oh", "plain"])
PREFIXES = st.sampled_from(["", "My card number is ", "sure, it's ", "ok ", "the number is "])
SUFFIXES = st.sampled_from(["", ".", " thanks", ", that's it."])


@settings(max_examples=120, deadline=None)
@given(card=cards, style=STYLES, prefix=PREFIXES, suffix=SUFFIXES)
def test_any_card_in_any_format_is_redacted(card: str, style: str, prefix: str,
                                            suffix: str) -> None:
    out = Redactor().redact(prefix + spell(card, style) + suffix).text
    assert "[CARD]" in out
    assert not card_numbers(out), out


@settings(max_examples=80, deadline=None)
@given(card=cards, style=STYLES, cut=st.integers(1, 3))
def test_card_split_across_utterances_after_a_card_question(card: str, style: str,
                                                            cut: int) -> None:
    first, second = card[:4 * cut], card[4 * cut:]
    out = redact_call([["assistant", "What's the card number please?"],
                       ["other", spell(first, style)], ["other", spell(second, style)]])
    assert out[1:] == ["[CARD]", "[CARD]"]


@settings(max_examples=80, deadline=None)
@given(card=cards, style=st.sampled_from(["grouped", "spoken", "plain"]),
       wrong=st.integers(1, 9))
def test_near_misses_are_left_alone(card: str, style: str, wrong: int) -> None:
    broken = card[:-1] + str((int(card[-1]) + wrong) % 10)
    text = f"the reference is {spell(broken, style)} and that's all"
    assert Redactor().redact(text).text == text


# --------------------------------------------------------------------------- interims


def test_interim_never_shows_what_the_final_redacts() -> None:
    redactor, state = Redactor(), RedactionState()
    redactor.redact("Can I take the card number?", role="assistant", state=state)
    revisions = ["four five three nine", "four five three nine, one four eight eight",
                 "four five three nine, one four eight eight, zero three four three, six"]
    for text in revisions:
        out = redactor.redact(text, role="other", state=state, interim=True).text
        assert not any(w in out for w in WORDS), out
    final = "four five three nine, one four eight eight, zero three four three, six four six " \
            "seven"
    assert redactor.redact(final, role="other", state=state).text == "[CARD]"


def test_interim_masks_numbers_and_partial_email_without_changing_state() -> None:
    redactor, state = Redactor(), RedactionState()
    assert redactor.redact("my total is 45 dollars", state=state, interim=True).text == \
        "my total is [NUMBER] dollars"
    assert redactor.redact("my email is john.smith@gmai", state=state, interim=True).text == \
        "my email is [EMAIL]"
    assert redactor.redact("my total is 45 dollars", state=state).text == \
        "my total is 45 dollars"


# --------------------------------------------------------------------------- configuration


def test_only_enabled_entities_are_replaced() -> None:
    text = "4539 1488 0343 6467 123, john@example.com, 123-45-6789"
    assert Redactor({"EMAIL"}).redact(text).text == \
        "4539 1488 0343 6467 123, [EMAIL], 123-45-6789"
    # CVV still needs the card to be recognised even when cards are not redacted
    assert Redactor({"CVV"}).redact(text).text == \
        "4539 1488 0343 6467 [CVV], john@example.com, 123-45-6789"
    assert Redactor(()).redact(text).text == text


def test_parse_entities() -> None:
    assert parse_entities("all") == parse_entities("") == frozenset(ENTITIES)
    assert parse_entities("none") == frozenset()
    assert parse_entities(" card , Ssn") == {"CARD", "SSN"}
    with pytest.raises(ValueError, match="IBAN"):
        parse_entities("card,iban")


def test_word_timings_follow_the_redaction() -> None:
    text = "It is 4539 1488 0343 6467 thanks"
    words = [{"word": w, "start": i * 0.5, "end": i * 0.5 + 0.4}
             for i, w in enumerate([" It", " is", " 4539", " 1488", " 0343", " 6467", " thanks"])]
    redaction = Redactor().redact(text)
    out = redact_words(words, text, redaction)
    assert out == [words[0], words[1], {"word": " [CARD]", "start": 1.0, "end": 2.9}, words[6]]
    assert redact_words([{"word": " something else"}], text, redaction) is None
    assert not re.search(r"\d{4}", str(out))
