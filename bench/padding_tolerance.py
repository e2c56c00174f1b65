"""Measure how much batching with padding changes the activations, per device and dtype.

On CPU/float32 a right-padded batch reads the same values as one dialog at a time (to float rounding), which
is why batch size and padding are not part of the extract fingerprint. On CUDA/bf16 kernels differ with the
batch shape; this script reports the difference so it can be documented. It also checks that the
early-stopped read equals hidden_states[L+1] of a full forward on that device.
"""

from __future__ import annotations

import argparse

import torch

from bench.extract import make_dialogs
from latentqa.dialogs import encode_dialog
from latentqa.models import load_model
from latentqa.residual import length_batches, read_layers
from latentqa.padding import right_pad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--dialogs", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    encoded = {d["dialog_id"]: encode_dialog(loaded.tokenizer, d, "stimulus_completion") for d in make_dialogs(args.dialogs)}
    worst_abs, worst_rel, hook_diff = 0.0, 0.0, 0.0
    for batch in length_batches({i: len(e.token_ids) for i, e in encoded.items()}, 4096):
        ids, mask = right_pad([encoded[i].token_ids for i in batch], 0)
        batched = read_layers(loaded.model, ids.to(loaded.device), mask.to(loaded.device), [args.layer])[args.layer]
        for b, i in enumerate(batch):
            one = torch.tensor([encoded[i].token_ids], device=loaded.device)
            single = read_layers(loaded.model, one, torch.ones_like(one), [args.layer])[args.layer][0].float()
            full = loaded.model(one, output_hidden_states=True).hidden_states[args.layer + 1][0].float()
            hook_diff = max(hook_diff, (single - full).abs().max().item())
            diff = (batched[b, : single.shape[0]].float() - single).abs()
            worst_abs = max(worst_abs, diff.max().item())
            worst_rel = max(worst_rel, (diff.norm(dim=-1) / single.norm(dim=-1)).max().item())
    print(f"device {loaded.device} dtype {loaded.dtype} layer {args.layer} dialogs {len(encoded)}")
    print(f"early-stopped read vs hidden_states[L+1]: max abs diff {hook_diff:.3g}")
    print(f"batched (padded) vs one at a time: max abs diff {worst_abs:.3g}, max relative L2 diff {worst_rel:.3g}")


if __name__ == "__main__":
    main()
