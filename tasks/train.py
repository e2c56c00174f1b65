"""train: decoder = target + LoRA, taught to answer questions about cached activations patched into it.

Reads   filter/<fp>/{train,eval}.parquet, extract/<fp>/part-*.parquet (zero-copy)
Writes  train/<fp>/{adapter/, decoder.json, curves.parquet, curves.png} + manifest.json   (PROTOCOL.md, "train")
Resume  every train.checkpoint_every steps a checkpoint (adapter, AdamW moments, scheduler, RNG, data position)
        lands in <fp>.partial/checkpoints/step-N/; a rerun after a kill continues from the newest one and ends
        with the adapter an uninterrupted run would have written. Checkpoints are removed at commit.
DDP     with train.processes > 1 (auto: one per GPU) the stage launches that many workers with `accelerate
        launch` (tasks/train_ddp.py); they share each step's batches and rank 0 writes checkpoints and adapter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentqa.config import ModelConfig, TrainConfig
from latentqa.decoder import DecoderInfo, make_decoder, placeholder_id
from latentqa.dialogs import pad_id_of
from latentqa.distributed import rank_and_world, resolve_processes
from latentqa.models import load_model, model_identity, pick_device
from latentqa.training import Position, fit, total_steps
from storage.checkpoints import latest_checkpoint, save_checkpoint
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import CURVES, write_table
from storage.plots import plot_curves
from storage.store import StageDir, Store, save_pretrained_atomic
from tasks._common import (Progress, activation_reader, fail_if_asked, load_examples, logger, provenance, publish,
                           publish_image, stage_task)

STAGE, VERSION = "train", 2


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


def fingerprint_of(p: dict[str, Any]) -> str:
    model = p["model"]
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], model, model_identity(model.name, model.revision)],
                       inputs=[p["split"].fingerprint, p["acts"].fingerprint])


@stage_task(STAGE, fingerprint_of)
def train(cfg: TrainConfig, model: ModelConfig, split: Manifest, acts: Manifest, store: Store) -> Manifest:
    """LoRA fine-tuning of the decoder on (activations, question) -> answer, loss on the answer only."""
    fp = fingerprint_of({"cfg": cfg, "model": model, "split": split, "acts": acts})
    if done := store.finished(STAGE, fp):
        return done
    fail_if_asked(STAGE)
    with store.open_stage(STAGE, fp) as out:
        processes = resolve_processes(cfg.processes, cfg.grad_accum, pick_device(model.device).type)
        if processes > 1:
            result = _fit_in_processes(processes, cfg, model, split, acts, store, out)
        else:
            result = fit_decoder(cfg, model, split, acts, store, out.dir)
        out.remove("checkpoints")  # resume state, not a result
        out.write_json("decoder.json", DecoderInfo(
            base_model=model.name, read_layer=result.layer, write_layer=cfg.write_layer, placeholder=cfg.placeholder,
            placeholder_id=result.placeholder_id, variant=acts.summary["variant"], norm_match=cfg.norm_match).to_json())
        n_curves = write_table(out.file("curves.parquet"), result.curves, CURVES)
        plot_curves(result.curves, out.file("curves.png"))
        summary = _summary(result, cfg)
        manifest = out.commit(version=VERSION, inputs=[split, acts], rows={"curves.parquet": n_curves},
                              counts={"n_examples": result.n_examples, "n_eval_examples": result.n_eval_examples,
                                      "n_steps": result.steps, "resumed_at_step": result.start_step},
                              summary={**summary, "device": result.device, "processes": processes},
                              config={"train": cfg.model_dump(mode="json"), "model": model.model_dump(mode="json")},
                              **provenance())
    publish(manifest, store, figures=summary)
    publish_image(manifest, store, "curves.png", "training curves")
    return manifest


def fit_decoder(cfg: TrainConfig, model: ModelConfig, split: Manifest, acts: Manifest, store: Store, out_dir: Path,
                device: torch.device | None = None, stop_if_gone: int | None = None) -> FitResult:
    """Load the target and the examples, wrap it in LoRA, fit (resuming from out_dir/checkpoints), save the
    adapter to out_dir/adapter. Runs in the stage's process, or in each DDP worker (`device` set, after the
    process group is up; rank 0 writes). `stop_if_gone`: a pid whose exit stops the run (a killed stage must
    not leave orphaned workers writing into its directory)."""
    rank, world = rank_and_world()
    loaded = load_model(model.name, model.revision, model.dtype, str(device) if device else model.device)
    tok, layer = loaded.tokenizer, cfg.read_layer if cfg.read_layer is not None else acts.summary["layers"][0]
    ph_id = placeholder_id(tok, cfg.placeholder)
    reader = activation_reader(store, acts)  # both splits read the same parts: map them once
    _, *train_set = load_examples(store, split, reader, "train.parquet", tok, ph_id, layer, cfg.loss_on_ack)
    _, *eval_set = load_examples(store, split, reader, "eval.parquet", tok, ph_id, layer, cfg.loss_on_ack,
                                 limit=cfg.eval_examples)
    if not train_set[0]:
        raise RuntimeError(f"train: {store.path(split, 'train.parquet')} has no rows; nothing to train on")
    decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
    if cfg.grad_checkpointing:
        decoder.gradient_checkpointing_enable()
    replica = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        replica = DistributedDataParallel(decoder, device_ids=[loaded.device] if loaded.device.type == "cuda" else None)
    resume = latest_checkpoint(out_dir / "checkpoints")
    start_step = resume[1]["step"] if resume else 0
    progress = Progress(total_steps(len(train_set[0]), cfg), "train: optimizer steps") if rank == 0 else None
    if progress:
        progress.advance(start_step)
    pad_id = pad_id_of(tok)
    started = time.monotonic()

    def on_step(pos: Position) -> None:
        if stop_if_gone is not None and not _alive(stop_if_gone):
            raise SystemExit(f"train: the stage process {stop_if_gone} is gone; stopping this worker")
        progress.advance()
        if pos.step % cfg.log_every == 0:
            logger().info("train: step %d loss %.4f", pos.step, pos.curves[-1]["loss"])

    final = fit(decoder, tuple(train_set), tuple(eval_set), cfg, pad_id, loaded.device, resume=resume,
                on_checkpoint=lambda step, t, m: save_checkpoint(out_dir / "checkpoints", step, t, m),
                on_step=on_step, replica=replica)
    if rank == 0:
        save_pretrained_atomic(decoder, out_dir / "adapter")
    return FitResult(steps=final.step, curves=final.curves, start_step=start_step,
                     elapsed=time.monotonic() - started, n_examples=len(train_set[0]),
                     n_eval_examples=len(eval_set[0]), layer=layer, placeholder_id=ph_id,
                     device=str(loaded.device) if world == 1 else f"{world} x {loaded.device.type}")


def _fit_in_processes(processes: int, cfg: TrainConfig, model: ModelConfig, split: Manifest, acts: Manifest,
                      store: Store, out: StageDir) -> FitResult:
    """fit_decoder in `processes` DDP workers started with `accelerate launch` (tasks/train_ddp.py)."""
    out_dir = out.dir
    latest_checkpoint(out_dir / "checkpoints")  # clears half-written checkpoints before the workers read them
    out.remove("ddp-result.json")
    job = out.write_json("ddp-job.json", {
        "store": str(store.root), "dataset": store.dataset, "cfg": cfg.model_dump(mode="json"),
        "model": model.model_dump(mode="json"), "split": split.fingerprint, "acts": acts.fingerprint,
        "out_dir": str(out_dir), "parent": os.getpid()})
    result = out_dir / "ddp-result.json"
    command = launch_command(processes, job)
    logger().info("train: %d data-parallel processes: %s", processes, " ".join(command))
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0 or not result.is_file():
        raise RuntimeError(f"train: the {processes} DDP workers failed (exit {done.returncode}); their output is "
                           f"above, checkpoints stay in {out_dir / 'checkpoints'} for the rerun")
    fitted = FitResult(**json.loads(result.read_text()))
    out.remove("ddp-job.json")
    out.remove("ddp-result.json")
    return fitted


def launch_command(processes: int, job: Path) -> list[str]:
    """`accelerate launch` (torchrun underneath) of the worker module on this machine, on a free port."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
            "--num_processes", str(processes), "--main_process_port", "0", "--mixed_precision", "no",
            "--dynamo_backend", "no", "-m", "tasks.train_ddp", str(job)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _summary(result: FitResult, cfg: TrainConfig) -> dict[str, Any]:
    evals = [c["eval_loss"] for c in result.curves if c["eval_loss"] is not None]
    steps_now = result.steps - result.start_step
    return {"first_loss": result.curves[0]["loss"], "final_loss": result.curves[-1]["loss"], "steps": result.steps,
            "final_eval_loss": evals[-1] if evals else None,
            "examples_per_s": round(steps_now * cfg.batch_size * cfg.grad_accum / result.elapsed, 3)
            if steps_now else None}
