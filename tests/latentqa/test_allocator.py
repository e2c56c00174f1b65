"""keep_freed_memory: freed CPU tensor buffers are reused instead of re-faulted from the OS on every batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

FAULTS = """
import resource, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
if sys.argv[1] == "keep":
    from latentqa.allocator import keep_freed_memory
    assert keep_freed_memory()
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2)).eval()
ids = torch.randint(0, 512, (8, 256))  # MLP activations of 8 MiB, as in an extract batch
with torch.no_grad():
    model.model(ids)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        model.model(ids)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_buffers_are_reused_not_refaulted():
    default, kept = _faults("default"), _faults("keep")
    assert default > 10 * 2048, f"glibc's defaults should fault the batch's buffers in again ({default} faults)"
    assert kept < default / 10, f"{kept} page faults with keep_freed_memory vs {default} without"
