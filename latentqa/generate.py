"""Decoder answers: patch activations at prefill, then greedy decoding with the KV cache."""

from __future__ import annotations

import numpy as np
import torch

from latentqa.decoder import collate, encode_example, write_block
from latentqa.patching import patched_block


@torch.no_grad()
def answer(decoder, tokenizer, acts: list[np.ndarray], questions: list[str], ph_id: int, write_layer: int,
           max_new_tokens: int = 32, norm_match: bool = False) -> list[str]:
    """One greedy answer per (activations, question) pair, generated as one left-padded batch."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples = [encode_example(tokenizer, len(a), q, None, ph_id) for a, q in zip(acts, questions)]
    device = next(decoder.parameters()).device
    batch = collate(examples, acts, pad_id, device, norm_match)
    with patched_block(write_block(decoder, write_layer), batch.patch):
        out = decoder.generate(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
        )
    new = out[:, batch.input_ids.shape[1]:]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
