"""Benchmark: the extract stage's reading path against a plain baseline, in one run on the same dialogs.

stage     dialogs batched by length (right padding), forward stopped after the read layer, no grad,
          rows written once per part as fixed-size-list Parquet
baseline  one dialog at a time, full forward with output_hidden_states=True, the layer written with pandas
          (a DataFrame of per-token lists, one Parquet file per dialog)
bound     2 x parameters of the blocks up to L x tokens / the machine's measured float32 matmul rate

The stage and the baseline run `--repeats` times, interleaved, and the best time of each counts (as does the
best of the matmul measurements, which makes the bound the strictest): a 2-core VM's neighbours move single
timings by 10-20%. Prints the figures and, last, `speedup: X.XX  of-bound: 0.XX`. `--quick` runs in well under
a minute.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from latentqa.dialogs import encode_dialog
from latentqa.models import find_blocks, load_model
from latentqa.reading import length_batches, read_layers, right_pad
from storage.parquet import activation_rows, write_table

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


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    """The machine's measured dense matmul rate in this dtype (the compute bound's denominator)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start, reps = time.perf_counter(), 20 if device.type == "cpu" else 200
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def run_stage(loaded, encoded, ids, layer, out_dir: Path, batch_tokens: int) -> float:
    start = time.perf_counter()
    acts = {}
    for batch in length_batches({i: len(encoded[i].token_ids) for i in ids}, batch_tokens):
        ids_bt, mask_bt = right_pad([encoded[i].token_ids for i in batch], 0)
        out = read_layers(loaded.model, ids_bt.to(loaded.device), mask_bt.to(loaded.device), [layer])[layer]
        for b, i in enumerate(batch):
            acts[i] = out[b, encoded[i].n_prefix: len(encoded[i].token_ids)].float().cpu().numpy()
    d = loaded.model.config.hidden_size
    table = activation_rows(ids, ids, layer, [encoded[i].token_ids for i in ids], [encoded[i].n_prefix for i in ids],
                            [acts[i] for i in ids], "float32", d)
    write_table(out_dir / "part-00000.parquet", table, table.schema)
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
    args = parser.parse_args()
    n, repeats = (48, 1) if args.quick else (args.dialogs, args.repeats)
    torch.set_grad_enabled(False)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    dialogs = make_dialogs(n)
    encoded = {d["dialog_id"]: encode_dialog(loaded.tokenizer, d, "stimulus_completion") for d in dialogs}
    ids = sorted(encoded)
    n_tokens = sum(len(e.token_ids) for e in encoded.values())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir(), (Path(tmp) / "b").mkdir()
        run_stage(loaded, encoded, ids[:8], args.layer, Path(tmp) / "a", args.batch_tokens)  # warm-up
        stage_times, base_times, rates = [], [], []
        for _ in range(repeats):
            stage_times.append(run_stage(loaded, encoded, ids, args.layer, Path(tmp) / "a", args.batch_tokens))
            base_times.append(run_baseline(loaded, encoded, ids, args.layer, Path(tmp) / "b"))
            rates.append(matmul_flops(loaded.device, loaded.dtype))
    t_stage, t_base, flops = min(stage_times), min(base_times), max(rates)
    blocks = find_blocks(loaded.model)[: args.layer + 1]
    params = sum(p.numel() for b in blocks for p in b.parameters())
    t_bound = 2 * params * n_tokens / flops
    print(f"dialogs {n}  tokens {n_tokens}  layer {args.layer}  params up to L {params / 1e6:.1f}M  "
          f"threads {torch.get_num_threads()}")
    runs = lambda ts: "  runs " + " ".join(f"{t:.2f}" for t in ts) if len(ts) > 1 else ""
    print(f"stage     {t_stage:7.2f} s  {n_tokens / t_stage:8.0f} tok/s{runs(stage_times)}")
    print(f"baseline  {t_base:7.2f} s  {n_tokens / t_base:8.0f} tok/s{runs(base_times)}")
    print(f"bound     {t_bound:7.2f} s  {n_tokens / t_bound:8.0f} tok/s  (matmul {flops / 1e9:.1f} GFLOP/s)")
    print(f"speedup: {t_base / t_stage:.2f}  of-bound: {t_bound / t_stage:.2f}")


if __name__ == "__main__":
    main()
