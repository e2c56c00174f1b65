"""The evaluation report: per task, every condition's scores and the decoder's margin over each control."""

from __future__ import annotations

from latentqa.evals.harness import PRIMARY

METRICS = ("identification", "exact", "token_f1", "rouge_l", "judge", "loss")


def pivot(summary: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """{task: {condition: {metric: value}}}"""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in summary:
        out.setdefault(r["task"], {}).setdefault(r["condition"], {})[r["metric"]] = r["value"]
    return out


def primary_scores(summary: list[dict]) -> dict[str, dict[str, float]]:
    """{"task (metric)": {condition: value}} on each task's primary metric, for the bar chart."""
    out = {}
    for task, conds in pivot(summary).items():
        metric = PRIMARY[task]
        out[f"{task}\n({metric})"] = {c: m[metric] for c, m in conds.items() if metric in m}
    return out


def markdown(summary: list[dict], examples: list[dict], n_examples: int = 3) -> str:
    lines = ["# Evaluation", "",
             "Each task scored with the decoder and with every faithfulness control; `margin` is the decoder's",
             "primary score minus the control's (positive: the decoder does better than the control).", ""]
    for task, conds in pivot(summary).items():
        primary = PRIMARY[task]
        metrics = [m for m in METRICS if any(m in v for v in conds.values())]
        lines += [f"## {task} (primary: {primary})", "",
                  "| condition | " + " | ".join(metrics) + " | margin |", "|---" * (len(metrics) + 2) + "|"]
        base = conds.get("decoder", {}).get(primary)
        for condition, values in conds.items():
            cells = [f"{values[m]:.3f}" if m in values else "" for m in metrics]
            margin = "" if condition == "decoder" or base is None or primary not in values else \
                f"{base - values[primary]:+.3f}"
            lines.append(f"| {condition} | " + " | ".join(cells) + f" | {margin} |")
        shown = [e for e in examples if e["task"] == task and e["condition"] == "decoder"][:n_examples]
        if shown:
            lines += ["", "Examples (decoder):"]
            lines += [f"- {e['question']} -> `{e['generated']}` (reference: {e['reference']})" for e in shown]
        lines.append("")
    return "\n".join(lines)
