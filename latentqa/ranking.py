"""Read a prompt once, then answer and score from it: one prefill serves the greedy reply and every continuation.

Evaluation asks two things of each (activations, question) prompt: the decoder's greedy reply, and the loss of
known continuations (the reference answer, or the K candidates of identification). Scoring each continuation as
a full sequence repeats the prompt once per continuation, and generating repeats it once more. Here each prompt
is one prefill (with the activations patched in, as `answer_losses` does); continuations run from copies of its
KV cache, so a continuation costs only its own tokens, and the reply is decoded from the same cache, each row
leaving the batch at its end-of-sequence token. Losses equal `answer_losses` / `text_losses` of the same
(prompt, continuation) and replies equal `answer` / `text_answers`, up to float rounding (bench/evaluate.py
measures both).
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import cross_entropy

from latentqa.decoder import collate, encode_example, write_block
from latentqa.dialogs import encode, pad_id_of
from latentqa.generate import _text_prompt, next_token_ce
from latentqa.padding import left_pad, right_pad
from latentqa.patching import patched_block


@dataclass
class Prefill:
    """A left-padded prompt batch after one forward: its KV cache, the logits at the last position [B, V], the
    attention mask and position ids [B, W]."""

    cache: object
    last_logits: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor


@torch.no_grad()
def prefill(model, prompts: list[list[int]], pad_id: int, patch=None) -> Prefill:
    """One forward over the left-padded prompts; `patch(width)` is a context that patches this pass only."""
    ids, mask = left_pad(prompts, pad_id, next(model.parameters()).device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with patch(ids.shape[1]) if patch else nullcontext():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    return Prefill(out.cache, out.logits[:, -1].float(), mask, positions)


def rows_of(cache, idx: list[int]):
    """A cache of the rows `idx` (repeats allowed), leaving `cache` as it was: selecting rebinds each layer's
    tensors to new ones, so shallow copies of the layers suffice. A run of consecutive rows is a view, not a copy."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    if idx == list(range(idx[0], idx[0] + len(idx))):
        for layer in out.layers:
            if layer.keys is not None and layer.keys.numel():
                layer.keys, layer.values = layer.keys[idx[0]: idx[0] + len(idx)], layer.values[idx[0]: idx[0] + len(idx)]
    else:
        out.batch_select_indices(torch.tensor(idx, device=cache.layers[0].keys.device))
    return out


@torch.no_grad()
def score_continuations(model, pre: Prefill, continuations: list[list[list[int]]], pad_id: int,
                        max_rows: int = 32) -> list[list[float]]:
    """Mean cross-entropy of each continuation (token ids) after its prompt, at most `max_rows` continuations per
    forward (their logits dominate memory), grouped by length (less padding). `pre` is left as it was."""
    device = pre.mask.device
    flat = [(b, c) for b, cs in enumerate(continuations) for c in cs]
    order = sorted(range(len(flat)), key=lambda i: (len(flat[i][1]), i))
    per = [0.0] * len(flat)
    for start in range(0, len(flat), max_rows):
        chunk = sorted(order[start: start + max_rows])  # prompt order within a chunk: often a view of the cache
        owners = [flat[i][0] for i in chunk]
        ids, _ = right_pad([flat[i][1] for i in chunk], pad_id, device)
        labels, _ = right_pad([flat[i][1] for i in chunk], -100, device)
        width = ids.shape[1]
        owner = torch.tensor(owners, device=device)
        mask = torch.cat([pre.mask[owner], (labels != -100).long()], dim=1)
        positions = pre.positions[owner, -1:] + 1 + torch.arange(width, device=device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       cache=rows_of(pre.cache, owners)).logits
        # continuation token j is predicted by the position before it: the prompt's last one for j = 0
        ce = cross_entropy(pre.last_logits[owner], labels[:, 0], ignore_index=-100, reduction="none") + \
            next_token_ce(logits, labels).sum(-1)
        for i, value in zip(chunk, (ce / (labels != -100).sum(-1).clamp_min(1)).tolist()):
            per[i] = value
    out, k = [], 0
    for cs in continuations:
        out.append(per[k: k + len(cs)])
        k += len(cs)
    return out


