"""Token sequences of different lengths as one [B, W] batch, and the mask of the real tokens.

Left padding for prompts that generate or are read at their last position (every row ends in the last column);
right padding for reads of the residual stream (under causal attention the pads after a real token never change
what it reads) and for continuations scored after a cached prompt. Labels pad the same way with -100 (ignored).
"""

from __future__ import annotations

import torch


def left_pad(seqs: list[list[int]], value: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, W], mask [B, W]) with each sequence at the end of its row."""
    return _pad(seqs, value, device, left=True)


def right_pad(seqs: list[list[int]], value: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, W], mask [B, W]) with each sequence at the start of its row."""
    return _pad(seqs, value, device, left=False)


def _pad(seqs: list[list[int]], value: int, device, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[b, cols] = torch.tensor(s, dtype=torch.long)
        mask[b, cols] = 1
    return (ids.to(device), mask.to(device)) if device is not None else (ids, mask)
