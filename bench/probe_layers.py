"""Diagnostic: at which layer does a hidden system prompt reach the tokens after it? A linear probe per layer.

The target reads the LatentQA release's system prompts (personas and goals of data/train/system.json) over a
neutral user turn, as configs/release.yaml does; the system turn is masked, so what a probe finds in the
activations of the user turn can only have come from the hidden prompt through attention. Per layer, a
logistic regression on the mean-pooled activations of the read tokens predicts the family (persona or goal)
and, harder, the category (the label's second field, e.g. `persona-politics-*`, among the most frequent ones),
fit on 75% of the labels and scored on the rest, with a seeded 95% bootstrap interval. A text-only control
(the same probe on a bag of the read tokens) shows what the neutral turn itself gives away: nothing, by
construction. Prints one line per layer; needs ../shared/latentqa_data.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
from pathlib import Path

import numpy as np
import torch

from latentqa.dialogs import encode_dialog
from latentqa.evals.probe import Probe
from latentqa.evals.stats import bootstrap
from latentqa.models import load_model
from latentqa.padding import right_pad
from latentqa.release import NEUTRAL_STIMULI

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "latentqa_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=800, help="system prompts read (half personas, half goals)")
    parser.add_argument("--categories", type=int, default=8, help="the most frequent categories to tell apart")
    args = parser.parse_args()
    rows = json.loads((SOURCE / "data" / "train" / "system.json").read_text())
    rng = random.Random(0)
    rng.shuffle(rows)
    rows = [r for r in rows if r["label"].startswith("persona")][: args.n // 2] + \
        [r for r in rows if r["label"].startswith("goal")][: args.n // 2]
    loaded = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    encs = [encode_dialog(tok, {"control_user": r["system"], "stimulus_user": rng.choice(NEUTRAL_STIMULI)}, "system")
            for r in rows]
    pooled: list[list[np.ndarray]] = []  # [dialog][layer] mean over the read tokens
    with torch.no_grad():
        for i in range(0, len(encs), 32):
            chunk = encs[i: i + 32]
            ids, mask = right_pad([e.token_ids for e in chunk], tok.eos_token_id)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            for b, e in enumerate(chunk):
                pooled.append([h[b, e.n_prefix: len(e.token_ids)].mean(0).numpy() for h in hidden[1:]])
    family = [r["label"].split("-")[0] for r in rows]
    category = [r["label"].split("-")[1] for r in rows]
    top = {c for c, _ in collections.Counter(category).most_common(args.categories)}
    order = list(range(len(rows)))
    rng.shuffle(order)
    cut = len(order) * 3 // 4
    train, test = order[:cut], order[cut:]
    words = sorted({t for e in encs for t in e.token_ids[e.n_prefix:]})
    bag = np.array([[e.token_ids[e.n_prefix:].count(t) for t in words] for e in encs], dtype=np.float32)

    def score(x: np.ndarray, labels: list[str], keep) -> str:
        tr, te = [i for i in train if keep(i)], [i for i in test if keep(i)]
        probe = Probe(x[tr], [labels[i] for i in tr])
        hits = [p == labels[i] for p, i in zip(probe.predict(x[te]), te)]
        return str(bootstrap(hits, seed=0))

    everyone, in_top = (lambda i: True), (lambda i: category[i] in top)
    chance = max(collections.Counter(category[i] for i in test if in_top(i)).values()) / sum(map(in_top, test))
    print(f"{len(rows)} system prompts, {len(test)} held out; category chance (majority) {chance:.3f}")
    print(f"text only (bag of read tokens): family {score(bag, family, everyone)}, category "
          f"{score(bag, category, in_top)}")
    for layer in range(len(pooled[0])):
        x = np.stack([p[layer] for p in pooled])
        print(f"layer {layer:2d}: family {score(x, family, everyone)}, category {score(x, category, in_top)}",
              flush=True)


if __name__ == "__main__":
    main()
