"""Scores as statistics: seeded 95% bootstrap intervals over items, and paired intervals for margins.

A reported score is the mean over n items with a percentile interval from resampling the items. A margin
(decoder minus a control) is resampled as pairs, item by item, so what both conditions find easy or hard
cancels: that interval is narrower than the difference of two unpaired intervals, and it is the one that says
whether the decoder beats that control. "The decoder reads" a task when its interval lies entirely above
every control's (`reads`), the strictest of the comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def bootstrap(values, seed: int, n_boot: int = N_BOOT, level: float = LEVEL) -> Interval:
    """Mean of `values` with a seeded percentile bootstrap interval (n = len(values))."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Interval(float(v.mean()), float(lo), float(hi), int(v.size))


def paired(a, b, seed: int, n_boot: int = N_BOOT, level: float = LEVEL) -> Interval:
    """Mean of a - b over paired items, with a bootstrap interval that resamples the pairs."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    return bootstrap(a - b, seed, n_boot, level)


def reads(decoder: Interval, controls: list[Interval]) -> bool:
    """The decoder's interval lies entirely above every control's (and there is at least one control)."""
    return bool(controls) and all(decoder.lo > c.hi for c in controls)
