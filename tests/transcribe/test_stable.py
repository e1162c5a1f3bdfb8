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


def test_punctuation_is_committed_only_once_two_hypotheses_agree_on_it() -> None:
    """The bug the exact match fixes: "thank you." frozen, then "thank you. for calling"."""
    prefix = StablePrefix()
    prefix.update("Thank you.")
    stable, text = prefix.update("Thank you for calling")
    assert (stable, text) == ("Thank", "Thank you for calling")
    stable, text = prefix.update("Thank you for calling customer")
    assert (stable, text) == ("Thank you for calling", "Thank you for calling customer")


def test_a_hypothesis_decoded_without_the_committed_words_keeps_them_in_front() -> None:
    prefix = StablePrefix(["Oh", "no."])
    stable, text = prefix.update("oh no I am")
    assert (stable, text) == ("Oh no.", "Oh no. I am")
    assert prefix.prefix == "Oh no."


def test_a_disagreeing_hypothesis_never_rewrites_the_stable_prefix() -> None:
    prefix = StablePrefix()
    prefix.update("let me check your account")
    prefix.update("let me check your account for")
    stable, text = prefix.update("let me catch your account for you")
    assert stable == "let me check your account"
    assert text.startswith(stable)


def test_agreement_is_exact_unless_asked_otherwise() -> None:
    assert agreed_prefix(["Hello,", "world"], ["hello", "World."]) == 0
    assert agreed_prefix(["Hello,", "world"], ["hello", "World."], exact=False) == 2
    assert agreed_prefix(["a", "b"], ["a", "c"]) == 1


def test_a_sentence_may_close_at_its_last_stable_end_not_before_what_was_shown() -> None:
    prefix = StablePrefix()
    prefix.update("Hello. Thank you for")
    prefix.update("Hello. Thank you for calling.")
    assert prefix.stable == ["Hello.", "Thank", "you", "for"]
    assert prefix.sentence_end() == 0  # "Hello." is committed, and so is the word after it
    prefix.shown = 4  # a client saw all four as stable: closing after "Hello." would break it
    assert prefix.sentence_end() is None
    prefix.update("Hello. Thank you for calling. How can")
    prefix.update("Hello. Thank you for calling. How can I")
    assert prefix.sentence_end() == 4  # "calling." is new, and "How" after it is stable


def test_a_full_stop_where_the_audio_stopped_closes_nothing() -> None:
    prefix = StablePrefix()
    prefix.update("I tried to turn it off.")
    prefix.update("I tried to turn it off. And")  # "off." agreed, but only ever last
    assert prefix.stable[-1] == "off."
    assert prefix.sentence_end() is None
    prefix.update("I tried to turn it off and on.")
    assert prefix.sentence_end() is None


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d."]), max_size=6), max_size=8))
def test_stable_prefix_only_grows(hypotheses: list[list[str]]) -> None:
    prefix = StablePrefix()
    previous = ""
    for words in hypotheses:
        stable, text = prefix.update(" ".join(words))
        assert stable.startswith(previous)
        assert text.startswith(stable)
        previous = stable


def test_a_pause_commits_all_but_the_last_word_of_one_hypothesis() -> None:
    stable = StablePrefix()
    stable.update("my account number is")
    stable.update("my account number is 4567.")
    assert stable.prefix == "my account number is"
    stable.commit(len(stable.words) - 1)  # nothing more to hold: 4567. is the last word
    assert stable.prefix == "my account number is"
    stable.update("my account number is 4567. It looks like now")
    stable.commit(len(stable.words) - 1)
    assert stable.prefix == "my account number is 4567. It looks like"
    stable.commit(2)  # never shrinks
    assert stable.prefix == "my account number is 4567. It looks like"


def test_a_close_is_pending_once_a_stable_sentence_end_has_words_after_it() -> None:
    prefix = StablePrefix()
    prefix.update("Hello.")
    prefix.update("Hello. Thank")
    assert prefix.stable == ["Hello."] and prefix.close_pending  # "Thank" agreed once more
    prefix.update("Hello. Thank you")
    assert prefix.sentence_end() == 0 and not prefix.close_pending  # it closes now
    other = StablePrefix()
    other.update("I tried it.")
    other.update("I tried it.")
    assert not other.close_pending  # a full stop where the audio stops: nothing after it
