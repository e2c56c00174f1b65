"""Rank candidate answers after a shared prompt: the prompt runs once, its KV cache serves every candidate.

Identification scores K candidate answers to one question about one item's activations. Scoring each as a
full sequence (placeholders + question + candidate) repeats the prompt K times; here each prompt is one
prefill (with the activations patched in, as `answer_losses` does) and the K candidates continue from its
cache, so a candidate costs only its own tokens. The losses equal `answer_losses` / `text_losses` of the same
(prompt, candidate) up to float rounding (bench/evaluate.py measures it).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from latentqa.decoder import collate, encode_example, write_block
from latentqa.dialogs import encode, pad_id_of
from latentqa.patching import patched_block


@torch.no_grad()
def continuation_losses(model, prompts: list[list[int]], continuations: list[list[list[int]]], pad_id: int,
                        patch=None) -> list[list[float]]:
    """Mean cross-entropy of each continuation (token ids) after its prompt; `patch(seq_len)` is a context that
    patches the prefill (the prompt pass) only. Prompts are left-padded, continuations right-padded."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):], mask[b, width - len(p):] = torch.tensor(p), 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with patch(width) if patch else nullcontext():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    owner = torch.tensor([b for b, cs in enumerate(continuations) for _ in cs], device=device)
    flat = [c for cs in continuations for c in cs]
    cache = out.cache
    cache.batch_select_indices(owner)  # each prompt's cache, once per candidate
    c_width = max(len(c) for c in flat)
    c_ids = torch.full((len(flat), c_width), pad_id, dtype=torch.long)
    labels = torch.full_like(c_ids, -100)
    for i, c in enumerate(flat):
        c_ids[i, : len(c)] = labels[i, : len(c)] = torch.tensor(c)
    c_ids, labels = c_ids.to(device), labels.to(device)
    c_mask = torch.cat([mask[owner], (labels != -100).long()], dim=1)
    c_pos = positions[owner, -1:] + 1 + torch.arange(c_width, device=device)
    logits = model(input_ids=c_ids, attention_mask=c_mask, position_ids=c_pos, cache=cache).logits
    # candidate token j is predicted by the position before it: the prompt's last one for j = 0
    pred = torch.cat([out.logits[owner, -1:].float(), logits[:, :-1].float()], dim=1)
    ce = torch.nn.functional.cross_entropy(pred.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    per = (ce.sum(-1) / (labels != -100).sum(-1).clamp_min(1)).tolist()
    out_losses, k = [], 0
    for cs in continuations:
        out_losses.append(per[k: k + len(cs)])
        k += len(cs)
    return out_losses


def decoder_candidate_losses(decoder, tokenizer, acts: list[np.ndarray], questions: list[str],
                             candidates: list[list[str]], ph_id: int, write_layer: int,
                             norm_match: bool = False) -> list[list[float]]:
    """Per item, the loss of each candidate answer under the decoder with the item's activations patched in."""
    examples = [encode_example(tokenizer, len(a), q, None, ph_id) for a, q in zip(acts, questions)]
    prompts = [e.input_ids for e in examples]
    conts = [[encode_example(tokenizer, len(a), q, c, ph_id).input_ids[len(p):] for c in cands]
             for a, q, cands, p in zip(acts, questions, candidates, prompts)]
    pad_id = pad_id_of(tokenizer)
    device = next(decoder.parameters()).device

    def patch(width: int):
        batch = collate(examples, acts, pad_id, device, norm_match)
        assert batch.input_ids.shape[1] == width, f"prompt width {batch.input_ids.shape[1]} != {width}"
        return patched_block(write_block(decoder, write_layer), batch.patch)

    return continuation_losses(decoder, prompts, conts, pad_id, patch)


def text_candidate_losses(model, tokenizer, texts: list[str], questions: list[str],
                          candidates: list[list[str]]) -> list[list[float]]:
    """Per item, the loss of each candidate after the text-only reader's prompt (no activations)."""
    from latentqa.generate import _text_prompt

    prompts = [_text_prompt(tokenizer, t, q) for t, q in zip(texts, questions)]
    conts = [[encode(tokenizer, c) + [tokenizer.eos_token_id] for c in cands] for cands in candidates]
    return continuation_losses(model, prompts, conts, pad_id_of(tokenizer))
