"""Patch activations into the decoder: overwrite block W's output at the placeholder positions.

The overwrite happens on the prompt (prefill) pass only, so cached generation steps run unpatched as in
LatentQA. Optionally each vector is rescaled to the norm of the residual it replaces (Activation Oracles).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from latentqa.residual import block_hidden


@dataclass
class PatchSpec:
    """Where to write: batch rows and positions (both [n]) and the vectors [n, d]; seq_len of the prompt."""

    batch_idx: torch.Tensor
    pos_idx: torch.Tensor
    vectors: torch.Tensor
    seq_len: int
    norm_match: bool = False


def apply_patch(hidden_btd: torch.Tensor, spec: PatchSpec) -> torch.Tensor:
    vectors = spec.vectors.to(hidden_btd.dtype)
    if spec.norm_match:
        old = hidden_btd[spec.batch_idx, spec.pos_idx]
        vectors = vectors * (old.norm(dim=-1, keepdim=True) / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-6))
    patched = hidden_btd.clone()  # out of place: autograd keeps the unpatched graph intact
    patched[spec.batch_idx, spec.pos_idx] = vectors
    return patched


@contextmanager
def patched_block(block: nn.Module, spec: PatchSpec):
    """While active, block's output is overwritten at spec's positions on full-length (prefill) passes."""

    def hook(_module, _inputs, output):
        hidden = block_hidden(output)
        if hidden.shape[1] != spec.seq_len:
            return None  # a cached decoding step: nothing to patch
        patched = apply_patch(hidden, spec)
        return (patched, *output[1:]) if isinstance(output, tuple) else patched

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
