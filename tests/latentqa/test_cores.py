"""map_per_core: batches on one thread per core, each single-threaded; reads from concurrent threads stay apart."""

from __future__ import annotations

import threading

import torch

from latentqa.cores import map_per_core
from latentqa.dialogs import encode_dialog
from latentqa.residual import read_layers
from latentqa.padding import right_pad
from tests.conftest import DIALOGS


def test_results_in_order_on_several_single_threaded_workers():
    before = torch.get_num_threads()
    seen = []

    def work(x):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        threading.Event().wait(0.02)  # long enough that the other worker takes the next item
        return x * x

    assert map_per_core(work, list(range(8)), cores=2) == [x * x for x in range(8)]
    assert len({ident for ident, _ in seen}) == 2
    assert {n for _, n in seen} == {1}
    assert torch.get_num_threads() == before


def test_one_core_runs_inline():
    assert map_per_core(lambda _: threading.get_ident(), [1, 2], cores=1) == [threading.get_ident()] * 2


def test_concurrent_reads_of_one_model_equal_sequential_reads(tiny):
    """Hooks are the model's, not the call's: a read on one thread must not capture (or stop) another's."""
    encs = [encode_dialog(tiny.tokenizer, d, v) for d in DIALOGS for v in ("stimulus", "stimulus_completion")]
    batches = [right_pad([e.token_ids for e in encs[i: i + 2]], tiny.tokenizer.pad_token_id)
               for i in range(0, len(encs), 2)] * 4

    def read(batch):
        ids, mask = batch
        return read_layers(tiny.model, ids, mask, [1, 2])

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same single-threaded kernels as the workers: results compare exactly
    try:
        expected = [read(b) for b in batches]
    finally:
        torch.set_num_threads(before)
    got = map_per_core(read, batches, cores=2)
    for want, have in zip(expected, got):
        assert sorted(have) == [1, 2]
        for layer in (1, 2):
            assert torch.equal(want[layer], have[layer])
