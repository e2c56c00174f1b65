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


def plot_scaling(rows: list[dict], models: list[str], path: Path) -> None:
    """The scaling sweep: per task and metric (its primary one, and generative identification where there is
    one), the score against training examples (log x), one solid line per model for the decoder with its 95%
    intervals, and that model's controls as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    tasks = list(dict.fromkeys((r["task"], r["metric"]) for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 4.2), dpi=100, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 3)), (0, (3, 1, 1, 1))]
    # one line style per condition across every panel, so a style means the same control everywhere
    controls = [c for c in dict.fromkeys(r["condition"] for r in rows) if c != "decoder"]
    for ax, task in zip(axes[0], tasks):
        of_task = [r for r in rows if (r["task"], r["metric"]) == task]
        for m, model in enumerate(models):
            for condition in ["decoder", *controls]:
                line = sorted((r for r in of_task if r["model"] == model and r["condition"] == condition),
                              key=lambda r: r["n_train_examples"])
                if not line:
                    continue
                xs, ys = [r["n_train_examples"] for r in line], [r["value"] for r in line]
                colour = colours[m % len(colours)]
                if condition == "decoder":
                    err = [[y - r["lo"] for y, r in zip(ys, line)], [r["hi"] - y for y, r in zip(ys, line)]]
                    ax.errorbar(xs, ys, yerr=err, color=colour, marker="o", lw=1.8, capsize=3,
                                label=f"{model}: decoder")
                else:
                    style = styles[controls.index(condition) % len(styles)]
                    ax.plot(xs, ys, color=colour, ls=style, lw=1, alpha=0.7, label=f"{model}: {condition}")
        ax.set_xscale("log")
        ticks = sorted({r["n_train_examples"] for r in of_task})  # the cells' sizes, written out
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks], fontsize=7)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("training examples (log)")
        ax.set_title(f"{task[0]} ({task[1]}, n={of_task[0]['n']})", fontsize=9)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    axes[0][0].set_ylabel("score")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
