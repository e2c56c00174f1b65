"""The decoder's training loop: length-grouped batches, AdamW with warmup, checkpoints that resume exactly.

Everything a resumed run needs is returned as tensors plus JSON-able metadata (adapter weights, optimizer
moments, scheduler position, RNG states, data position), so a checkpoint is a safetensors file, not a pickle.
The data order of an epoch is a function of (seed, epoch), so the data position is just two integers, and the
dropout of each micro-batch is a function of (seed, epoch, micro-batch index).
Under data parallelism (latentqa/distributed.py) each of W processes runs this same loop on every W-th batch of
a step; rank 0 evaluates, logs and checkpoints (with every rank's RNG state).
"""

from __future__ import annotations

import hashlib
import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from latentqa.config import TrainConfig
from latentqa.decoder import batch_loss, collate
from latentqa.distributed import from_last_rank, gather_rng, rank_and_world, set_rng


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group: int = 16) -> list[list[int]]:
    """Shuffle, sort within windows of group*batch_size by length (less padding), cut, shuffle the batches."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start: start + window], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def micro_batch_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed (LoRA dropout) of one micro-batch: a function of the data, not of the process that runs it,
    so N data-parallel processes train the adapter one process trains, dropout included."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    per_epoch = -(-n_examples // cfg.batch_size) // cfg.grad_accum
    return max(1, min(cfg.max_steps or 10**9, cfg.epochs * per_epoch))


@dataclass
class Position:
    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of this epoch already consumed
    curves: list[dict] = field(default_factory=list)


def state_tensors(decoder, optimizer, scheduler, pos: Position) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) that restore training exactly: adapter, AdamW moments, scheduler, RNG, data position.
    Every rank must call it (the RNG states are gathered); rank 0 writes the result."""
    from peft import get_peft_model_state_dict

    tensors = {f"adapter.{k}": v.detach().contiguous() for k, v in get_peft_model_state_dict(decoder).items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).contiguous()
    device = next(decoder.parameters()).device
    if rank_and_world()[1] > 1:
        for rank, state in enumerate(gather_rng(device)):
            tensors[f"rng.rank.{rank}"] = state
    else:
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    meta = {"step": pos.step, "epoch": pos.epoch, "batch": pos.batch, "param_groups": opt["param_groups"],
            "scheduler": sched, "curves": pos.curves}
    return {k: v.cpu() for k, v in tensors.items()}, meta


def load_state(decoder, optimizer, scheduler, tensors: dict[str, torch.Tensor], meta: dict) -> Position:
    from peft import set_peft_model_state_dict

    device = next(decoder.parameters()).device
    adapter = {k[len("adapter."):]: v.to(device) for k, v in tensors.items() if k.startswith("adapter.")}
    set_peft_model_state_dict(decoder, adapter)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    rank, _ = rank_and_world()
    if f"rng.rank.{rank}" in tensors:  # written by as many processes as run now
        set_rng(tensors[f"rng.rank.{rank}"], device)
    elif "rng.cpu" in tensors:  # a single-process checkpoint (elsewhere: the seeds' states, still deterministic)
        torch.set_rng_state(tensors["rng.cpu"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
    return Position(meta["step"], meta["epoch"], meta["batch"], list(meta["curves"]))


def make_optimizer(decoder, cfg: TrainConfig):
    params = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(cfg.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)) if warmup else 1.0)
    return optimizer, scheduler


@torch.no_grad()
def eval_loss(decoder, examples, views, pad_id: int, device, cfg: TrainConfig) -> float:
    was_training = decoder.training
    decoder.eval()
    losses = [float(batch_loss(decoder, collate(examples[i: i + cfg.batch_size], views[i: i + cfg.batch_size], pad_id,
                                                device, cfg.norm_match), cfg.write_layer))
              for i in range(0, len(examples), cfg.batch_size)]
    decoder.train(was_training)
    return sum(losses) / max(len(losses), 1)


def fit(decoder, train: tuple[list, list], held_out: tuple[list, list], cfg: TrainConfig, pad_id: int, device,
        resume: tuple[dict, dict] | None = None, on_checkpoint: Callable[[int, dict, dict], None] | None = None,
        on_step: Callable[[Position], None] | None = None, replica=None) -> Position:
    """Train to total_steps; returns the final position (with its curve). Resumes from (tensors, meta).

    `replica` is the DDP wrapper of `decoder` when several processes train it (rank 0 alone calls on_step and
    on_checkpoint and its curve is the run's)."""
    examples, views = train
    rank, world = rank_and_world()
    if cfg.grad_accum % world:
        raise ValueError(f"train.grad_accum={cfg.grad_accum} cannot be shared by {world} processes")
    per_rank, forward = cfg.grad_accum // world, replica or decoder
    optimizer, scheduler = make_optimizer(decoder, cfg)
    pos = load_state(decoder, optimizer, scheduler, *resume) if resume else Position()
    total, lengths = total_steps(len(examples), cfg), [len(e.input_ids) for e in examples]
    decoder.train()
    while pos.step < total and pos.epoch < cfg.epochs:
        batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, pos.epoch)
        optimizer.zero_grad(set_to_none=True)
        while pos.batch + cfg.grad_accum <= len(batches) and pos.step < total:
            mine = batches[pos.batch + rank: pos.batch + cfg.grad_accum: world]
            for k, idx in enumerate(mine):
                torch.manual_seed(micro_batch_seed(cfg.seed, pos.epoch, pos.batch + rank + k * world))
                batch = collate([examples[i] for i in idx], [views[i] for i in idx], pad_id, device, cfg.norm_match)
                with _sync_unless(replica, last=k == len(mine) - 1):
                    loss = batch_loss(decoder, batch, cfg.write_layer, forward)
                    (loss / per_rank).backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            pos.batch += cfg.grad_accum
            pos.step += 1
            row = {"step": pos.step, "epoch": pos.epoch, "loss": from_last_rank(loss.item(), device),
                   "lr": scheduler.get_last_lr()[0], "eval_loss": None}
            if rank == 0 and held_out[0] and (pos.step % cfg.eval_every == 0 or pos.step == total):
                row["eval_loss"] = eval_loss(decoder, *held_out, pad_id, device, cfg)
            pos.curves.append(row)
            if on_step and rank == 0:
                on_step(pos)
            if on_checkpoint and pos.step % cfg.checkpoint_every == 0 and pos.step < total:
                state = state_tensors(decoder, optimizer, scheduler, pos)
                if rank == 0:
                    on_checkpoint(pos.step, *state)
        pos.epoch, pos.batch = pos.epoch + 1, 0
    return pos


def _sync_unless(replica, last: bool):
    """DDP averages gradients on the last backward of a step only (no_sync on the others)."""
    return replica.no_sync() if replica is not None and not last else nullcontext()
