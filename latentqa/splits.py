"""Train/eval splits by control label (never by row), stratified by family, with a fixed seed."""

from __future__ import annotations

import hashlib
import math


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
