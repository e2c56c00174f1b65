"""Train/eval splits by control label (never by row), stratified by family, with a fixed seed."""

from __future__ import annotations

import hashlib
import math


def assign_splits(label_family: dict[str, str], eval_fraction: float, seed: int) -> dict[str, str]:
    """label -> "train" | "eval". Each family with >= 2 labels sends at least one label to eval."""
    by_family: dict[str, list[str]] = {}
    for label, family in label_family.items():
        by_family.setdefault(family, []).append(label)
    out = {}
    for labels in by_family.values():
        ranked = sorted(labels, key=lambda l: hashlib.sha256(f"{seed}:{l}".encode()).hexdigest())
        n_eval = min(max(1, math.floor(eval_fraction * len(ranked) + 0.5)), len(ranked) - 1) if len(ranked) > 1 else 0
        out.update({l: ("eval" if i < n_eval else "train") for i, l in enumerate(ranked)})
    return out
