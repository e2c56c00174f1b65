"""train with 2 data-parallel processes (DDP under `accelerate launch`, gloo on CPU): the same step as one
process, and a SIGKILL of the stage stops its workers and the rerun resumes to the uninterrupted adapter."""

import os
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
from safetensors.torch import load_file

from latentqa.config import ModelConfig, TrainConfig
from storage.store import Store
from tasks.train import train
from tests.tasks.helpers import run_and_kill
from tests.tasks.test_train import make_inputs

CFG = TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], batch_size=2,
                  grad_accum=2, epochs=2, lr=1e-3, checkpoint_every=2, eval_every=3, warmup_steps=1)


def _adapter(store, manifest):
    return load_file(store.path(manifest, "adapter/adapter_model.safetensors"))


def test_two_processes_take_the_step_one_process_takes(tmp_path, tiny_model_dir):
    model = ModelConfig(name=str(tiny_model_dir))
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    single = train.fn(CFG.model_copy(update={"processes": 1}), model, *make_inputs(one, model, n=16), one)
    ddp = train.fn(CFG.model_copy(update={"processes": 2}), model, *make_inputs(two, model, n=16), two)
    assert ddp.fingerprint == single.fingerprint  # processes is a speed knob: same cache entry, same adapter
    assert CFG.lora_dropout > 0  # dropout is on: its masks are a function of the micro-batch, not of the rank
    assert (single.summary["processes"], ddp.summary["processes"]) == (1, 2)
    assert ddp.counts["n_steps"] == single.counts["n_steps"] >= 6
    a, b = _adapter(one, single), _adapter(two, ddp)
    assert a.keys() == b.keys()
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved < 1e-5, f"DDP adapter differs from the single-process one by {moved}"
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)  # training did move the adapter
    c1, c2 = (pq.read_table(s.path(m, "curves.parquet")).to_pylist() for s, m in ((one, single), (two, ddp)))
    assert [r["step"] for r in c1] == [r["step"] for r in c2]
    for r1, r2 in zip(c1, c2):
        assert abs(r1["loss"] - r2["loss"]) < 1e-4 and (r1["eval_loss"] is None) == (r2["eval_loss"] is None)
    assert not any(p.name.startswith("ddp-") for p in two.path(ddp).iterdir())


SLOW_STEPS = textwrap.dedent("""
    # imported at start-up by every process of the test (the stage, the launcher, each worker): slows each
    # optimizer step so the stage can be killed between checkpoints
    import time
    import latentqa.training as training

    _fit = training.fit
    def fit(*args, **kwargs):
        step = kwargs.get("on_step")
        def on_step(pos):
            if step:
                step(pos)
            time.sleep(0.4)
        kwargs["on_step"] = on_step
        return _fit(*args, **kwargs)
    training.fit = fit
""")

KILL_SCRIPT = textwrap.dedent("""
    import sys
    from latentqa.config import ModelConfig, TrainConfig
    from storage.store import Store
    from tasks.train import train
    store = Store(sys.argv[1])
    split, acts = (store.finished(s, fp) for s, fp in (("filter", sys.argv[4]), ("extract", sys.argv[5])))
    train.fn(TrainConfig.model_validate_json(sys.argv[2]), ModelConfig.model_validate_json(sys.argv[3]), split, acts,
             store)
""")


def test_sigkill_of_the_stage_stops_the_workers_and_the_rerun_resumes(tmp_path, tiny_model_dir, monkeypatch):
    model = ModelConfig(name=str(tiny_model_dir))
    cfg = CFG.model_copy(update={"processes": 2})
    ref_store, kill_store = Store(tmp_path / "ref"), Store(tmp_path / "killed")
    reference = train.fn(cfg, model, *make_inputs(ref_store, model, n=16), ref_store)
    split, acts = make_inputs(kill_store, model, n=16)

    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "sitecustomize.py").write_text(SLOW_STEPS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "slow"), os.getcwd()]))
    partial = kill_store.root / "train" / (reference.fp12 + ".partial")
    run_and_kill([KILL_SCRIPT, str(kill_store.root), cfg.model_dump_json(), model.model_dump_json(),
                  split.fingerprint, acts.fingerprint],
                 ready=lambda: (partial / "checkpoints" / "step-000004").is_dir(), timeout_s=180)
    monkeypatch.delenv("PYTHONPATH")
    assert kill_store.finished("train", reference.fingerprint) is None
    _wait_until_gone(str(partial / "ddp-job.json"))
    assert not (partial / "adapter").exists(), "orphaned workers trained on to the end"

    resumed = train.fn(cfg, model, split, acts, kill_store)  # the lock is free: the workers have stopped
    assert 4 <= resumed.counts["resumed_at_step"] < resumed.counts["n_steps"] == reference.counts["n_steps"]
    a, b = _adapter(ref_store, reference), _adapter(kill_store, resumed)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5  # float rounding: see test_train.py


def _wait_until_gone(marker: str, timeout_s: float = 60) -> None:
    """The workers notice that the stage died (rank 0 checks every step) and the launcher follows them."""
    deadline = time.monotonic() + timeout_s
    while (left := [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker in _cmdline(p)]):
        assert time.monotonic() < deadline, f"workers still running {timeout_s}s after the stage was killed: {left}"
        time.sleep(0.2)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
