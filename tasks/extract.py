"""extract: dialogs -> residual-stream activations of the target at the read layers, after the masked control.

Reads   synthesize/<fp>/dialogs.parquet
Writes  extract/<fp>/{plan.json, part-NNNNN.parquet, rejected.parquet} + manifest.json   (PROTOCOL.md, "extract")
Resume  plan.json fixes which dialogs each part holds; finished parts are listed on disk and only the missing
        ones are computed, so a rerun after a kill writes exactly what an uninterrupted run would.
Scale   each part is its own Prefect task (`extract-part`): in this process by default, on a Dask cluster
        through prefect-dask with `extract.runner: dask`. A process loads the model once for all its parts.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from latentqa.config import ExtractConfig, ModelConfig
from latentqa.extraction import encode_all, plan_parts, read_batches
from latentqa.models import load_tokenizer, model_identity, pick_device, pick_dtype, shared_model
from latentqa.rejections import drop_counts
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import REJECTED, activation_rows, write_table
from storage import outputs
from storage.store import StageDir, Store
from tasks._stage import Made, stage_task
from tasks._ui import Progress, in_run, logger
from tasks._dask import worker_device

STAGE, VERSION = "extract", 2


def fingerprint_of(p: dict[str, Any]) -> str:
    model: ModelConfig = p["model"]
    dtype = str(pick_dtype(model.dtype, pick_device(model.device)))  # resolved: "auto" differs by device
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], model, model_identity(model.name, model.revision),
                                                 {"dtype": dtype}], inputs=[p["dialogs"].fingerprint])


def _write_plan(out: StageDir, parts: list[list[dict]]) -> None:
    """plan.json: which dialogs each part holds. A different plan (other part_tokens) voids old parts."""
    plan = [[d["dialog_id"] for d in part] for part in parts]
    path = out.dir / "plan.json"
    if path.exists() and json.loads(path.read_text()) != plan:
        for stale in out.finished_files("part-*.parquet"):
            out.remove(stale.name)
    out.write_json("plan.json", plan)


def write_part(path: Path, dialogs: list[dict], acts: dict[int, dict[str, Any]], act_dtype: str, d_model: int) -> None:
    """One Parquet part: a row per dialog and layer read, layer after layer (acts as read_batches returns them)."""
    table = pa.concat_tables([
        activation_rows([d["dialog_id"] for d in dialogs], [d["label"] for d in dialogs], layer,
                        [d["token_ids"] for d in dialogs], [d["n_prefix"] for d in dialogs],
                        [by_id[d["dialog_id"]] for d in dialogs], act_dtype, d_model)
        for layer, by_id in acts.items()])
    write_table(path, table, table.schema)


def part_progress(k: int, total: int):
    """A log line every tenth of a part's dialogs: a part of the release's thousands of dialogs takes minutes."""
    done, step = [0, 0], max(1, total // 10)

    def tell(n: int) -> None:
        done[0] += n
        if done[0] >= done[1] + step or done[0] >= total:
            done[1] = done[0]
            logger().info("extract: part %d: %d/%d dialogs read", k, done[0], total)
    return tell


@task(name="extract-part", cache_policy=NO_CACHE, persist_result=False)
def extract_part(cfg: ExtractConfig, model: ModelConfig, partial_dir: str, k: int, dialogs: list[dict]) -> dict:
    """Write part k (all read layers of its dialogs) into the open stage directory, unless already there."""
    path = Path(partial_dir) / f"part-{k:05d}.parquet"
    n_tokens = sum(len(d["token_ids"]) for d in dialogs)
    if path.exists():
        return {"part": k, "n_tokens": n_tokens, "seconds": 0.0, "computed": False}
    started = time.monotonic()
    loaded = shared_model(model.name, model.revision, model.dtype, worker_device(model.device))
    acts = read_batches(loaded, dialogs, cfg.read_layers, cfg.batch_tokens, cfg.cpu_parallel == "batches",
                        part_progress(k, len(dialogs)))
    write_part(path, dialogs, acts, cfg.act_dtype, loaded.model.config.hidden_size)
    return {"part": k, "n_tokens": n_tokens, "seconds": time.monotonic() - started, "computed": True, "pid": os.getpid(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() // 2**20 if torch.cuda.is_available() else 0}


def _run_parts(cfg: ExtractConfig, model: ModelConfig, partial_dir: Path, todo: list[tuple[int, list[dict]]],
               progress: Progress) -> list[dict]:
    """Each part as its own task: in this process, or on a Dask cluster (one model load per worker)."""
    if cfg.runner == "local" or not todo:
        run = extract_part if in_run() else extract_part.fn
        results = []
        for k, dialogs in todo:
            results.append(run(cfg, model, str(partial_dir), k, dialogs))
            progress.advance(len(dialogs))
        return results
    from tasks._dask import dask_runner, gpu_annotation  # dask is imported only when asked for

    with dask_runner(cfg.dask_address, cfg.dask_workers) as runner, gpu_annotation():
        futures = [runner.submit(extract_part, parameters={"cfg": cfg, "model": model, "partial_dir": str(partial_dir),
                                                            "k": k, "dialogs": dialogs}) for k, dialogs in todo]
        results = []
        for (_, dialogs), future in zip(todo, futures):
            results.append(future.result())
            progress.advance(len(dialogs))
        return results


@stage_task(STAGE, VERSION, fingerprint_of)
def extract(out: StageDir, cfg: ExtractConfig, model: ModelConfig, dialogs: Manifest, store: Store) -> Made:
    """Read the blocks in `read_layers` for every kept token of every dialog, part by part."""
    rows = outputs.dialogs(store, dialogs)
    kept, rejected = encode_all(load_tokenizer(model.name, model.revision), rows, cfg.variant, cfg.max_tokens)
    parts = plan_parts(kept, cfg.part_tokens)
    _write_plan(out, parts)
    todo = [(k, p) for k, p in enumerate(parts) if not out.finished_files(f"part-{k:05d}.parquet")]
    progress = Progress(len(kept), "extract: dialogs read")
    progress.advance(len(kept) - sum(len(p) for _, p in todo))
    started = time.monotonic()
    results = _run_parts(cfg, model, out.dir, todo, progress)
    elapsed = time.monotonic() - started
    write_table(out.file("rejected.parquet"), rejected, REJECTED)
    logger().info("extract: %d dialogs in %d parts (%d computed now), %d rejected", len(kept), len(parts),
                  len(todo), len(rejected))
    return Made(counts=_counts(rows, kept, parts, rejected), summary=_summary(cfg, model, results, elapsed),
                rows={f"part-{k:05d}.parquet": len(p) * len(cfg.read_layers) for k, p in enumerate(parts)})


def _counts(rows, kept, parts, rejected) -> dict[str, int]:
    return {"rows_in": len(rows), "n_dialogs": len(kept), "n_parts": len(parts),
            "n_tokens": sum(len(d["token_ids"]) for d in kept),
            "n_kept_tokens": sum(len(d["token_ids"]) - d["n_prefix"] for d in kept),
            **drop_counts(rejected)}


def _summary(cfg: ExtractConfig, model: ModelConfig, results: list[dict], elapsed: float) -> dict[str, Any]:
    device = pick_device(model.device)
    computed = [r for r in results if r["computed"]]
    n_tokens = sum(r["n_tokens"] for r in computed)
    return {"model": model.name, "revision": model.revision, "dtype": str(pick_dtype(model.dtype, device)),
            "device": str(device), "layers": cfg.read_layers, "variant": cfg.variant, "act_dtype": cfg.act_dtype,
            "runner": cfg.runner, "parts_computed": len(computed), "processes": len({r["pid"] for r in computed}),
            "tokens_per_s": round(n_tokens / elapsed, 1) if n_tokens and elapsed else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "peak_cuda_mb": max((r.get("peak_cuda_mb", 0) for r in computed), default=0)}
