"""extract: a SIGKILL mid-stage leaves nothing that looks finished, and the rerun equals an uninterrupted run."""

import textwrap

import numpy as np
import pyarrow.parquet as pq
import torch

from latentqa.config import ExtractConfig, ModelConfig
from storage.store import Store
from tasks.extract import extract
from tests.tasks.helpers import SYNTH_FP, dialog_rows, make_synth, run_and_kill

KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import tasks.extract as stage
    from latentqa.config import ExtractConfig, ModelConfig
    from storage.store import Store

    read = stage.read_batches
    def slow_read(*args, **kwargs):  # the real computation, slowed so the parent can kill between parts
        out = read(*args, **kwargs)
        time.sleep(0.5)
        return out
    stage.read_batches = slow_read
    store = Store(sys.argv[1])
    stage.extract.fn(ExtractConfig.model_validate_json(sys.argv[2]), ModelConfig.model_validate_json(sys.argv[3]),
                     store.finished("synthesize", sys.argv[4]), store)
""")


def _configs(tiny_model_dir):
    return ExtractConfig(read_layers=[1, 2], part_tokens=40, batch_tokens=256), ModelConfig(name=str(tiny_model_dir))


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, tiny_model_dir):
    cfg, model = _configs(tiny_model_dir)
    dialogs = dialog_rows(9)
    ref_store, kill_store = Store(tmp_path / "ref"), Store(tmp_path / "killed")
    reference = extract.fn(cfg, model, make_synth(ref_store, dialogs), ref_store)
    synth = make_synth(kill_store, dialogs)

    partial = kill_store.root / "extract" / (reference.fp12 + ".partial")
    run_and_kill([KILL_SCRIPT, str(kill_store.root), cfg.model_dump_json(), model.model_dump_json(), SYNTH_FP],
                 ready=lambda: (partial / "part-00001.parquet").exists())

    assert kill_store.finished("extract", reference.fingerprint) is None
    assert not (partial / "manifest.json").exists()
    done_before = sorted(p.name for p in partial.glob("part-*.parquet"))
    assert 2 <= len(done_before) < reference.counts["n_parts"]
    written = {name: (partial / name).stat().st_mtime_ns for name in done_before}

    resumed = extract.fn(cfg, model, synth, kill_store)
    # only the missing parts were computed; the finished ones were kept as they were, not rewritten
    assert resumed.summary["parts_computed"] == reference.counts["n_parts"] - len(done_before)
    assert {n: kill_store.path(resumed, n).stat().st_mtime_ns for n in done_before} == written
    assert [(f.path, f.sha256) for f in resumed.files] == [(f.path, f.sha256) for f in reference.files]
    assert resumed.counts == reference.counts
    for f in reference.files:
        if f.path.startswith("part-"):
            assert pq.read_table(kill_store.path(resumed, f.path)).equals(pq.read_table(ref_store.path(reference, f.path)))


def test_over_long_and_empty_dialogs_are_skipped_with_a_reason(tmp_path, tiny_model_dir):
    cfg, model = _configs(tiny_model_dir)
    dialogs = dialog_rows(3)
    dialogs[1]["stimulus_model"] = "word " * 600
    dialogs[2]["stimulus_user"] = "   "
    store = Store(tmp_path / "s")
    manifest = extract.fn(cfg.model_copy(update={"max_tokens": 256}), model, make_synth(store, dialogs), store)
    assert manifest.counts["n_dialogs"] == 1
    assert manifest.counts["dropped_exceeds_context"] == 1 and manifest.counts["dropped_empty_dialog"] == 1
    rejected = pq.read_table(store.path(manifest, "rejected.parquet")).to_pylist()
    assert {r["reason"] for r in rejected} == {"exceeds_context", "empty_dialog"}


def test_stage_reads_exactly_the_kept_positions(tmp_path, tiny):
    import torch

    from latentqa.dialogs import encode_dialog
    from storage.parquet import ActivationReader

    # not the last block: transformers applies the final norm to hidden_states[-1], the stage reads the raw residual
    cfg, model = ExtractConfig(read_layers=[0, 2]), ModelConfig(name=tiny.path)
    store = Store(tmp_path / "s")
    dialogs = dialog_rows(3)
    manifest = extract.fn(cfg, model, make_synth(store, dialogs), store)
    reader = ActivationReader(store.path(manifest, f.path) for f in manifest.files_matching("part-"))
    for d in dialogs:
        enc = encode_dialog(tiny.tokenizer, d, cfg.variant)
        ids = torch.tensor([enc.token_ids])
        hidden = tiny.model(ids, output_hidden_states=True).hidden_states
        for layer in (0, 2):
            stored = torch.from_numpy(reader.acts(d["dialog_id"], layer).copy())
            torch.testing.assert_close(stored, hidden[layer + 1][0, enc.n_prefix:], rtol=1e-5, atol=1e-5)
            assert reader.tokens(d["dialog_id"], layer) == (enc.token_ids, enc.n_prefix)


def test_out_of_memory_halves_the_batch_and_keeps_every_row(tmp_path, tiny_model_dir, monkeypatch):
    import latentqa.extraction as reading

    cfg, model = _configs(tiny_model_dir)
    dialogs = dialog_rows(6)
    ref_store, oom_store = Store(tmp_path / "ref"), Store(tmp_path / "oom")
    # the retry is the one-batch-at-a-time path a GPU takes (cpu_parallel only changes the CPU path)
    cfg = cfg.model_copy(update={"batch_tokens": 4096, "part_tokens": 10**6, "cpu_parallel": "ops"})
    reference = extract.fn(cfg, model, make_synth(ref_store, dialogs), ref_store)
    forward, refused, ran = reading._forward, [], []

    def small_memory(loaded, batch, layers):  # a device that holds at most 2 dialogs per forward
        if len(batch) > 2:
            refused.append(len(batch))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        ran.append(len(batch))
        return forward(loaded, batch, layers)

    monkeypatch.setattr(reading, "_forward", small_memory)
    resumed = extract.fn(cfg, model, make_synth(oom_store, dialogs), oom_store)
    assert refused[0] == 6 and sum(ran) == 6 and max(ran) <= 2
    from storage.parquet import ActivationReader

    ref = ActivationReader(ref_store.path(reference, f.path) for f in reference.files_matching("part-"))
    got = ActivationReader(oom_store.path(resumed, f.path) for f in resumed.files_matching("part-"))
    for d in dialogs:  # other batch shapes round differently: equal to float32 precision, not bit for bit
        for layer in cfg.read_layers:
            np.testing.assert_allclose(got.acts(d["dialog_id"], layer), ref.acts(d["dialog_id"], layer), atol=1e-5)


def test_a_part_reports_its_progress_as_it_reads(tmp_path, tiny_model_dir, caplog):
    """Issue 32: extraction logged nothing between its start and its end (7 minutes for the release's 6,967
    dialogs, one part); now each part logs every tenth of its dialogs."""
    import logging

    store = Store(tmp_path / "s")
    cfg = ExtractConfig(read_layers=[1], part_tokens=100_000, batch_tokens=64, cpu_parallel="ops")
    dialogs = dialog_rows(30)
    with caplog.at_level(logging.INFO, logger="latentqa"):
        extract.fn(cfg, ModelConfig(name=str(tiny_model_dir)), make_synth(store, dialogs), store)
    lines = [r.getMessage() for r in caplog.records if "part 0:" in r.getMessage()]
    assert len(lines) >= 5 and lines[-1] == "extract: part 0: 30/30 dialogs read", lines
