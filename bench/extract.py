"""Benchmark: the extract stage's reading path against a plain baseline, in one run on the same dialogs.

stage     the extract stage's reading path: dialogs batched by length (right padding), forward stopped after
          the read layer, no grad, on CPU one batch per core; rows written as one fixed-size-list Parquet part
baseline  one dialog at a time, full forward with output_hidden_states=True, the layer written with pandas
          (a DataFrame of per-token lists, one Parquet file per dialog)
bound     2 x parameters of the blocks up to L x tokens / the machine's measured float32 matmul rate

A shared 2-core VM's speed drifts by up to 2x over minutes (the square-matmul rate alone measured 130-250
GFLOP/s in one afternoon), so ratios are taken within a repeat, never across: each of `--repeats` repeats times
square matmuls of half the bound's FLOPs, the stage, the other half, then the baseline. The matmul windows
bracket the stage and together last as long as the bound, so the stage and its bound see the same machine.
The last line, `speedup: X.XX  of-bound: 0.XX`, is the median over repeats of the per-repeat ratios; the
line above it lists them all. `--quick` (48 dialogs, one repeat) runs in under a minute.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from latentqa.dialogs import encode_dialog
from latentqa.models import find_blocks, load_model
from latentqa.extraction import read_batches
from tasks.extract import write_part

TOPICS = ["the weather", "a new recipe", "my commute", "a job interview", "learning piano", "a trip to Rome",
          "saving money", "a broken bike", "my garden", "a birthday party", "a chess match", "moving house"]
CONTROLS = ["Talk like a pirate.", "Answer in rhyming couplets.", "Be a grumpy assistant.", "Speak as a chef.",
            "Respond as a patient teacher.", "Act as a detective."]


def make_dialogs(n: int) -> list[dict]:
    out = []
    for i in range(n):
        topic, control = TOPICS[i % len(TOPICS)], CONTROLS[i % len(CONTROLS)]
        reply = " ".join([f"Here is what I think about {topic}."] * (1 + i % 5))
        out.append({"dialog_id": f"d{i:05d}", "control_user": control, "control_model": "Certainly.",
                    "stimulus_user": f"Can you tell me about {topic}? " * (1 + i % 3), "stimulus_model": reply})
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_seconds(device: torch.device, dtype: torch.dtype, flops: float, n: int = 2048) -> float:
    """Seconds this machine takes for `flops` of dense square matmuls in this dtype (measured, not modelled)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start, reps = time.perf_counter(), max(3, round(flops / (2 * n**3)))
    for _ in range(reps):
        a @ b
    _sync(device)
    return (time.perf_counter() - start) * flops / (2 * n**3 * reps)


def run_stage(loaded, encoded, ids, layer, out_dir: Path, batch_tokens: int, per_core: bool = True) -> float:
    """The stage's own reading path and part writer (latentqa.extraction.read_batches, tasks.extract.write_part)."""
    start = time.perf_counter()
    dialogs = [{"dialog_id": i, "label": i, "token_ids": encoded[i].token_ids, "n_prefix": encoded[i].n_prefix}
               for i in ids]
    acts = read_batches(loaded, dialogs, [layer], batch_tokens, per_core)
    write_part(out_dir / "part-00000.parquet", dialogs, acts, "float32", loaded.model.config.hidden_size)
    _sync(loaded.device)
    return time.perf_counter() - start


def run_baseline(loaded, encoded, ids, layer, out_dir: Path) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for i in ids:
            enc = encoded[i]
            ids_bt = torch.tensor([enc.token_ids], device=loaded.device)
            hidden = loaded.model(ids_bt, output_hidden_states=True).hidden_states[layer + 1]
            kept = hidden[0, enc.n_prefix:].float().cpu().numpy()
            frame = pd.DataFrame({"dialog_id": i, "position": range(enc.n_prefix, len(enc.token_ids)),
                                  "acts": list(kept)})
            frame.to_parquet(out_dir / f"{i}.parquet")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--dialogs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="48 dialogs, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--cpu-parallel", choices=["batches", "ops"], default="batches",
                        help="the stage's extract.cpu_parallel")
    args = parser.parse_args()
    n, repeats = (48, 1) if args.quick else (args.dialogs, args.repeats)
    torch.set_grad_enabled(False)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    dialogs = make_dialogs(n)
    encoded = {d["dialog_id"]: encode_dialog(loaded.tokenizer, d, "stimulus_completion") for d in dialogs}
    ids = sorted(encoded)
    n_tokens = sum(len(e.token_ids) for e in encoded.values())
    blocks = find_blocks(loaded.model)[: args.layer + 1]
    params = sum(p.numel() for b in blocks for p in b.parameters())
    bound_flops = 2 * params * n_tokens
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir(), (Path(tmp) / "b").mkdir()
        run_stage(loaded, encoded, ids[:8], args.layer, Path(tmp) / "a", args.batch_tokens)  # warm-up
        stage_times, base_times, bound_times = [], [], []
        for _ in range(repeats):
            before = matmul_seconds(loaded.device, loaded.dtype, bound_flops / 2)
            stage_times.append(run_stage(loaded, encoded, ids, args.layer, Path(tmp) / "a", args.batch_tokens,
                                         args.cpu_parallel == "batches"))
            bound_times.append(before + matmul_seconds(loaded.device, loaded.dtype, bound_flops / 2))
            base_times.append(run_baseline(loaded, encoded, ids, args.layer, Path(tmp) / "b"))
    speedups = [b / s for b, s in zip(base_times, stage_times)]
    of_bound = [b / s for b, s in zip(bound_times, stage_times)]
    print(f"dialogs {n}  tokens {n_tokens}  layer {args.layer}  params up to L {params / 1e6:.1f}M  "
          f"threads {torch.get_num_threads()}  repeats {repeats}")
    for name, times in (("stage", stage_times), ("baseline", base_times), ("bound", bound_times)):
        best = min(times)
        print(f"{name:9s} {best:7.2f} s  {n_tokens / best:8.0f} tok/s  (best; runs "
              f"{' '.join(f'{t:.2f}' for t in times)})")
    print(f"matmul    {bound_flops / min(bound_times) / 1e9:.0f} GFLOP/s at best")
    print("per repeat  speedup " + " ".join(f"{x:.2f}" for x in speedups)
          + "  of-bound " + " ".join(f"{x:.2f}" for x in of_bound))
    print(f"speedup: {statistics.median(speedups):.2f}  of-bound: {statistics.median(of_bound):.2f}")


if __name__ == "__main__":
    main()
