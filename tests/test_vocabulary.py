"""The custom vocabulary's pure parts: the file format and its limits, a call's terms from
each provider's start metadata, and the token bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from workers.vocabulary import (
    MAX_CALL_TERMS,
    MAX_TERM_CHARS,
    VocabularyError,
    bound_terms,
    call_vocabulary,
    load_vocabulary,
    parse_vocabulary,
    prompt_text,
)


def test_one_term_a_line_comments_and_blanks_ignored() -> None:
    text = ("# products\n\nZentrix Plus\n   Quorvo  \n  # an indented comment\n"
            "FlexiMax   300\nquorvo\nC#\n")
    assert parse_vocabulary(text) == ("Zentrix Plus", "Quorvo", "FlexiMax 300", "C#")


def test_the_committed_terms_file_parses() -> None:
    terms = load_vocabulary(FIXTURES / "vocabulary" / "terms.txt")
    assert terms[:3] == ("Zentrix Plus", "Quorvo", "FlexiMax 300")
    assert len(terms) == 8


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n  # here\n"])
def test_an_empty_file_is_no_vocabulary(text: str, tmp_path: Path) -> None:
    path = tmp_path / "terms.txt"
    path.write_text(text)
    assert load_vocabulary(path) == ()
    assert load_vocabulary(None) == load_vocabulary("") == ()
    assert prompt_text(()) == ""


def test_a_term_too_long_names_its_line() -> None:
    with pytest.raises(VocabularyError, match=f"line 2: a term of {MAX_TERM_CHARS + 1} char"):
        parse_vocabulary("Quorvo\n" + "x" * (MAX_TERM_CHARS + 1) + "\n", source="v.txt")


def test_an_unreadable_file_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="readable UTF-8"):
        load_vocabulary(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(VocabularyError, match="readable UTF-8"):
        load_vocabulary(tmp_path / "latin1.txt")


@pytest.mark.parametrize(("metadata", "terms"), [
    # jambonz (metadata merged at the top level), Vonage headers
    ({"callSid": "c1", "vocabulary": ["Zentrix Plus", "Quorvo"]}, ("Zentrix Plus", "Quorvo")),
    ({"Vocabulary": "Zentrix Plus, Quorvo"}, ("Zentrix Plus", "Quorvo")),
    # Twilio <Parameter> elements
    ({"customParameters": {"callscribeVocabulary": "Zentrix Plus;Quorvo"}},
     ("Zentrix Plus", "Quorvo")),
    # Telnyx custom_parameters
    ({"custom_parameters": {"vocabulary": "FlexiMax 300"}}, ("FlexiMax 300",)),
    # Plivo extra_headers (pairs split on , or ;: terms separated by |)
    ({"extraHeaders": {"vocabulary": "Zentrix Plus|Quorvo"}}, ("Zentrix Plus", "Quorvo")),
    # Genesys AudioHook customConfig
    ({"customConfig": {"vocabulary": ["Quorvo", "quorvo", " "]}}, ("Quorvo",)),
    ({"customParameters": {"other": "x"}}, ()),
    ({"vocabulary": 42}, ()),
    ({}, ()),
])
def test_a_calls_terms_come_from_its_providers_metadata(metadata: dict[str, Any],
                                                       terms: tuple[str, ...]) -> None:
    assert call_vocabulary(metadata) == terms


def test_a_call_brings_a_bounded_list() -> None:
    many = [f"Term{i}" for i in range(MAX_CALL_TERMS + 10)] + ["x" * (MAX_TERM_CHARS + 1)]
    terms = call_vocabulary({"vocabulary": many})
    assert terms == tuple(many[:MAX_CALL_TERMS])


def test_the_bound_drops_whole_terms_from_the_front() -> None:
    def count(text: str) -> int:
        return len(text.split())

    terms = ("Zentrix Plus", "Quorvo", "FlexiMax 300")
    assert bound_terms(terms, count, 10) == terms
    assert bound_terms(terms, count, 3) == ("Quorvo", "FlexiMax 300")
    assert bound_terms(terms, count, 1) == ()
