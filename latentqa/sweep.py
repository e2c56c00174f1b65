"""The scaling sweep's domain: which run configs its cells train, and its results as one table.

LatentQA's third claim is that reading improves with data and model size. A sweep trains one decoder per
(model, training-data fraction) on the same dataset and evaluates each alike: the fractions are nested shares of
the training labels (train.label_fraction) and the held-out labels are the same in every cell, so a cell differs
from its neighbour only in how much it trained on, or on which model.
"""

from __future__ import annotations

from typing import Callable

from latentqa.config import RunConfig
from latentqa.evals.harness import GENERATIVE, PRIMARY


def layer_at(relative_depth: float, n_blocks: int) -> int:
    """The block at a relative depth: 0.5 of SmolLM2's 30 blocks is 15 (the paper reads Llama-3-8B's 15 of 32),
    of Gemma-3-270m's 18 blocks 9."""
    return min(n_blocks - 1, round(relative_depth * n_blocks))


def model_runs(cfg: RunConfig, depth_of: Callable[[str], int]) -> list[RunConfig]:
    """One run config per model of the sweep: the run's own, with only the model (and, under
    sweep.relative_depth, the read layer and the write layer that follows it) changed."""
    names = cfg.sweep.models or [cfg.model.name]
    runs = []
    for name in names:
        raw = cfg.model_dump(mode="json")
        if name != cfg.model.name:
            raw["model"] = {**raw["model"], "name": name, "revision": None}
        if cfg.sweep.relative_depth is not None:
            layer = layer_at(cfg.sweep.relative_depth, depth_of(name))
            writes_where_read = cfg.train.write_layer == (cfg.train.read_layer if cfg.train.read_layer is not None
                                                          else cfg.extract.read_layers[0])
            raw["extract"]["read_layers"] = [layer]
            raw["train"]["read_layer"] = None
            if writes_where_read:
                raw["train"]["write_layer"] = layer
        runs.append(RunConfig.model_validate(raw))
    return runs


def cell_train(run: RunConfig, fraction: float):
    """The train section of one cell: the run's, on a nested share of the training labels."""
    return run.train.model_copy(update={"label_fraction": fraction})


SWEEP_COLUMNS = ("model", "fraction", "n_train_examples", "task", "condition", "metric", "value", "lo", "hi", "n")


def cell_rows(model: str, fraction: float, n_train_examples: int, summary: list[dict]) -> list[dict]:
    """One evaluation's primary scores, and on identification tasks its generative identification too (every
    condition, with n and interval), as rows of the sweep table."""
    return [{"model": model, "fraction": fraction, "n_train_examples": n_train_examples, **{k: r[k] for k in SWEEP_COLUMNS[3:]}}
            for r in summary if r["metric"] in (PRIMARY[r["task"]], GENERATIVE.get(r["task"]))]


def panels(rows: list[dict]) -> list[tuple[str, str]]:
    """The (task, metric) pairs of the sweep's rows, in their order: one table and one plot panel each."""
    return list(dict.fromkeys((r["task"], r["metric"]) for r in rows))


def markdown(rows: list[dict], models: list[str]) -> str:
    """Per task, one line per cell: training examples, then the decoder and every control as value [lo, hi]."""
    lines = ["# Scaling sweep", "",
             "One decoder per model and share of the training labels (nested shares; the same held-out labels in "
             "every cell), each evaluated alike: primary score, mean over n items with a seeded 95% bootstrap "
             "interval.", ""]
    for task, metric in panels(rows):
        of_task = [r for r in rows if (r["task"], r["metric"]) == (task, metric)]
        conditions = list(dict.fromkeys(r["condition"] for r in of_task))
        lines += [f"## {task} ({metric}, n = {of_task[0]['n']})", "",
                  "| model | fraction | training examples | " + " | ".join(conditions) + " |",
                  "|---|---|---|" + "---|" * len(conditions)]
        cells = sorted({(r["model"], r["fraction"], r["n_train_examples"]) for r in of_task},
                       key=lambda c: (models.index(c[0]) if c[0] in models else len(models), c[1]))
        for model, fraction, n_train in cells:
            by = {r["condition"]: r for r in of_task if (r["model"], r["fraction"]) == (model, fraction)}
            values = [f"{by[c]['value']:.3f} [{by[c]['lo']:.3f}, {by[c]['hi']:.3f}]" if c in by else "" for c in conditions]
            lines.append(f"| {model} | {fraction:g} | {n_train} | " + " | ".join(values) + " |")
        lines.append("")
    return "\n".join(lines)
