"""Diagnostic: does the release decoder write test-set gist once it has seen the test's style of question and answer?

The release decoder reads hidden system prompts (identification 0.81 on the test labels) but its gist token F1
is level with shuffled and zero activations there, while on validation labels, asked the derived question it
trained on and scored against a derived description, it reads (bench/gist_more_data.py). The test's gist items
are qa.json's GPT-4o-written pairs: many phrasings of the question, paraphrased answers. The paper trains on
such pairs; the release ships them only for its eval labels (data/train/qa.json is not in ../shared).

So this moves a seeded share of the eval labels into training: their qa.json pairs (the description pair and
the implication pair) continue the decoder's adapter; the other eval labels stay a test set nobody trained on.
Both halves are read as the release config reads them (system prompt masked, a seeded neutral user turn).
Reported on the remaining labels' description pairs, before and after: token F1 under the decoder, shuffled
(another label's activations), zero activations, and once the untrained patch and the text-only reader (neither
reads through the adapter, so training cannot move them); n, seeded 95% intervals, paired margins.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch

from bench.gist_decoding import gist_f1, pairs_of, read_prompts, read_texts, release_decoder
from bench.gist_more_data import report, save_decoder
from latentqa.config import TrainConfig
from latentqa.decoder import encode_example
from latentqa.dialogs import pad_id_of
from latentqa.evals.harness import Scorer
from latentqa.release import NEUTRAL_STIMULI, read_behaviours, read_qa
from latentqa.training import fit
from storage.store import Store


def split_eval_labels(source: Path, share: float, seed: int) -> tuple[list[dict], list[dict], dict]:
    """(rows to learn the style from, rows to test on, qa): the eval system prompts split by label, seeded,
    each with a seeded neutral user turn; none of them was imported for training by configs/release.yaml."""
    rows = read_behaviours(source / "data" / "eval" / "system.json")
    qa = read_qa(source / "data" / "eval" / "qa.json")
    rng = random.Random(seed)
    for r in rows:
        r["stimulus_user"] = rng.choice(NEUTRAL_STIMULI)
    labels = sorted(r["label"] for r in rows)
    rng.shuffle(labels)
    learn = set(labels[: round(share * len(labels))])
    return [r for r in rows if r["label"] in learn], [r for r in rows if r["label"] not in learn], qa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/release")
    parser.add_argument("--decoder", required=True, help="the train stage's fingerprint (12 characters suffice)")
    parser.add_argument("--source", default="../shared/latentqa_data")
    parser.add_argument("--share", type=float, default=0.5, help="of the eval labels, moved into training")
    parser.add_argument("--epochs", type=int, default=1, help="over the learned labels' qa.json pairs")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--derived", action="store_true", help="only score the test labels asked the derived "
                        "question against the derived description (the pair style the decoder trained on), untrained "
                        "further: tells a decoder that does not read from references it cannot match")
    parser.add_argument("--save", type=Path, help="write the continued decoder here (adapter/ + decoder.json)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train, trained, _ = release_decoder(Store(args.store), args.decoder)
    net, tok, info = trained.net, trained.tokenizer, trained.info
    learn, test, qa = split_eval_labels(Path(args.source), args.share, args.seed)
    assert not {r["label"] for r in learn} & {r["label"] for r in test}
    start = time.perf_counter()
    test_acts = read_prompts(net, tok, info, test)
    print(f"decoder train/{train.fingerprint[:12]}: {len(test)} eval labels to test on, read in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    labels = [r["label"] for r in test]

    def score(when: str, questions, references, untrained: bool, fixed: dict | None = None) -> dict[str, list[float]]:
        """Token F1 per condition on the test labels, printed with `fixed` (conditions scored earlier) beside it."""
        start = time.perf_counter()
        f1 = gist_f1(Scorer(net, tok, info, 64, 24), test_acts, questions, references, labels, args.seed,
                     untrained=untrained, texts=read_texts(tok, test) if untrained else None)[0]
        report(f"{when} ({time.perf_counter() - start:.0f} s), n = {len(test)}", {**f1, **(fixed or {})})
        return f1

    if args.derived:
        score("derived pair", *pairs_of(test), untrained=True)
        return
    questions = [qa[r["label"]][0][0] for r in test]  # the description pair, as the gist task asks it
    references = [qa[r["label"]][0][1] for r in test]
    before = score("before", questions, references, untrained=True)
    fixed = {c: before[c] for c in ("untrained_patch", "text_only")}  # neither reads through the adapter

    start = time.perf_counter()
    learn_acts = read_prompts(net, tok, info, learn, batch_size=32)
    print(f"{len(learn)} eval labels to learn the style from, read in {time.perf_counter() - start:.0f} s", flush=True)
    examples, acts = [], []
    for r, a in zip(learn, learn_acts):  # every qa.json pair of a learned label reads that label's activations
        for q, ans in qa[r["label"]]:
            examples.append(encode_example(tok, len(a), q, ans, info.placeholder_id))
            acts.append(a)
    for name, p in net.named_parameters():  # the adapter trains on; the base stays frozen
        p.requires_grad_("lora_" in name)
    cfg = TrainConfig(write_layer=info.write_layer, lr=args.lr, batch_size=8, warmup_steps=10, epochs=args.epochs,
                      checkpoint_every=10**6, eval_every=10**6, seed=args.seed)
    start = time.perf_counter()
    pos = fit(net, (examples, acts), ([], []), cfg, pad_id_of(tok), torch.device("cpu"))
    net.eval()
    tail = np.mean([c["loss"] for c in pos.curves[-10:]])
    print(f"{pos.step} further steps over {len(examples)} qa.json pairs at batch 8 ({time.perf_counter() - start:.0f}"
          f" s), final train loss {tail:.3f}", flush=True)
    score("after", questions, references, untrained=False, fixed=fixed)
    if args.save:
        save_decoder(net, info, args.save)


if __name__ == "__main__":
    main()
