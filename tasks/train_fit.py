"""Fit the train stage's decoder: load the target and the examples, wrap it in LoRA, train, save the adapter.

Used by the stage in its own process (tasks/train.py) and by each data-parallel worker (tasks/train_ddp.py),
which is why it imports no Prefect: a worker on a GPU node needs torch, not the orchestrator.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from latentqa.config import ModelConfig, TrainConfig
from latentqa.decoder import make_decoder, placeholder_id
from latentqa.dialogs import pad_id_of
from latentqa.distributed import rank_and_world
from latentqa.models import load_model
from latentqa.training import Position, fit, total_steps
from storage.checkpoints import latest_checkpoint, save_checkpoint
from storage.manifest import Manifest
from storage import outputs
from storage.store import Store, save_pretrained_atomic
from tasks._data import activation_reader, load_examples


@dataclass(frozen=True)
class FitResult:
    """What fit_decoder hands the stage; from DDP workers it travels as <fp12>.partial/ddp-result.json."""
    steps: int
    curves: list[dict[str, Any]]
    start_step: int
    elapsed: float
    n_examples: int
    n_eval_examples: int
    layer: int
    placeholder_id: int
    device: str



def fit_decoder(cfg: TrainConfig, model: ModelConfig, split: Manifest, acts: Manifest, store: Store, out_dir: Path,
                device: torch.device | None = None, stop_if_gone: int | None = None,
                progress: Callable[[int, int], None] | None = None, log: logging.Logger | None = None) -> FitResult:
    """Load the target and the examples, wrap it in LoRA, fit (resuming from out_dir/checkpoints), save the
    adapter to out_dir/adapter. Runs in the stage's process, or in each DDP worker (`device` set, after the
    process group is up; rank 0 writes). `stop_if_gone`: a pid whose exit stops the run (a killed stage must
    not leave orphaned workers writing into its directory). `progress(done, total)` hears of every step on rank 0,
    and `log` gets a loss line every train.log_every steps: the stage passes Prefect's, a worker its own (it
    imports no Prefect)."""
    rank, world = rank_and_world()
    loaded = load_model(model.name, model.revision, model.dtype, str(device) if device else model.device)
    tok, layer = loaded.tokenizer, cfg.read_layer if cfg.read_layer is not None else outputs.read_layers(acts)[0]
    ph_id = placeholder_id(tok, cfg.placeholder)
    reader = activation_reader(store, acts)  # both splits read the same parts: map them once
    _, *train_set = load_examples(store, split, reader, "train", tok, ph_id, layer, cfg.loss_on_ack,
                                  label_fraction=cfg.label_fraction, seed=cfg.seed)
    _, *eval_set = load_examples(store, split, reader, "eval", tok, ph_id, layer, cfg.loss_on_ack,
                                 limit=cfg.eval_examples)
    if not train_set[0]:
        raise RuntimeError(f"train: {outputs.split_path(store, split, 'train')} has no rows; nothing to train on")
    decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
    if cfg.grad_checkpointing:
        decoder.gradient_checkpointing_enable()
    replica = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        replica = DistributedDataParallel(decoder, device_ids=[loaded.device] if loaded.device.type == "cuda" else None)
    resume = latest_checkpoint(out_dir / "checkpoints")
    start_step = resume[1]["step"] if resume else 0
    total, log = total_steps(len(train_set[0]), cfg), log or logging.getLogger("latentqa")
    tell = progress if progress and rank == 0 else (lambda done, total: None)
    tell(start_step, total)
    pad_id = pad_id_of(tok)
    started = time.monotonic()

    def on_step(pos: Position) -> None:
        if stop_if_gone is not None and not _alive(stop_if_gone):
            raise SystemExit(f"train: the stage process {stop_if_gone} is gone; stopping this worker")
        tell(pos.step, total)
        if rank == 0 and pos.step % cfg.log_every == 0:
            log.info("train: step %d loss %.4f", pos.step, pos.curves[-1]["loss"])

    final = fit(decoder, tuple(train_set), tuple(eval_set), cfg, pad_id, loaded.device, resume=resume,
                on_checkpoint=lambda step, t, m: save_checkpoint(out_dir / "checkpoints", step, t, m),
                on_step=on_step, replica=replica)
    if rank == 0:
        save_pretrained_atomic(decoder, out_dir / "adapter")
    return FitResult(steps=final.step, curves=final.curves, start_step=start_step,
                     elapsed=time.monotonic() - started, n_examples=len(train_set[0]),
                     n_eval_examples=len(eval_set[0]), layer=layer, placeholder_id=ph_id,
                     device=str(loaded.device) if world == 1 else f"{world} x {loaded.device.type}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
