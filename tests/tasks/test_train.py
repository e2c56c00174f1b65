"""train: SIGKILL mid-training then a rerun ends with the adapter of an uninterrupted run.

Usually bit for bit on CPU; but the killed run computed its steps in another process, and MKL in a process with
another allocation history can round a step differently by one ulp (seen about once in ten runs, 7e-7 at the
end), so equality is checked to 1e-5. Not restoring the RNG (dropout) or the AdamW moments moves it by 1e-3+.
"""

import textwrap

import pyarrow.parquet as pq
from safetensors.torch import load_file

from latentqa.config import ExtractConfig, ModelConfig, TrainConfig
from storage.parquet import SPLIT, write_table
from storage.store import Store
from tasks.extract import extract
from tasks.train import train
from tests.tasks.helpers import dialog_rows, make_synth, run_and_kill

KILL_SCRIPT = textwrap.dedent("""
    import sys, json
    import latentqa.training as training
    from latentqa.config import ModelConfig, TrainConfig
    from storage.store import Store
    import tasks.train as stage

    fit = training.fit
    def slow_fit(*args, **kwargs):  # the real loop, slowed after every step so the parent can kill it
        step = kwargs["on_step"]
        def on_step(pos):
            step(pos)
            import time; time.sleep(0.3)
        return fit(*args, **{**kwargs, "on_step": on_step})
    stage.fit = slow_fit
    store = Store(sys.argv[1])
    split, acts = (store.finished(s, fp) for s, fp in (("filter", sys.argv[4]), ("extract", sys.argv[5])))
    stage.train.fn(TrainConfig.model_validate_json(sys.argv[2]), ModelConfig.model_validate_json(sys.argv[3]),
                   split, acts, store)
""")


def make_inputs(store: Store, model: ModelConfig, n: int = 12):
    """Finished synthesize, extract and filter directories for n dialogs (the last quarter held out)."""
    dialogs = dialog_rows(n)
    acts = extract.fn(ExtractConfig(read_layers=[2]), model, make_synth(store, dialogs), store)
    rows = [{"qa_id": f"{d['dialog_id']}:q{i}", "dialog_id": d["dialog_id"], "label": d["label"], "family": "persona",
             "category": "test", "kind": "description", "question": q, "answer": a,
             "split": "eval" if k >= 3 * n // 4 else "train"}
            for k, d in enumerate(dialogs)
            for i, (q, a) in enumerate([("What persona?", d["control_user"]), ("How will it reply?", d["stimulus_model"])])]
    with store.open_stage("filter", "f" * 64) as out:
        for split in ("train", "eval"):
            write_table(out.file(f"{split}.parquet"), [r for r in rows if r["split"] == split], SPLIT)
        split_manifest = out.commit(version=1)
    return split_manifest, acts


CFG = TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], batch_size=2,
                  epochs=2, lr=1e-3, checkpoint_every=3, eval_every=4, warmup_steps=2)


def test_sigkill_then_rerun_reaches_the_uninterrupted_adapter(tmp_path, tiny_model_dir):
    model = ModelConfig(name=str(tiny_model_dir))
    ref_store, kill_store = Store(tmp_path / "ref"), Store(tmp_path / "killed")
    reference = train.fn(CFG, model, *make_inputs(ref_store, model), ref_store)
    split, acts = make_inputs(kill_store, model)

    checkpoints = kill_store.root / "train" / (reference.fp12 + ".partial") / "checkpoints"
    run_and_kill([KILL_SCRIPT, str(kill_store.root), CFG.model_dump_json(), model.model_dump_json(),
                  split.fingerprint, acts.fingerprint], ready=lambda: (checkpoints / "step-000006").is_dir())
    assert kill_store.finished("train", reference.fingerprint) is None

    resumed = train.fn(CFG, model, split, acts, kill_store)
    assert 6 <= resumed.counts["resumed_at_step"] < reference.counts["n_steps"] == resumed.counts["n_steps"]
    ref_w = load_file(ref_store.path(reference, "adapter/adapter_model.safetensors"))
    got_w = load_file(kill_store.path(resumed, "adapter/adapter_model.safetensors"))
    assert ref_w.keys() == got_w.keys()
    assert (moved := max(float((ref_w[k] - got_w[k]).abs().max()) for k in ref_w)) < 1e-5, moved
    ref_c = pq.read_table(ref_store.path(reference, "curves.parquet")).to_pylist()
    got_c = pq.read_table(kill_store.path(resumed, "curves.parquet")).to_pylist()
    assert [(r["step"], r["epoch"], r["lr"]) for r in got_c] == [(r["step"], r["epoch"], r["lr"]) for r in ref_c]
    for r, g in zip(ref_c, got_c):
        assert abs(r["loss"] - g["loss"]) < 1e-5 and (r["eval_loss"] is None) == (g["eval_loss"] is None)
    assert not (kill_store.path(resumed) / "checkpoints").exists()
    assert kill_store.path(resumed, "curves.png").stat().st_size > 1000


def test_adapter_loads_with_peft_and_decoder_json_suffices(tmp_path, tiny_model_dir):
    from peft import PeftModel

    from latentqa.decoder import DecoderInfo
    from latentqa.models import load_model

    model = ModelConfig(name=str(tiny_model_dir))
    store = Store(tmp_path / "s")
    manifest = train.fn(CFG.model_copy(update={"epochs": 1}), model, *make_inputs(store, model), store)
    info = DecoderInfo.load(store.path(manifest, "decoder.json"))
    assert (info.read_layer, info.write_layer, info.placeholder) == (2, 0, "?")
    net = PeftModel.from_pretrained(load_model(info.base_model).model, store.path(manifest, "adapter"))
    assert any("lora_A" in n for n, _ in net.named_parameters())
    curves = pq.read_table(store.path(manifest, "curves.parquet")).to_pylist()
    assert curves[-1]["eval_loss"] is not None and len(curves) == manifest.counts["n_steps"]
