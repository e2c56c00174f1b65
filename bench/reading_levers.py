"""Diagnostic: which way of patching lets a small decoder read a hidden system prompt? One short training per lever.

The release run (configs/release.yaml, README "Reading the LatentQA release") trained a decoder that ignores the
activations: real, shuffled and zero activations score the same. Probes find the hidden prompt in them
(bench/probe_layers.py), but as ~11% of the residual's norm beside a component shared by every token. This
spike trains the same decoder briefly under each lever, on the store that run left (its extract and filter
stages), and asks one question of it on training-file labels it never saw:

  paired identification: for a block of K labels and each label's own answer, is the answer's loss lowest
  under its own activations among the K labels' activations?

The answer is fixed within a comparison, so its prior cancels: chance is exactly 1/K, and a decoder that
ignores the activations sits at chance. Reported with n and a seeded 95% interval, plus the mean loss gap
(others' activations minus own) with its interval.

Levers: `base` (raw activations written at block 0, the release config); `centred` (the training mean
subtracted, then each vector rescaled to the norm of the residual it replaces); `same_layer` (raw activations
written at the block they were read from, where the decoder's own later blocks expect them); `unmasked`, a
`diff`, what the hidden prompt changed: each read vector minus the mean vector at the same position of the
same user turn over the training labels (the neutral turns are few, so the turn's own content cancels and
only the prompt's trace, ~11% of the norm, is left), rescaled to the residual it replaces; `unmasked`, a
positive control of the mechanism, not a reading result: the activations of the system prompt's own tokens
(and the turn after it), which hold the prompt outright, so a decoder that cannot learn to read even these
points at the training setup rather than at the signal in the masked span.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from latentqa.config import TrainConfig
from latentqa.decoder import encode_example, make_decoder, placeholder_id
from latentqa.dialogs import EncodedDialog
from latentqa.evals.stats import bootstrap
from latentqa.generate import answer_losses
from latentqa.models import load_model
from latentqa.residual import read_spans
from latentqa.training import fit
from storage import outputs
from storage.store import Store
from tasks._data import activation_reader, load_examples

LEVERS = {
    "base": {"write_layer": 0, "norm_match": False, "centre": False},
    "centred": {"write_layer": 0, "norm_match": True, "centre": True},
    "same_layer": {"write_layer": None, "norm_match": False, "centre": False},
    "same_layer_centred": {"write_layer": None, "norm_match": True, "centre": True},
    "unmasked": {"write_layer": 0, "norm_match": False, "centre": False, "unmasked": True},
    "diff": {"write_layer": 0, "norm_match": True, "centre": False, "diff": True},
    "diff_same_layer": {"write_layer": None, "norm_match": True, "centre": False, "diff": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/release", help="a store with the release run's extract and filter")
    parser.add_argument("--train", type=int, default=1200, help="training labels")
    parser.add_argument("--val", type=int, default=100, help="unseen training-file labels scored")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--levers", default="base,centred,same_layer")
    args = parser.parse_args()
    store = Store(args.store)
    split = next(m for m in store.manifests() if m.stage == "filter")
    acts = next(m for m in store.manifests() if m.stage == "extract")
    layer = outputs.read_layers(acts)[0]
    loaded = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    tok = loaded.tokenizer
    ph_id = placeholder_id(tok, "?")
    reader = activation_reader(store, acts)
    rows, examples, views = load_examples(store, split, reader, "train", tok, ph_id, layer)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    val, train = order[: args.val - args.val % args.k], order[args.val: args.val + args.train]
    mean = np.concatenate([views[i] for i in train]).mean(0)

    def turn_of(i: int) -> tuple[int, ...]:
        ids, n_prefix = reader.tokens(rows[i]["dialog_id"], layer)
        return tuple(ids[n_prefix:])

    by_turn: dict[tuple[int, ...], list[np.ndarray]] = {}
    for i in train:
        by_turn.setdefault(turn_of(i), []).append(views[i])
    baseline = {turn: np.mean(vs, axis=0) for turn, vs in by_turn.items()}
    unseen_turns = {turn_of(i) for i in val} - set(baseline)
    assert not unseen_turns, f"{len(unseen_turns)} user turns of the scored labels never occur in training"
    print(f"{len(train)} training labels, {len(val)} unseen labels in blocks of {args.k}; layer {layer}; "
          f"{args.steps} steps at batch 8; chance {1 / args.k:.3f}", flush=True)
    for name in args.levers.split(","):
        lever = LEVERS[name]
        write = layer if lever["write_layer"] is None else lever["write_layer"]
        shown = [np.ascontiguousarray(v - mean) if lever["centre"] else v for v in views]
        exs = examples
        if lever.get("diff"):
            shown = list(views)
            for i in [*train, *val]:
                shown[i] = np.ascontiguousarray(views[i] - baseline[turn_of(i)])
        if lever.get("unmasked"):  # read live from position 1 on (position 0 is the attention sink)
            shown, keep = list(views), sorted(set(train) | set(val))
            spans = [EncodedDialog(reader.tokens(rows[i]["dialog_id"], layer)[0], 1) for i in keep]
            with torch.no_grad():
                for i, a in zip(keep, read_spans(loaded.model, spans, layer, tok.eos_token_id)):
                    shown[i] = a
            exs = list(examples)
            for i in keep:
                exs[i] = encode_example(tok, len(shown[i]), rows[i]["question"], rows[i]["answer"], ph_id)
        cfg = TrainConfig(write_layer=write, norm_match=lever["norm_match"], lr=3e-4, batch_size=8,
                          warmup_steps=20, max_steps=args.steps, lora_dropout=0.0, checkpoint_every=10**6)
        model = load_model("smollm2-135m-instruct", dtype="float32", device="cpu").model
        decoder = make_decoder(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
        start = time.perf_counter()
        pos = fit(decoder, ([exs[i] for i in train], [shown[i] for i in train]), ([], []), cfg,
                  tok.eos_token_id, torch.device("cpu"))
        trained = time.perf_counter() - start
        decoder.eval()
        hits, gaps = [], []
        for b in range(0, len(val), args.k):
            block = val[b: b + args.k]
            for j in block:  # answer j under each block member's activations
                loss = answer_losses(decoder, tok, [shown[i] for i in block], [rows[j]["question"]] * len(block),
                                     [rows[j]["answer"]] * len(block), ph_id, write, lever["norm_match"])
                own = loss[block.index(j)]
                others = [x for i, x in zip(block, loss) if i != j]
                hits.append(own < min(others))
                gaps.append(float(np.mean(others)) - own)
        tail = np.mean([c["loss"] for c in pos.curves[-10:]])
        print(f"{name:20s} identification {bootstrap(hits, seed=0)}  loss gap {bootstrap(gaps, seed=0)}  "
              f"final train loss {tail:.3f}  ({trained:.0f} s training)", flush=True)


if __name__ == "__main__":
    main()
