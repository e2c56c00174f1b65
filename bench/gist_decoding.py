"""Diagnostic: does contrastive decoding let the release decoder write what it reads? Chosen on validation labels.

The release decoder (configs/release.yaml) tells hidden system prompts apart (calibrated identification 0.75,
chance 0.20) but writes generic descriptions: its gist token F1 is level with shuffled and zero activations. The
losses say the activations move its answer; greedy decoding follows the answer prior instead. Contrastive
decoding (latentqa/ranking.py::greedy) scores each token by (1 + a) log p(t | own activations) - a log p(t | zero
activations), among plausible tokens, so what the activations changed is kept.

This picks `a` on labels the decoder never saw and that are not test labels: training-file system prompts
(data/train/system.json) beyond the ones the release config imported, each read under a neutral user turn as
the import does, asked the derived description question. Every condition is decoded the same way: the decoder
with its own activations, with another label's (shuffled), with zeros, and the untrained model with its own.
Reported: token F1 against the derived description, n, seeded 95% intervals, and the paired margin over
shuffled. The test labels are scored only by `latentqa run --config configs/release.yaml` with the chosen `a`.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch

from latentqa.decoder import TrainedDecoder, load_decoder
from latentqa.describe import describe
from latentqa.dialogs import encode_dialog, pad_id_of
from latentqa.evals.harness import Scorer, shuffled_sources
from latentqa.evals.stats import bootstrap, paired
from latentqa.metrics import token_f1
from latentqa.release import NEUTRAL_STIMULI, read_behaviours, split_label
from latentqa.residual import read_spans
from storage.catalog import resolve
from storage.manifest import Manifest
from storage.parquet import read_table
from storage.store import Store


def release_decoder(store: Store, ref: str | None = None) -> tuple[Manifest, TrainedDecoder, set[str]]:
    """The store's trained decoder named by `ref` (a fingerprint prefix or a path inside its directory), else its
    newest (float32, CPU), and the labels its import stage read."""
    trains = [m for m in store.manifests() if m.stage == "train"]
    if ref is None:
        train = max(trains, key=lambda m: m.created_at)
    else:
        fp = resolve(store, ref)
        (train,) = [m for m in trains if m.fingerprint == fp] or [None]
        if train is None:
            raise LookupError(f"{ref!r} names a stage directory of {store.root} that is not a trained decoder")
    imported = next(m for m in store.manifests() if m.stage == "import")
    labels = set(read_table(store.path(imported, "controls.parquet")).column("label").to_pylist())
    return train, load_decoder(store.path(train), dtype="float32", device="cpu"), labels


def validation_labels(source: Path, imported: set[str], n: int, seed: int) -> list[dict]:
    """n seeded training-file system prompts the store never imported, each with a neutral user turn."""
    rows = [r for r in read_behaviours(source / "data" / "train" / "system.json") if r["label"] not in imported]
    rng = random.Random(seed)
    picked = sorted(rng.sample(rows, n), key=lambda r: r["label"])
    for r in picked:
        r["stimulus_user"] = rng.choice(NEUTRAL_STIMULI)
    return picked


def pairs_of(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(questions, references): each prompt's derived description pair, as the import derives it."""
    qa = [describe(split_label(r["label"])[0], r["control_user"]) for r in rows]
    return [q for q, _ in qa], [a for _, a in qa]


def read_prompts(net, tok, info, rows: list[dict], batch_size: int = 8) -> list[np.ndarray]:
    """The target's (adapter off) activations of each system prompt's read span."""
    with torch.no_grad(), net.disable_adapter():
        return read_spans(net, [encode_dialog(tok, r, "system") for r in rows], info.read_layer, pad_id_of(tok),
                          batch_size)


def read_texts(tok, rows: list[dict]) -> list[str]:
    """What the text-only reader gets: each read span (after the masked system prompt) as text."""
    encoded = [encode_dialog(tok, r, "system") for r in rows]
    return [tok.decode(e.token_ids[e.n_prefix:], skip_special_tokens=True).strip() for e in encoded]


def gist_f1(scorer: Scorer, acts, questions, references, labels, seed: int, untrained: bool = False,
            texts: list[str] | None = None) -> tuple[dict[str, list[float]], list[str]]:
    """({condition: token F1 per item}, the decoder's replies) under the decoder, shuffled and zero activations,
    and if asked the untrained model with the item's own (untrained_patch) and reading `texts` (text_only)."""
    conditions = [("decoder", acts, True), ("shuffled", [acts[j] for j in shuffled_sources(labels, seed)], True),
                  ("zero", [np.zeros_like(x) for x in acts], True)] + ([("untrained_patch", acts, False)] if untrained else [])
    f1, replies = {}, []
    for condition, shown, on in conditions:
        read = scorer.read(shown, questions, [[ref] for ref in references], trained=on)
        f1[condition] = [token_f1(reply, ref) for (reply, _), ref in zip(read, references)]
        replies = replies or [reply for reply, _ in read]
    if texts is not None:
        read = scorer.read_text(texts, questions, [[ref] for ref in references])
        f1["text_only"] = [token_f1(reply, ref) for (reply, _), ref in zip(read, references)]
    return f1, replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/release")
    parser.add_argument("--source", default="../shared/latentqa_data")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--contrast", default="0,0.5,1,2", help="values of a, comma separated")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--text-only", action="store_true", help="also score the text-only reader")
    args = parser.parse_args()
    torch.manual_seed(0)
    train, trained, labels = release_decoder(Store(args.store))
    net, tok, info = trained.net, trained.tokenizer, trained.info
    rows = validation_labels(Path(args.source), labels, args.n, args.seed)
    questions, references = pairs_of(rows)
    acts = read_prompts(net, tok, info, rows)
    print(f"decoder train/{train.fingerprint[:12]} (write {info.write_layer}, read {info.read_layer}); n = {len(rows)} "
          f"unseen training-file labels; token F1 against the derived description", flush=True)
    for a in [float(x) for x in args.contrast.split(",")]:
        start = time.perf_counter()
        f1, replies = gist_f1(Scorer(net, tok, info, 64, args.max_new_tokens, decoding="contrastive" if a > 0 else "greedy",
                                    contrast=a or 1.0), acts, questions,
                              references, [r["label"] for r in rows], args.seed, untrained=True,
                              texts=read_texts(tok, rows) if args.text_only else None)
        line = "  ".join(f"{c} {bootstrap(v, 0)}" for c, v in f1.items())
        margin = paired(f1["decoder"], f1["shuffled"], 0)
        print(f"a = {a:<4} {line}  margin over shuffled {margin}  ({time.perf_counter() - start:.0f} s)", flush=True)
        for e, ref in zip(replies[:3], references):
            print(f"    {e!r}\n      ref {ref!r}", flush=True)


if __name__ == "__main__":
    main()
