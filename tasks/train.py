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
from pathlib import Path
from typing import Any, Callable

from latentqa.config import ModelConfig, TrainConfig
from latentqa.decoder import DecoderInfo
from latentqa.distributed import resolve_processes
from latentqa.models import model_identity, pick_device
from storage.checkpoints import latest_checkpoint
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import CURVES, write_table
from storage.plots import plot_curves
from storage import outputs
from storage.store import StageDir, Store
from tasks._stage import Made, stage_task
from tasks._ui import Progress, logger
from tasks.train_fit import FitResult, fit_decoder

STAGE, VERSION = "train", 2


def fingerprint_of(p: dict[str, Any]) -> str:
    model = p["model"]
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], model, model_identity(model.name, model.revision)],
                       inputs=[p["split"].fingerprint, p["acts"].fingerprint])


@stage_task(STAGE, VERSION, fingerprint_of)
def train(out: StageDir, cfg: TrainConfig, model: ModelConfig, split: Manifest, acts: Manifest, store: Store) -> Made:
    """LoRA fine-tuning of the decoder on (activations, question) -> answer, loss on the answer only."""
    processes = resolve_processes(cfg.processes, cfg.grad_accum, pick_device(model.device).type)
    if processes > 1:
        result = _fit_in_processes(processes, cfg, model, split, acts, store, out)
    else:
        result = fit_decoder(cfg, model, split, acts, store, out.dir, progress=_progress(), log=logger())
    out.remove("checkpoints")  # resume state, not a result
    out.write_json("decoder.json", DecoderInfo(
        base_model=model.name, read_layer=result.layer, write_layer=cfg.write_layer, placeholder=cfg.placeholder,
        placeholder_id=result.placeholder_id, variant=outputs.variant(acts), norm_match=cfg.norm_match).to_json())
    n_curves = write_table(out.file("curves.parquet"), result.curves, CURVES)
    plot_curves(result.curves, out.file("curves.png"))
    summary = _summary(result, cfg)
    return Made(rows={"curves.parquet": n_curves}, figures=summary, images={"curves.png": "training curves"},
                counts={"n_examples": result.n_examples, "n_eval_examples": result.n_eval_examples,
                        "n_steps": result.steps, "resumed_at_step": result.start_step},
                summary={**summary, "device": result.device, "processes": processes, "pid": os.getpid()})


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


def _progress() -> Callable[[int, int], None]:
    """fit_decoder's (steps done, total) reports as the stage's Progress bar and artifact."""
    bars: list[Progress] = []

    def tell(done: int, total: int) -> None:
        if not bars:
            bars.append(Progress(total, "train: optimizer steps"))
        bars[0].advance(done - bars[0].done)
    return tell


def _summary(result: FitResult, cfg: TrainConfig) -> dict[str, Any]:
    evals = [c["eval_loss"] for c in result.curves if c["eval_loss"] is not None]
    steps_now = result.steps - result.start_step
    return {"first_loss": result.curves[0]["loss"], "final_loss": result.curves[-1]["loss"], "steps": result.steps,
            "final_eval_loss": evals[-1] if evals else None,
            "examples_per_s": round(steps_now * cfg.batch_size * cfg.grad_accum / result.elapsed, 3)
            if steps_now else None}
