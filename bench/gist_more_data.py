"""Diagnostic: does more training data make the release decoder write what it reads (gist), not only rank it?

The release decoder (configs/release.yaml: one epoch over 3,153 training labels, 395 steps) identifies hidden
system prompts (calibrated 0.75, chance 0.20) but its written descriptions are level with the zero control's:
on unseen training-file labels its token F1 is 0.445 against zero's 0.439 (bench/gist_decoding.py), and
contrastive decoding does not change that. This continues its training on the training-file system prompts the
release config never imported (about 4,500 more labels, each under a neutral user turn, with the description
pair derived from its text, as the import does) and scores the same validation labels before and after, under
the decoder, shuffled and zero activations. The validation labels are drawn first, with bench/gist_decoding.py's
seed, and are never trained on; no test label is touched.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.gist_decoding import gist_f1, pairs_of, read_prompts, read_texts, release_decoder, validation_labels
from latentqa.config import TrainConfig
from latentqa.decoder import encode_example
from latentqa.dialogs import pad_id_of
from latentqa.evals.harness import Scorer
from latentqa.evals.stats import bootstrap, paired
from latentqa.release import NEUTRAL_STIMULI, read_behaviours
from latentqa.training import fit
from storage.store import Store, save_pretrained_atomic, write_json_atomic


def report(when: str, f1: dict) -> None:
    line = "  ".join(f"{c} {bootstrap(v, 0)}" for c, v in f1.items())
    margins = ", ".join(f"{c} {paired(f1['decoder'], v, 0)}" for c, v in f1.items() if c != "decoder")
    print(f"{when}: {line}\n  margins over {margins}", flush=True)


def save_decoder(net, info, folder: Path) -> None:
    """The continued decoder in the layout `latentqa read` and the playground load: adapter/ + decoder.json."""
    save_pretrained_atomic(net, folder / "adapter")
    write_json_atomic(folder / "decoder.json", info.to_json())
    print(f"continued decoder written to {folder}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/release")
    parser.add_argument("--source", default="../shared/latentqa_data")
    parser.add_argument("--n", type=int, default=100, help="validation labels")
    parser.add_argument("--extra", type=int, default=None, help="at most this many further training labels")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--save", type=Path, help="write the continued decoder here (adapter/ + decoder.json, the "
                        "layout `latentqa read` and the playground load)")
    args = parser.parse_args()
    train, trained, seen = release_decoder(Store(args.store))
    net, tok, info = trained.net, trained.tokenizer, trained.info
    source = Path(args.source)
    val = validation_labels(source, seen, args.n, args.seed)
    held = seen | {r["label"] for r in val}
    extra = [r for r in read_behaviours(source / "data" / "train" / "system.json") if r["label"] not in held]
    extra = extra[: args.extra]
    rng = np.random.default_rng(args.seed)
    for r in extra:  # a neutral user turn, as the import gives each training label
        r["stimulus_user"] = NEUTRAL_STIMULI[int(rng.integers(len(NEUTRAL_STIMULI)))]
    start = time.perf_counter()
    val_acts, extra_acts = read_prompts(net, tok, info, val), read_prompts(net, tok, info, extra, batch_size=32)
    print(f"decoder train/{train.fingerprint[:12]}: {len(val)} validation labels, {len(extra)} further training "
          f"labels read in {time.perf_counter() - start:.0f} s", flush=True)
    vq, vref = pairs_of(val)
    labels = [r["label"] for r in val]
    before = gist_f1(Scorer(net, tok, info, 64, 24), val_acts, vq, vref, labels, args.seed, untrained=True,
                     texts=read_texts(tok, val))[0]
    report("before", before)
    fixed = {c: before[c] for c in ("untrained_patch", "text_only")}  # neither reads through the adapter
    questions, answers = pairs_of(extra)
    examples = [encode_example(tok, len(a), q, ans, info.placeholder_id)
                for a, q, ans in zip(extra_acts, questions, answers)]
    for name, p in net.named_parameters():  # the adapter trains on; the base stays frozen
        p.requires_grad_("lora_" in name)
    cfg = TrainConfig(write_layer=info.write_layer, lr=args.lr, batch_size=8, warmup_steps=10, max_steps=args.steps,
                      checkpoint_every=10**6, eval_every=10**6)
    start = time.perf_counter()
    pos = fit(net, (examples, extra_acts), ([], []), cfg, pad_id_of(tok), torch.device("cpu"))
    net.eval()
    tail = np.mean([c["loss"] for c in pos.curves[-10:]])
    print(f"{pos.step} further steps at batch 8 ({time.perf_counter() - start:.0f} s), final train loss {tail:.3f}",
          flush=True)
    report("after", {**gist_f1(Scorer(net, tok, info, 64, 24), val_acts, vq, vref, labels, args.seed)[0], **fixed})
    if args.save:
        save_decoder(net, info, args.save)


if __name__ == "__main__":
    main()
