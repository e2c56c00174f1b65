"""Identification blocks: which K hidden prompts an item's candidates come from.

  random  the prompts in a seeded order, cut into consecutive blocks of K (chance 1/K)
  hard    each block a seed prompt and the K-1 prompts most like it, as the paper's hard set pairs similar
          personas (Claude Shannon with Alan Turing): the seeds taken in the same seeded order, each block drawn
          from the prompts no earlier block took. Likeness is the cosine of TF-IDF vectors over the descriptions'
          content words (latentqa.metrics.content_words), the words a generated answer is matched on, so a hard
          block's candidates share the most words an answer could name

Prompts that do not fill a last block are left out.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np

from latentqa.metrics import content_words

KINDS = ("random", "hard")


def tfidf_similarity(texts: list[str]) -> np.ndarray:
    """[n, n] cosine similarity of the texts' TF-IDF vectors (smoothed idf, l2-normalised rows)."""
    words = [Counter(content_words(t)) for t in texts]
    vocab = {w: j for j, w in enumerate(sorted({w for c in words for w in c}))}
    df = Counter(w for c in words for w in c)
    n = len(texts)
    m = np.zeros((n, max(len(vocab), 1)))
    for i, c in enumerate(words):
        for w, tf in c.items():
            m[i, vocab[w]] = tf * (math.log((1 + n) / (1 + df[w])) + 1)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    m = m / np.where(norms == 0, 1, norms)
    return m @ m.T


def blocks(labels: list[str], texts: list[str], k: int, seed: int, kind: str = "random") -> list[list[str]]:
    """Blocks of min(k, n) labels (`texts[i]` describes `labels[i]`), each block's seed first."""
    if kind not in KINDS:
        raise ValueError(f"unknown block kind {kind!r}: one of {', '.join(KINDS)}")
    order = list(range(len(labels)))
    random.Random(seed).shuffle(order)
    size = min(k, len(order))
    if size < 2:
        return []
    if kind == "random":
        return [[labels[i] for i in order[s: s + size]] for s in range(0, len(order) - size + 1, size)]
    sim = tfidf_similarity(texts)
    rank = {i: r for r, i in enumerate(order)}
    free, out = set(order), []
    for s in order:
        if s not in free or len(free) < size:
            continue
        free.discard(s)
        # nearest first; ties by the seeded order, so the blocks do not depend on the input's order
        nearest = sorted(free, key=lambda i: (-sim[s, i], rank[i]))[: size - 1]
        free -= set(nearest)
        out.append([labels[i] for i in (s, *nearest)])
    return out
