"""bench.vocabulary's scoring: term recall case and punctuation aside, false terms, WER."""

from __future__ import annotations

from bench.vocabulary import Item, plain, score

TERMS = ("Zentrix Plus", "Quorvo", "FlexiMax 300")


def test_terms_are_found_case_and_punctuation_aside() -> None:
    assert plain("Is the FlexiMax-300 bundle?") == " is the fleximax 300 bundle "
    assert plain("FlexiMax 300") in plain("is the fleximax 300, bundle")
    assert plain("Quorvo") not in plain("Quorvos")


def test_recall_false_terms_and_wer() -> None:
    items = [Item("a", b"", "My Quorvo router is down.", ("Quorvo",)),
             Item("b", b"", "Upgrade to Zentrix Plus please.", ("Zentrix Plus",)),
             Item("c", b"", "Thank you for calling.", ())]
    texts = ["My quorvo router is down", "Upgrade to Zen Trix Plus please.",
             "Thank you for calling Quorvo."]
    scores = score(items, texts, TERMS, 1.0, 2.0)
    assert (scores.found, scores.said, scores.recall) == (1, 2, 0.5)
    assert scores.false_terms == 1  # Quorvo where none was said
    assert 0 < scores.wer < 0.5
    assert (scores.decode_ms, scores.cpu_ms) == (1.0, 2.0)