@torch.no_grad()
def greedy(model, pre: Prefill, max_new_tokens: int, eos_id: int, null: Prefill | None = None,
           contrast: float = 0.0, plausible: float = 0.1, temperature: float = 0.0,
           generator: torch.Generator | None = None) -> list[list[int]]:
    """Greedy token ids after each prompt, up to and including its end-of-sequence token. A row that ends leaves
    the batch, so later steps cost only the rows still writing. Consumes `pre.cache` (and `null.cache`).

    With `null` (the same prompts read with nothing informative patched in) and `contrast` = a > 0, each token
    maximises (1 + a) log p(t | prompt) - a log p(t | null prompt) among the tokens whose p(t | prompt) is at
    least `plausible` times the most likely one's: contrastive (context-aware) decoding, Li et al. 2023 and Shi
    et al. 2024. A decoder that has learned a strong answer prior writes the same generic answer whatever it
    reads; this keeps what the activations changed and drops what it would have said anyway.

    With `temperature` > 0 each token is sampled from the softmax at that temperature instead (with `generator`,
    reproducibly): the candidates of `rerank`."""
    rows = pre.mask.shape[0]
    out: list[list[int]] = [[] for _ in range(rows)]
    if max_new_tokens <= 0:
        return out
    contrasting = null is not None and contrast > 0
    alive = torch.arange(rows, device=pre.mask.device)
    cache, mask, position = pre.cache, pre.mask, pre.positions[:, -1:]
    if contrasting:
        null_cache, null_mask, null_position = null.cache, null.mask, null.positions[:, -1:]
    def choose(logits, null_logits):
        if temperature > 0:
            probs = (logits.float() / temperature).softmax(-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return _choose(logits, null_logits, contrast, plausible)

    token = choose(pre.last_logits, null.last_logits if contrasting else None)
    for step in range(max_new_tokens):
        for r, t in zip(alive.tolist(), token.tolist()):
            out[r].append(t)
        going = token != eos_id
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, mask, position, token = alive[keep], mask[keep], position[keep], token[keep]
            if contrasting:
                null_cache.batch_select_indices(keep)
                null_mask, null_position = null_mask[keep], null_position[keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position + 1
        logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, cache=cache).logits
        null_logits = None
        if contrasting:
            null_mask = torch.cat([null_mask, torch.ones_like(null_mask[:, :1])], dim=1)
            null_position = null_position + 1
            null_logits = model(input_ids=token[:, None], attention_mask=null_mask, position_ids=null_position,
                                cache=null_cache).logits[:, -1]
        token = choose(logits[:, -1], null_logits)
    return out


def repeated(pre: Prefill, idx: list[int]) -> Prefill:
    """The prefill of the rows `idx` (repeats allowed), leaving `pre` as it was: a cache to decode from."""
    return Prefill(rows_of(pre.cache, idx), pre.last_logits[idx], pre.mask[idx], pre.positions[idx])


@torch.no_grad()
def rerank(model, pre: Prefill, null: Prefill, max_new_tokens: int, eos_id: int, pad_id: int, samples: int,
           temperature: float, generator: torch.Generator, max_rows: int = 32, plausible: float = 0.1) -> list[list[int]]:
    """Per prompt, the answer whose loss the prompt's activations lower most against `null` (the same prompt
    read with zero activations), among its greedy answer and `samples` sampled ones: what the decoder says
    because of what it reads, not what it would say anyway. The ranking signal of calibrated identification
    (a description's loss under the activations relative to its loss without them) used to choose what is said.
    Only plausible answers compete: those whose mean token loss under the prompt is within log(1/`plausible`)
    of the lowest one's, as contrastive decoding keeps only plausible tokens (a sample of noise is unlikely
    under both prompts, and the difference of two large losses says nothing). A tie (as under zero
    activations, where both losses agree) keeps the greedy answer. `pre` and `null` are left as they were."""
    rows = pre.mask.shape[0]
    chosen: list[list[int]] = []
    per = max(1, max_rows // (samples + 1))  # prompts decoded together: each brings samples + 1 rows of cache
    for start in range(0, rows, per):
        idx = list(range(start, min(rows, start + per)))
        first = greedy(model, repeated(pre, idx), max_new_tokens, eos_id)
        drawn = greedy(model, repeated(pre, [i for i in idx for _ in range(samples)]), max_new_tokens, eos_id,
                       temperature=temperature, generator=generator)
        options = [[list(o) for o in dict.fromkeys(map(tuple, [first[j], *drawn[j * samples: (j + 1) * samples]]))]
                   for j in range(len(idx))]
        own = score_continuations(model, repeated(pre, idx), options, pad_id, max_rows)
        base = score_continuations(model, repeated(null, idx), options, pad_id, max_rows)
        for opts, o, b in zip(options, own, base):
            floor = min(o) - math.log(plausible)
            gain = [x - y if y <= floor else -math.inf for x, y in zip(b, o)]
            chosen.append(opts[max(range(len(opts)), key=lambda k: (gain[k], -k))])
    return chosen


def _choose(logits: torch.Tensor, null_logits: torch.Tensor | None, contrast: float, plausible: float) -> torch.Tensor:
    """The next token of each row: the argmax, or the contrastive choice of `greedy`."""
    if null_logits is None:
        return logits.float().argmax(-1)
    logp, null_logp = logits.float().log_softmax(-1), null_logits.float().log_softmax(-1)
    score = (1 + contrast) * logp - contrast * null_logp
    floor = logp.max(-1, keepdim=True).values + math.log(plausible)
    return score.masked_fill(logp < floor, -math.inf).argmax(-1)


def replies(tokenizer, ids: list[list[int]]) -> list[str]:
    """Token ids as the reply text (end-of-sequence and other special tokens dropped)."""
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def continuation_losses(model, prompts: list[list[int]], continuations: list[list[list[int]]], pad_id: int,
                        patch=None, max_rows: int = 32) -> list[list[float]]:
    """Each continuation's loss after its prompt (one prefill per prompt)."""
    return score_continuations(model, prefill(model, prompts, pad_id, patch), continuations, pad_id, max_rows)


def decoder_prompts(decoder, tokenizer, acts, questions, continuations, ph_id, write_layer, norm_match):
    """(prompt ids, continuation ids, the patch of the prompt pass) for the decoder reading `acts`; each
    continuation is a text answered after the question."""
    examples = [encode_example(tokenizer, len(a), q, None, ph_id) for a, q in zip(acts, questions)]
    prompts = [e.input_ids for e in examples]
    conts = [[encode_example(tokenizer, len(a), q, c, ph_id).input_ids[len(p):] for c in cs]
             for a, q, cs, p in zip(acts, questions, continuations, prompts)]
    device = next(decoder.parameters()).device

    def patch(width: int):
        batch = collate(examples, acts, pad_id_of(tokenizer), device, norm_match)
        assert batch.input_ids.shape[1] == width, f"prompt width {batch.input_ids.shape[1]} != {width}"
        return patched_block(write_block(decoder, write_layer), batch.patch)

    return prompts, conts, patch


def text_prompts(tokenizer, texts, questions, continuations):
    """(prompt ids, continuation ids) for the text-only reader: the dialog as text, then the question."""
    prompts = [_text_prompt(tokenizer, t, q) for t, q in zip(texts, questions)]
    return prompts, [[encode(tokenizer, c) + [tokenizer.eos_token_id] for c in cs] for cs in continuations]


def decoder_candidate_losses(decoder, tokenizer, acts: list[np.ndarray], questions: list[str],
                             candidates: list[list[str]], ph_id: int, write_layer: int,
                             norm_match: bool = False) -> list[list[float]]:
    """Per item, the loss of each candidate answer under the decoder with the item's activations patched in."""
    prompts, conts, patch = decoder_prompts(decoder, tokenizer, acts, questions, candidates, ph_id, write_layer,
                                             norm_match)
    return continuation_losses(decoder, prompts, conts, pad_id_of(tokenizer), patch)


def text_candidate_losses(model, tokenizer, texts: list[str], questions: list[str],
                          candidates: list[list[str]]) -> list[list[float]]:
    """Per item, the loss of each candidate after the text-only reader's prompt (no activations)."""
    prompts, conts = text_prompts(tokenizer, texts, questions, candidates)
    return continuation_losses(model, prompts, conts, pad_id_of(tokenizer))
