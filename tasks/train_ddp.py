"""One data-parallel worker of the train stage, started by `accelerate launch` (see tasks/train.py, DDP).

    python -m accelerate.commands.launch --multi_gpu --num_processes N -m tasks.train_ddp <partial>/ddp-job.json

The job file names the store, the config sections and the input manifests; every worker loads them, joins the
process group and runs the same fit_decoder as a single-process stage. Rank 0 writes the checkpoints, the
adapter and ddp-result.json, which the stage reads back to write the rest of the directory and commit it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch.distributed as dist

from latentqa.config import ModelConfig, TrainConfig
from latentqa.distributed import init_from_env, rank_and_world
from storage.store import Store, write_json_atomic
from tasks.train_fit import fit_decoder


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    model = ModelConfig.model_validate(job["model"])
    device = init_from_env(use_cuda=model.device not in ("cpu", "mps"))
    if device is None:
        raise SystemExit("tasks.train_ddp runs under `accelerate launch --num_processes N` (N > 1)")
    try:
        store = Store(job["store"], job["dataset"])
        split, acts = store.finished("filter", job["split"]), store.finished("extract", job["acts"])
        if split is None or acts is None:
            raise SystemExit(f"train worker: the filter or extract directory named in {job_path} is not finished")
        result = fit_decoder(TrainConfig.model_validate(job["cfg"]), model, split, acts, store, Path(job["out_dir"]),
                             device=device, stop_if_gone=job["parent"])
        if rank_and_world()[0] == 0:
            write_json_atomic(Path(job["out_dir"]) / "ddp-result.json", asdict(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
