"""Benchmark: decoder training with cached activations against the reference design, in one run.

cached     activations read once per dialog (the extract stage's cost, counted), then every step patches them in
           (each dialog has several QA pairs, 4 by default as in the demo config)
reference  the target's forward recomputed for every batch, as the original LatentQA training loop does
           (adapter off, same weights, no grad), then the same step; two variants: a full forward with
           output_hidden_states (the plain way) and one stopped after the read layer (the best a recomputing
           loop can do)
no-patch   the cached loop without the patching hook: the cost of patching itself
full-vocab the cached loop with the loss from logits at every position (`model(..., labels=...)`), where the
           stage projects onto the vocabulary only the columns that predict answer tokens (`labelled_loss`)

Epoch times are measured once each; k-epoch ratios are (k x reference) / (extract + k x cached).
The last line is `cached/reference 1 epoch: X.XX  3 epochs: Y.YY  patching overhead: Z.Z%  full-vocab/cached: W.WW`.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.extract import make_dialogs
from latentqa.config import TrainConfig
from latentqa.decoder import batch_loss, collate, encode_example, labelled_loss, make_decoder, placeholder_id, write_block
from latentqa.dialogs import encode_dialog
from latentqa.models import load_model
from latentqa.residual import read_layers
from latentqa.padding import right_pad
from latentqa.patching import patched_block
from latentqa.training import length_grouped_batches, make_optimizer
from latentqa.extraction import read_batches


def step(decoder, optimizer, batch, write_layer: int, patch: bool = True, full_vocab: bool = False) -> None:
    if full_vocab:
        with patched_block(write_block(decoder, write_layer), batch.patch):
            loss = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, labels=batch.labels).loss
    elif patch:
        loss = batch_loss(decoder, batch, write_layer)
    else:
        loss = labelled_loss(decoder, batch.labels, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--dialogs", type=int, default=12)
    parser.add_argument("--qa-per-dialog", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    loaded = load_model(args.model)
    tok, layer, device = loaded.tokenizer, args.layer, loaded.device
    ph = placeholder_id(tok, "?")
    dialogs = make_dialogs(args.dialogs)
    for d in dialogs:
        d["label"] = d["dialog_id"]
    encoded = [{"dialog_id": d["dialog_id"], "label": d["label"], **encode_dialog(tok, d, "stimulus_completion").__dict__}
               for d in dialogs]
    kept = [e for e in encoded for _ in range(args.qa_per_dialog)]  # one entry per QA example
    cfg = TrainConfig(batch_size=args.batch_size)
    decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, 0.0, cfg.target_modules)
    optimizer, _ = make_optimizer(decoder, cfg)
    questions = ["What is the assistant doing?", "What is the topic?", "How does the reply sound?", "Who is it?"]
    answer = "Answering a question about an everyday topic."

    start = time.perf_counter()
    with decoder.disable_adapter(), torch.no_grad():
        cached = read_batches(loaded, encoded, [layer], 8192)[layer]
    t_extract = time.perf_counter() - start
    examples = [encode_example(tok, len(cached[k["dialog_id"]]), questions[i % len(questions)], answer, ph)
                for i, k in enumerate(kept)]
    batches = length_grouped_batches([len(e.input_ids) for e in examples], cfg.batch_size, 0, 0)
    step(decoder, optimizer, collate([examples[0]], [cached[kept[0]["dialog_id"]]], tok.pad_token_id, device), 0)

    def epoch(mode: str) -> float:
        start = time.perf_counter()
        for idx in batches:
            if mode.startswith("reference"):  # the target pass, recomputed: same weights, adapter switched off
                ids, mask = right_pad([kept[i]["token_ids"] for i in idx], tok.pad_token_id)
                with decoder.disable_adapter(), torch.no_grad():
                    if mode == "reference-full":
                        out = decoder(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      output_hidden_states=True).hidden_states[layer + 1]
                    else:
                        out = read_layers(decoder, ids.to(device), mask.to(device), [layer])[layer]
                acts = [out[b, kept[i]["n_prefix"]: len(kept[i]["token_ids"])] for b, i in enumerate(idx)]
            else:
                acts = [cached[kept[i]["dialog_id"]] for i in idx]
            batch = collate([examples[i] for i in idx], acts, tok.pad_token_id, device)
            step(decoder, optimizer, batch, 0, patch=mode != "no-patch", full_vocab=mode == "full-vocab")
        return time.perf_counter() - start

    t_cached, t_full, t_ref, t_nopatch, t_vocab = (epoch(m) for m in ("cached", "reference-full", "reference",
                                                                      "no-patch", "full-vocab"))
    n = len(examples)
    print(f"dialogs {len(encoded)}  examples {n}  batch {cfg.batch_size}  layer {layer}  device {device}  "
          f"threads {torch.get_num_threads()}")
    print(f"extract once  {t_extract:6.2f} s")
    print(f"cached        {t_cached:6.2f} s/epoch  {n / t_cached:6.2f} ex/s")
    print(f"reference     {t_full:6.2f} s/epoch  {n / t_full:6.2f} ex/s  (full forward)")
    print(f"reference     {t_ref:6.2f} s/epoch  {n / t_ref:6.2f} ex/s  (early-stopped forward)")
    print(f"no-patch      {t_nopatch:6.2f} s/epoch  {n / t_nopatch:6.2f} ex/s")
    print(f"full-vocab    {t_vocab:6.2f} s/epoch  {n / t_vocab:6.2f} ex/s  (logits at every position)")
    overhead = 100 * (t_cached - t_nopatch) / t_nopatch
    for name, t in (("early-stopped reference", t_ref), ("full-forward reference", t_full)):
        r1, r3 = (k * t / (t_extract + k * t_cached) for k in (1, 3))
        print(f"cached vs {name}: 1 epoch {r1:.2f}x, 3 epochs {r3:.2f}x")
    r1, r3 = (k * t_full / (t_extract + k * t_cached) for k in (1, 3))
    print(f"cached/reference 1 epoch: {r1:.2f}  3 epochs: {r3:.2f}  patching overhead: {overhead:.1f}%  "
          f"full-vocab/cached: {t_vocab / t_cached:.2f}")


if __name__ == "__main__":
    main()
