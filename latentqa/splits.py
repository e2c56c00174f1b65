"""Train/eval splits by control label (never by row), stratified by family, with a fixed seed; nested shares of
the training labels for the scaling sweep."""

from __future__ import annotations

import hashlib
import math
from typing import Iterable


def assign_splits(label_family: dict[str, str], eval_fraction: float, seed: int,
                  label_category: dict[str, str] | None = None, heldout_categories: list[str] = ()) -> dict[str, str]:
    """label -> "train" | "eval". Held-out categories go to eval whole; of the rest, each family with >= 2
    labels sends round(eval_fraction * n) of them (at least one) to eval."""
    heldout = {l for l, c in (label_category or {}).items() if c in set(heldout_categories)}
    by_family: dict[str, list[str]] = {}
    for label, family in label_family.items():
        if label not in heldout:
            by_family.setdefault(family, []).append(label)
    out = {l: "eval" for l in heldout}
    for labels in by_family.values():
        ranked = sorted(labels, key=lambda l: hashlib.sha256(f"{seed}:{l}".encode()).hexdigest())
        n_eval = min(max(1, math.floor(eval_fraction * len(ranked) + 0.5)), len(ranked) - 1) if len(ranked) > 1 else 0
        out.update({l: ("eval" if i < n_eval else "train") for i, l in enumerate(ranked)})
    return out


def nested_share(labels: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The first ceil(fraction * n) of the distinct labels in a seeded hash order: the same order for every
    fraction, so the share kept at 1/8 is inside the share kept at 1/4, and so on (the sweep's data axis).
    The order is salted apart from assign_splits' so it is not the order the eval labels were drawn in."""
    distinct = sorted(set(labels), key=lambda l: hashlib.sha256(f"share:{seed}:{l}".encode()).hexdigest())
    return set(distinct[:math.ceil(fraction * len(distinct))])
