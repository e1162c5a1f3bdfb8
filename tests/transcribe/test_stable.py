"""LocalAgreement stability (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.transcribe.stable import StablePrefix, agreed_prefix


def test_words_become_stable_once_two_hypotheses_agree() -> None:
    prefix = StablePrefix()
    assert prefix.update("my internet") == ("", "my internet")
    assert prefix.update("my internet is not") == ("my internet", "my internet is not")
    assert prefix.update("my internet is not working") == ("my internet is not",
                                                          "my internet is not working")
    assert prefix.revision == 3


def test_stable_words_keep_their_first_spelling() -> None:
    prefix = StablePrefix()
    prefix.update("Oh no.")
    stable, text = prefix.update("Oh no, I am")
    assert stable == "Oh no."
    assert text == "Oh no. I am"


def test_a_disagreeing_hypothesis_never_rewrites_the_stable_prefix() -> None:
    prefix = StablePrefix()
    prefix.update("let me check your account")
    prefix.update("let me check your account for")
    stable, text = prefix.update("let me catch your account for you")
    assert stable == "let me check your account"
    assert text.startswith(stable)


def test_agreement_ignores_case_and_punctuation() -> None:
    assert agreed_prefix(["Hello,", "world"], ["hello", "World."]) == 2
    assert agreed_prefix(["a", "b"], ["a", "c"]) == 1


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d."]), max_size=6), max_size=8))
def test_stable_prefix_only_grows(hypotheses: list[list[str]]) -> None:
    prefix = StablePrefix()
    previous = ""
    for words in hypotheses:
        stable, text = prefix.update(" ".join(words))
        assert stable.startswith(previous)
        assert text.startswith(stable)
        previous = stable
