"""The linear-probe control: a multinomial logistic regression on mean-pooled activations.

If a probe on the same activations classifies as well as the decoder answers, the decoder's classification
score says nothing a linear read-out would not.
"""

from __future__ import annotations

import numpy as np
import torch


def mean_pool(acts: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(a, dtype=np.float32).mean(0) for a in acts])


class Probe:
    def __init__(self, x: np.ndarray, labels: list[str], steps: int = 300, weight_decay: float = 1e-3, seed: int = 0):
        self.classes = sorted(set(labels))
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        xt = torch.from_numpy((x - self.mean) / self.std)
        y = torch.tensor([self.classes.index(label) for label in labels])
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(x.shape[1], len(self.classes))
        opt = torch.optim.Adam(self.linear.parameters(), lr=1e-2, weight_decay=weight_decay)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(self.linear(xt), y).backward()
            opt.step()

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> list[str]:
        logits = self.linear(torch.from_numpy((x - self.mean) / self.std))
        return [self.classes[i] for i in logits.argmax(-1).tolist()]
