"""Reading many dialogs at once: which can be read, how they are cut into parts and batches, the forward passes.

The extract stage (tasks/extract.py) tells the story: encode, plan the parts, read each part, write it. The
mechanics are here: dialogs that cannot be read get a reason; parts hold about `part_tokens` read tokens each
(consecutive dialog ids, so a part's content is fixed by the plan); batches group similar lengths under a token
budget; on CPU one batch runs per core (latentqa/cores.py), elsewhere one after another, and on CUDA
out-of-memory the budget is halved and the rest re-batched.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from latentqa.cores import map_per_core
from latentqa.dialogs import encode_dialog, pad_id_of
from latentqa.residual import length_batches, read_layers
from latentqa.padding import right_pad
from latentqa.rejections import reject

log = logging.getLogger("latentqa")


def encode_all(tokenizer, dialogs: list[dict], variant: str, max_tokens: int, step: str = "extract"
               ) -> tuple[list[dict], list[dict]]:
    """Kept dialogs as {dialog_id, label, token_ids, n_prefix}; the others as rejected rows with a reason."""
    kept, rejected = [], []
    for d in dialogs:
        try:
            enc = encode_dialog(tokenizer, d, d.get("variant") or variant)
        except ValueError as err:
            rejected.append(reject(d["dialog_id"], step, "empty_dialog", str(err), d["label"]))
            continue
        if len(enc.token_ids) > max_tokens:
            rejected.append(reject(d["dialog_id"], step, "exceeds_context",
                                   f"{len(enc.token_ids)} > {max_tokens} tokens", d["label"]))
            continue
        kept.append({"dialog_id": d["dialog_id"], "label": d["label"], "token_ids": enc.token_ids,
                     "n_prefix": enc.n_prefix})
    return kept, rejected


def plan_parts(kept: list[dict], part_tokens: int) -> list[list[dict]]:
    """Consecutive slices of the dialogs (sorted by id) holding about part_tokens kept tokens each."""
    parts, cur, n = [], [], 0
    for d in sorted(kept, key=lambda d: d["dialog_id"]):
        cur.append(d)
        n += len(d["token_ids"]) - d["n_prefix"]
        if n >= part_tokens:
            parts, cur, n = parts + [cur], [], 0
    return parts + ([cur] if cur else [])


def read_batches(loaded, dialogs: list[dict], layers: list[int], batch_tokens: int,
                 per_core: bool = True, on_batch: Callable[[int], None] | None = None) -> dict[int, dict[str, Any]]:
    """{layer: {dialog_id: acts [n_kept, d]}}. On CPU with `per_core`, one batch per core at a time (see
    latentqa/cores.py); otherwise one after another. `on_batch(n)` is told of each batch of n dialogs read."""
    by_id = {d["dialog_id"]: d for d in dialogs}
    lengths = {i: len(d["token_ids"]) for i, d in by_id.items()}
    batches = length_batches(lengths, batch_tokens)

    def forward(batch: list[str]) -> dict[int, dict[str, Any]]:
        return _forward(loaded, [by_id[i] for i in batch], layers)

    if loaded.device.type == "cpu" and per_core:
        results = map_per_core(forward, batches)
    else:
        results = _one_at_a_time(forward, batches, lengths, batch_tokens)
    out: dict[int, dict[str, Any]] = {l: {} for l in layers}
    for acts in results:
        for layer in layers:
            out[layer].update(acts[layer])
        if on_batch:
            on_batch(len(acts[layers[0]]))
    return out


def _one_at_a_time(forward, pending: list[list[str]], lengths: dict[str, int], batch_tokens: int):
    """forward(batch) for each batch in turn; on CUDA out-of-memory the budget is halved and the rest re-batched."""
    while pending:
        batch = pending.pop(0)
        try:
            acts = forward(batch)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            batch_tokens //= 2
            log.warning("extract: out of memory; batch_tokens halved to %d", batch_tokens)
            pending = length_batches({i: lengths[i] for b in [batch, *pending] for i in b}, batch_tokens)
            continue
        yield acts


def _forward(loaded, batch: list[dict], layers: list[int]) -> dict[int, dict[str, Any]]:
    ids_bt, mask_bt = right_pad([d["token_ids"] for d in batch], pad_id_of(loaded.tokenizer))
    acts_btd = read_layers(loaded.model, ids_bt.to(loaded.device), mask_bt.to(loaded.device), layers)
    return {layer: {d["dialog_id"]: acts_btd[layer][b, d["n_prefix"]: len(d["token_ids"])].float().cpu().numpy()
                    for b, d in enumerate(batch)} for layer in layers}
