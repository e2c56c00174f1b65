"""extract: a SIGKILL mid-stage leaves nothing that looks finished, and the rerun equals an uninterrupted run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq

from latentqa.config import ExtractConfig, ModelConfig
from storage.store import Store
from tasks.extract import extract
from tests.tasks.helpers import SYNTH_FP, dialog_rows, make_synth

KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import tasks.extract as stage
    from latentqa.config import ExtractConfig, ModelConfig
    from storage.store import Store

    read = stage._read_part
    def slow_read(*args, **kwargs):  # the real computation, slowed so the parent can kill between parts
        out = read(*args, **kwargs)
        time.sleep(0.5)
        return out
    stage._read_part = slow_read
    store = Store(sys.argv[1])
    stage.extract.fn(ExtractConfig.model_validate_json(sys.argv[2]), ModelConfig.model_validate_json(sys.argv[3]),
                     store.finished("synthesize", sys.argv[4]), store)
""")


def _configs(tiny_model_dir):
    return ExtractConfig(read_layer=2, dialogs_per_part=2, batch_tokens=256), ModelConfig(name=str(tiny_model_dir))


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, tiny_model_dir):
    cfg, model = _configs(tiny_model_dir)
    dialogs = dialog_rows(9)
    ref_store, kill_store = Store(tmp_path / "ref"), Store(tmp_path / "killed")
    reference = extract.fn(cfg, model, make_synth(ref_store, dialogs), ref_store)
    synth = make_synth(kill_store, dialogs)

    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(kill_store.root), cfg.model_dump_json(),
                             model.model_dump_json(), SYNTH_FP], cwd=os.getcwd())
    partial = kill_store.root / "extract" / (reference.fp12 + ".partial")
    deadline = time.monotonic() + 120
    while not list(partial.glob("part-00001.parquet")):
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert kill_store.finished("extract", reference.fingerprint) is None
    assert not (partial / "manifest.json").exists()
    done_before = sorted(p.name for p in partial.glob("part-*.parquet"))
    assert 2 <= len(done_before) < 5

    resumed = extract.fn(cfg, model, synth, kill_store)
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

    cfg, model = ExtractConfig(read_layer=1), ModelConfig(name=tiny.path)
    store = Store(tmp_path / "s")
    dialogs = dialog_rows(3)
    manifest = extract.fn(cfg, model, make_synth(store, dialogs), store)
    reader = ActivationReader(store.path(manifest, f.path) for f in manifest.files_matching("part-"))
    for d in dialogs:
        enc = encode_dialog(tiny.tokenizer, d, cfg.variant)
        ids = torch.tensor([enc.token_ids])
        hidden = tiny.model(ids, output_hidden_states=True).hidden_states[2][0, enc.n_prefix:]
        torch.testing.assert_close(torch.from_numpy(reader.acts(d["dialog_id"], 1).copy()), hidden, rtol=1e-5, atol=1e-5)
        assert reader.tokens(d["dialog_id"], 1) == (enc.token_ids, enc.n_prefix)
