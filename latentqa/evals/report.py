"""The evaluation report: per task, every condition's scores with n and 95% intervals, the decoder's paired
margin over each control, and whether the decoder reads (its interval above every control's)."""

from __future__ import annotations

from latentqa.evals.harness import PRIMARY

METRICS = ("calibrated", "generative", "judge_generative", "identification", "attribution", "exact", "token_f1",
           "rouge_l", "judge", "loss")


def pivot(summary: list[dict], field: str = "value") -> dict[str, dict[str, dict[str, float]]]:
    """{task: {condition: {metric: summary[field]}}}"""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in summary:
        out.setdefault(r["task"], {}).setdefault(r["condition"], {})[r["metric"]] = r[field]
    return out


def primary_scores(summary: list[dict]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{"task (metric, n)": {condition: (value, lo, hi)}} on each task's primary metric, for the bar chart."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for r in summary:
        if r["metric"] == PRIMARY[r["task"]]:
            out.setdefault(f"{r['task']}\n({r['metric']}, n={r['n']})", {})[r["condition"]] = (r["value"], r["lo"], r["hi"])
    return out


def _cell(r: dict) -> str:
    return f"{r['value']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"


def _margin(m: dict | None) -> str:
    return f"{m['margin']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}] (n={m['n']})" if m else ""


def markdown(summary: list[dict], margins: list[dict], verdicts: dict[str, bool], examples: list[dict],
             says: dict[str, bool] | None = None, decoding: str = "greedy", n_examples: int = 3) -> str:
    lines = ["# Evaluation", "",
             "Each task scored with the decoder and with every faithfulness control: mean over n items with a seeded",
             "95% bootstrap interval. `margin` is the decoder's primary score minus the control's, paired by item, with",
             "its own interval. The decoder *reads* a task when its interval lies above every control's. On",
             "identification tasks `calibrated` scores what the decoder ranks and `generative` what it says: its",
             f"reply (decoding: {decoding}) matched to the block's candidates by content-word F1.", ""]
    for task in dict.fromkeys(r["task"] for r in summary):
        primary = PRIMARY[task]
        rows = [r for r in summary if r["task"] == task]
        conditions = list(dict.fromkeys(r["condition"] for r in rows))
        metrics = [m for m in METRICS if any(r["metric"] == m for r in rows)]
        cell = {(r["condition"], r["metric"]): r for r in rows}
        margin = {m["control"]: m for m in margins if m["task"] == task and m["metric"] == primary}
        said_margin = {m["control"]: m for m in margins if m["task"] == task and m["metric"] == "generative"}
        n = max((r["n"] for r in rows if r["metric"] == primary), default=0)
        said = f"; says it (generative): {'yes' if says.get(task) else 'no'}" if says and task in says else ""
        lines += [f"## {task} (primary: {primary}, n={n}): decoder reads: {'yes' if verdicts.get(task) else 'no'}{said}",
                  "", "| condition | " + " | ".join(metrics) + " | margin (paired) |" +
                  (" generative margin |" if said_margin else ""),
                  "|---" * (len(metrics) + 2 + bool(said_margin)) + "|"]
        for condition in conditions:
            cells = [_cell(cell[condition, m]) if (condition, m) in cell else "" for m in metrics]
            cells.append(_margin(margin.get(condition)))
            if said_margin:
                cells.append(_margin(said_margin.get(condition)))
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
        shown = [e for e in examples if e["task"] == task and e["condition"] == "decoder"][:n_examples]
        if shown:
            lines += ["", "Examples (decoder):"]
            lines += [f"- {e['question']} -> `{e['generated']}` (reference: {e['reference']})" for e in shown]
        lines.append("")
    return "\n".join(lines)
