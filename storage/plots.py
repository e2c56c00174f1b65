"""PNG plots written into stage directories (matplotlib, headless), through a temporary name."""

from __future__ import annotations

from pathlib import Path

from storage.store import atomic_path


def plot_curves(curves: list[dict], path: Path) -> None:
    """Training loss per step and eval loss where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([c["step"] for c in curves], [c["loss"] for c in curves], label="train loss", lw=1)
    evals = [(c["step"], c["eval_loss"]) for c in curves if c["eval_loss"] is not None]
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss (held-out controls)", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (answer tokens)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_bars(groups: dict[str, dict[str, float | tuple[float, float, float]]], path: Path,
              ylabel: str = "score") -> None:
    """Grouped bars: one group per key of `groups` (a task), one bar per condition in it; a (value, lo, hi)
    value draws its interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(dict.fromkeys(c for values in groups.values() for c in values))
    width = 0.8 / max(len(conditions), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups)), 3.8), dpi=100)
    for k, condition in enumerate(conditions):
        xs = [i + k * width for i, values in enumerate(groups.values()) if condition in values]
        vals = [values[condition] for values in groups.values() if condition in values]
        ys = [v[0] if isinstance(v, tuple) else v for v in vals]
        err = [[y - v[1] for y, v in zip(ys, vals)], [v[2] - y for y, v in zip(ys, vals)]] \
            if vals and all(isinstance(v, tuple) for v in vals) else None
        ax.bar(xs, ys, width, label=condition, yerr=err, capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks([i + width * (len(conditions) - 1) / 2 for i in range(len(groups))], list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
