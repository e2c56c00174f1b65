"""Diagnostic: do the decoder's written answers to gist questions carry the hidden control's own words?

The release decoder's gist replies (qa.json's questions, greedy) score no better than shuffled or zero
activations against qa.json's references, GPT-4o's paraphrases of the hidden system prompt. This rescores the
replies an evaluate stage stored (metrics.parquet), without running a model, against a second reference: the
text of the control each item's dialog was read under (masked from the decoder), found through the stage's
lineage. If the decoder's replies share more of that text than every control's do, its answers carry the prompt
and the paraphrased references are what hide it. Reported per condition: token F1 against each reference, n,
seeded 95% intervals, paired margins of the decoder over each control.

    python -m bench.gist_references --evaluate fd5a2f364dee          # an evaluate stage of runs/release
"""

from __future__ import annotations

import argparse

from latentqa.evals.harness import margins, summarize
from latentqa.metrics import token_f1
from storage.catalog import lineage
from storage.parquet import read_table
from storage.store import Store


def hidden_controls(store: Store, chain: list[dict]) -> dict[str, str]:
    """{qa_id: the control text its dialog was read under}, from the dataset stage in an evaluate's lineage."""
    for row in chain:
        d = store.root / row["dir"]
        if (d / "dialogs.parquet").is_file() and (d / "qa.parquet").is_file():
            control = {r["dialog_id"]: r["control_user"] for r in read_table(d / "dialogs.parquet").to_pylist()}
            return {r["qa_id"]: control[r["dialog_id"]] for r in read_table(d / "qa.parquet").to_pylist()}
    raise LookupError(f"no stage upstream of {chain[0]['dir']} holds dialogs.parquet and qa.parquet")


def rescore(rows: list[dict], reference, seed: int) -> list[str]:
    """Report lines: each condition's token F1 against reference(row), with the decoder's paired margin, through
    the harness's own summary and margins."""
    rows = [{**r, "token_f1": token_f1(r["generated"], reference(r))} for r in rows]
    margin = {m["control"]: m for m in margins(rows, seed) if m["metric"] == "token_f1"}
    out = []
    for ci in (r for r in summarize(rows, seed) if r["metric"] == "token_f1"):
        line = f"  {ci['condition']:<16} {ci['value']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]  n = {ci['n']}"
        if m := margin.get(ci["condition"]):
            line += f"   decoder's margin {m['margin']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}]"
        out.append(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/release")
    parser.add_argument("--evaluate", required=True, help="an evaluate stage: fingerprint prefix or path")
    parser.add_argument("--task", default="gist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    store = Store(args.store)
    chain = lineage(store, args.evaluate)  # the stage itself first (depth 0), then everything upstream
    stage = chain[0]
    rows = [r for r in read_table(store.root / stage["dir"] / "metrics.parquet").to_pylist()
            if r["task"] == args.task and r["condition"] != "probe"]
    if not rows:
        raise SystemExit(f"{stage['dir']} scored no {args.task} items")
    control = hidden_controls(store, chain)
    print(f"{stage['dir']}: {args.task} replies against the reference they were evaluated on", flush=True)
    print("\n".join(rescore(rows, lambda r: r["reference"], args.seed)))
    print("the same replies against the text of the hidden control (masked from the decoder)")
    print("\n".join(rescore(rows, lambda r: control[r["item_id"]], args.seed)))


if __name__ == "__main__":
    main()
