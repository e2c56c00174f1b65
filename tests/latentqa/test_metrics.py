"""Scorers: 1.0 for identical strings, 0.0 for disjoint ones, and known values in between."""

import pytest

from latentqa.metrics import rouge_l, token_f1


@pytest.mark.parametrize("score", [rouge_l, token_f1])
def test_identical_and_disjoint(score):
    assert score("A pirate who loves treasure", "A pirate who loves treasure") == 1.0
    assert score("cheerful gardener", "grumpy sailor") == 0.0


def test_known_values():
    # LCS("the cat sat", "the cat sat down") = 3 words: P = 1, R = 3/4
    assert rouge_l("the cat sat", "the cat sat down") == pytest.approx(2 * 1 * 0.75 / 1.75)
    # SQuAD normalisation drops articles and punctuation: {cat, sat} vs {cat, sat, down}
    assert token_f1("The cat sat!", "a cat sat down") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))


def test_word_order_matters_for_rouge_only():
    assert token_f1("sat cat", "cat sat") == 1.0
    assert rouge_l("sat cat", "cat sat") == 0.5
