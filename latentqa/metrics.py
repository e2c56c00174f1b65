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


# Function words and the description template's own words ("The assistant will adopt the persona of ...", "The
# assistant was asked: ..."): every candidate of a block shares them, so only content can tell candidates apart.
STOPWORDS = frozenset("""
a an the of to in on at for from by with without about as into onto over under than then that this these those
and or but nor so if because while who whom whose which what when where why how all any each every some no not
is are was were be been being am do does did done have has had having will would shall should can could may might
must it its they them their there here he him his she her we us our you your i me my mine yours
assistant persona adopt adopts adopted asked asks role character will
""".split())


def content_words(text: str) -> list[str]:
    """SQuAD-normalised tokens less function words and the description template's words."""
    return [t for t in normalize_tokens(text) if t not in STOPWORDS]


def content_f1(prediction: str, reference: str) -> float:
    """Token F1 over content words only (0.0 when either side has none: nothing to match on)."""
    pred, ref = Counter(content_words(prediction)), Counter(content_words(reference))
    common = sum((pred & ref).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(pred.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def matched_candidate(answer: str, candidates: list[str]) -> int | None:
    """The index of the candidate an open answer describes, by content-word F1: the one that matches strictly
    best; None on a tie for best (an answer that matches two candidates alike, or none at all, names neither)."""
    scores = [content_f1(answer, c) for c in candidates]
    best = max(scores, default=0.0)
    if best <= 0.0 or scores.count(best) > 1:
        return None
    return scores.index(best)
