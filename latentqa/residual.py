"""Read the residual stream: the output of block L (== hidden_states[L+1]) with an early-stopped forward.

Blocks after the deepest layer read are never run: a hook raises once it has what it needs.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
from torch import nn

from latentqa.models import find_blocks
from latentqa.padding import right_pad


class _StopForward(Exception):
    pass


def block_hidden(output) -> torch.Tensor:
    """A decoder block returns a tensor or a tuple whose first item is the hidden state."""
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def _capture(blocks: nn.ModuleList, layers: list[int], out: dict[int, torch.Tensor], stop_after: int | None):
    # hooks belong to the module, not the call: a forward of the same model on another thread (CPU extraction
    # runs batches on one thread per core) must pass through them untouched
    caller = threading.get_ident()
    handles = []
    for layer in layers:
        def hook(_module, _inputs, output, layer=layer):
            if threading.get_ident() != caller:
                return
            out[layer] = block_hidden(output)
            if stop_after is not None and layer == stop_after:
                raise _StopForward
        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def read_layers_with_grad(model: nn.Module, input_ids_bt: torch.Tensor, mask_bt: torch.Tensor, layers: list[int],
                          early_stop: bool = True) -> dict[int, torch.Tensor]:
    """read_layers, keeping the autograd graph (steering backpropagates through the reads into the target)."""
    blocks = find_blocks(model)
    bad = [l for l in layers if not 0 <= l < len(blocks)]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: the model has {len(blocks)} blocks")
    out: dict[int, torch.Tensor] = {}
    body = getattr(model, "model", model)  # the decoder stack without the LM head
    with _capture(blocks, sorted(set(layers)), out, max(layers) if early_stop else None):
        try:
            body(input_ids=input_ids_bt, attention_mask=mask_bt, use_cache=False)
        except _StopForward:
            pass
    return out


@torch.no_grad()
def read_layers(model: nn.Module, input_ids_bt: torch.Tensor, mask_bt: torch.Tensor, layers: list[int],
                early_stop: bool = True) -> dict[int, torch.Tensor]:
    """{layer: acts_btd} for the given blocks; right padding keeps real positions exact (causal attention)."""
    return read_layers_with_grad(model, input_ids_bt, mask_bt, layers, early_stop)


def read_spans(model: nn.Module, encoded: list, layer: int, pad_id: int, batch_size: int = 8) -> list:
    """[n, d] float32 arrays of block `layer`'s output at positions [n_prefix, len) of each encoded dialog
    (anything with `token_ids` and `n_prefix`), read in right-padded batches."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i: i + batch_size]
        ids, mask = right_pad([e.token_ids for e in chunk], pad_id)
        acts = read_layers(model, ids.to(device), mask.to(device), [layer])[layer]
        out += [acts[b, e.n_prefix: len(e.token_ids)].float().cpu().numpy() for b, e in enumerate(chunk)]
    return out


def length_batches(lengths: dict[str, int], batch_tokens: int) -> list[list[str]]:
    """Group ids of similar length so that padded tokens per batch stay under batch_tokens; longest first, so
    a batch that does not fit in memory fails at the start rather than the end."""
    batches, cur = [], []
    for key in sorted(lengths, key=lambda k: (-lengths[k], k)):
        width = lengths[cur[0]] if cur else lengths[key]
        if cur and width * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(key)
    return batches + ([cur] if cur else [])
