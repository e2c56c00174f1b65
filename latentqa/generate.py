"""Decoder answers: patch activations at prefill, then greedy decoding with the KV cache."""

from __future__ import annotations

import numpy as np
import torch

from latentqa.decoder import collate, encode_example, write_block
from latentqa.dialogs import pad_id_of
from latentqa.padding import left_pad
from latentqa.patching import patched_block


@torch.no_grad()
def answer(decoder, tokenizer, acts: list[np.ndarray], questions: list[str], ph_id: int, write_layer: int,
           max_new_tokens: int = 32, norm_match: bool = False) -> list[str]:
    """One greedy answer per (activations, question) pair, generated as one left-padded batch."""
    pad_id = pad_id_of(tokenizer)
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


@torch.no_grad()
def answer_losses(decoder, tokenizer, acts: list[np.ndarray], questions: list[str], answers: list[str], ph_id: int,
                  write_layer: int, norm_match: bool = False) -> list[float]:
    """Teacher-forced mean cross-entropy of each answer (one value per example, not a batch mean)."""
    pad_id = pad_id_of(tokenizer)
    examples = [encode_example(tokenizer, len(a), q, ans, ph_id) for a, q, ans in zip(acts, questions, answers)]
    device = next(decoder.parameters()).device
    batch = collate(examples, acts, pad_id, device, norm_match)
    with patched_block(write_block(decoder, write_layer), batch.patch):
        logits = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         position_ids=batch.position_ids).logits
    return per_example_ce(logits, batch.labels)


def per_example_ce(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Mean cross-entropy of each row's labels (-100: not scored), each predicted by the position before it."""
    ce = next_token_ce(logits, labels)
    return (ce.sum(-1) / (labels[:, 1:] != -100).sum(-1).clamp_min(1)).tolist()


def next_token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, T] cross-entropy of labels[:, t + 1] under logits[:, t] (0 where not scored, and at t = T - 1).
    Taken over the logits as they lie in memory ([B x T, V], a view): over a transposed [B, V, T] view the
    reduction runs in another order, 10x further from float64 (2.3e-4 vs 2.7e-5 on SmolLM2's logits), and 4x
    slower (a copy of the largest tensor here)."""
    nxt = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), nxt.reshape(-1),
                                             ignore_index=-100, reduction="none").view(nxt.shape)


def _text_prompt(tokenizer, text: str, question: str) -> list[int]:
    from latentqa.dialogs import encode, render

    msgs = [{"role": "user", "content": f"Here is part of a conversation:\n\n{text}\n\n{question}"}]
    return encode(tokenizer, render(tokenizer, msgs, add_generation_prompt=True))


@torch.no_grad()
def greedy_continuations(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy continuations of token-id prompts, generated as one left-padded batch (no patching)."""
    pad_id = pad_id_of(tokenizer)
    ids, mask = left_pad(prompts, pad_id, next(model.parameters()).device)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, ids.shape[1]:]]


def text_answers(model, tokenizer, texts: list[str], questions: list[str], max_new_tokens: int = 32) -> list[str]:
    """The text-only baseline: the model reads the dialog as text (no activations) and answers the question."""
    prompts = [_text_prompt(tokenizer, t, q) for t, q in zip(texts, questions)]
    return greedy_continuations(model, tokenizer, prompts, max_new_tokens)


@torch.no_grad()
def text_losses(model, tokenizer, texts: list[str], questions: list[str], answers: list[str]) -> list[float]:
    """Teacher-forced loss of each answer after the text-only prompt (identification for the text baseline)."""
    from latentqa.dialogs import encode

    pad_id = pad_id_of(tokenizer)
    seqs, labels = [], []
    for t, q, a in zip(texts, questions, answers):
        prompt = _text_prompt(tokenizer, t, q)
        target = encode(tokenizer, a) + [tokenizer.eos_token_id]
        seqs.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    device = next(model.parameters()).device
    ids, mask = left_pad(seqs, pad_id, device)
    lab, _ = left_pad(labels, -100, device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    return per_example_ce(logits, lab)
