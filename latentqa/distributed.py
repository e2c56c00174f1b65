"""Data-parallel decoder training: the process group `accelerate launch` (torchrun underneath) sets up.

One optimizer step consumes `train.grad_accum` batches in total; with W processes each takes every W-th of
them and DDP averages the gradients, so W processes compute the step one process would (up to the order of
float additions) and `train.processes` never changes what is learned. NCCL on CUDA (one GPU per process),
gloo on CPU (how the tests check the mechanism without GPUs).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(use_cuda: bool = True) -> torch.device | None:
    """Join the group the launcher describes (WORLD_SIZE, RANK, MASTER_ADDR/PORT); the process's device, or
    None when not launched as one of several."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if use_cuda and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return device


def resolve_processes(requested: int | str, grad_accum: int, device_type: str) -> int:
    """`auto`: one process per visible GPU, as many as divide grad_accum (each step's batches are shared out)."""
    if requested != "auto":
        return int(requested)
    gpus = torch.cuda.device_count() if device_type == "cuda" else 0
    return max((n for n in range(1, max(gpus, 1) + 1) if grad_accum % n == 0), default=1)


def from_last_rank(value: float, device: torch.device) -> float:
    """The value the highest rank holds (it ran the step's last batch: what one process would have logged)."""
    _, world = rank_and_world()
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=world - 1)
    return float(t.item())


def gather_rng(device: torch.device) -> list[torch.Tensor]:
    """Every rank's RNG state (CPU, then its CUDA device's), in rank order. Collective: every rank calls it."""
    state = torch.get_rng_state()
    if device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(device)])
    out: list = [None] * rank_and_world()[1]
    dist.all_gather_object(out, state)
    return out


def set_rng(state: torch.Tensor, device: torch.device) -> None:
    n_cpu = torch.get_rng_state().numel()
    torch.set_rng_state(state[:n_cpu])
    if device.type == "cuda" and state.numel() > n_cpu:
        torch.cuda.set_rng_state(state[n_cpu:], device)
