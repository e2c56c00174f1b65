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
