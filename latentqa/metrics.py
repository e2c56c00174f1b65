"""Text scores of generated answers against references: ROUGE-L (F-measure) and SQuAD-style token F1."""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_tokens(text: str) -> list[str]:
    """Lower-case, strip punctuation and articles, split on whitespace (SQuAD's normalisation)."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (Lin 2004, beta = 1)."""
    pred, ref = prediction.lower().split(), reference.lower().split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, reference: str) -> float:
    """1.0 when the normalised reference appears as a contiguous run of the normalised prediction's tokens
    (exact match for generated answers, which wrap the object in a sentence), else 0.0."""
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not ref:
        return float(not pred)
    return float(any(pred[i: i + len(ref)] == ref for i in range(len(pred) - len(ref) + 1)))


def exclusive_choice(prediction: str, reference: str, choices: list[str]) -> float:
    """1.0 when the prediction names the reference class and no other choice (an answer that lists every
    option is not a classification)."""
    named = [c for c in choices if contains_answer(prediction, c)]
    return float(named == [reference])
