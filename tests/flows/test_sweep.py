"""scaling-sweep on two tiny models of different depths: killed mid-way and resumed, nested shares, the same
held-out labels in every cell, the layer rule, the table, plot and artifacts."""

import json
import os

import pyarrow.parquet as pq
import pytest
import torch

from flows.sweep import scaling_sweep
from latentqa.splits import nested_share
from storage import outputs
from storage.store import Store, is_stage_dir, read_manifest
from tests.conftest import TINY
from tests.flows.helpers import tiny_config
from tests.protocol_files import assert_files_match_protocol
from tests.tasks.helpers import run_and_kill

pytestmark = pytest.mark.slow
FRACTIONS = [0.5, 1.0]


@pytest.fixture(scope="module")
def deeper_model_dir(tmp_path_factory, tokenizer):
    """A 6-block random Llama: the second model of the sweep (the tiny one has 4)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **{**TINY, "num_hidden_layers": 6})
    path = tmp_path_factory.mktemp("deeper-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def finished(store: Store, stage: str) -> dict:
    """{fp12: manifest} of a stage's finished directories."""
    folder = store.root / stage
    return {p.name: read_manifest(p) for p in sorted(folder.iterdir()) if is_stage_dir(p)} if folder.is_dir() else {}


@pytest.fixture(scope="module")
def swept(prefect_harness, tiny_model_dir, deeper_model_dir, tmp_path_factory):
    """The sweep killed (SIGKILL) after its first cell's evaluation, then run again to the end."""
    cfg = tiny_config(tmp_path_factory.mktemp("sweep-store"), tiny_model_dir, write_layer=2)
    cfg = cfg.model_validate({**cfg.model_dump(mode="json"), "sweep": {
        "models": [str(tiny_model_dir), str(deeper_model_dir)], "fractions": FRACTIONS, "relative_depth": 0.5}})
    store = Store(cfg.storage.root, cfg.name)
    script = ("import json, sys; from latentqa.config import RunConfig; from flows.sweep import scaling_sweep; "
              "scaling_sweep(RunConfig.model_validate(json.loads(sys.argv[1])))")
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("killed-prefect-home"))  # its own throwaway server
    try:
        run_and_kill([script, json.dumps(cfg.model_dump(mode="json"))], lambda: len(finished(store, "evaluate")) >= 1,
                     timeout_s=900)
    finally:
        del os.environ["PREFECT_HOME"]
    before = {stage: finished(store, stage) for stage in ("train", "evaluate")}
    state = scaling_sweep(cfg, return_state=True)
    assert state.is_completed(), state.message
    return cfg, store, before, state.result()


def cells(store: Store, result) -> list[tuple[str, float, object, object]]:
    """(model, fraction, decoder manifest, evaluation manifest) of every cell the sweep gathered."""
    out = []
    for ref in result.inputs:
        evaluation = read_manifest(store.path(ref))
        decoder = outputs.decoder_of(store, evaluation)
        model, fraction, _ = outputs.trained_on(decoder)
        out.append((model, fraction, decoder, evaluation))
    return out


def test_a_killed_sweep_resumes_without_retraining_finished_cells(swept):
    cfg, store, before, result = swept
    assert len(before["evaluate"]) >= 1
    after = {stage: finished(store, stage) for stage in ("train", "evaluate")}
    for stage, dirs in before.items():
        for fp12, manifest in dirs.items():  # made once, by the killed run, and reused as they were
            assert after[stage][fp12].created_at == manifest.created_at
    assert len(after["train"]) == len(after["evaluate"]) == len(cfg.sweep.models) * len(FRACTIONS)
    assert not list(store.root.glob("*/*.partial"))


def test_every_cell_is_scored_on_the_same_held_out_labels_and_shares_are_nested(swept):
    cfg, store, _, result = swept
    got = cells(store, result)
    assert sorted((m, f) for m, f, _, _ in got) == sorted((m, f) for m in cfg.sweep.models for f in FRACTIONS)
    held_out = set()
    for model in cfg.sweep.models:
        of_model = {f: (d, e) for m, f, d, e in got if m == model}
        splits = {ref.fingerprint for d, _ in of_model.values() for ref in d.inputs if ref.stage == "filter"}
        assert len(splits) == 1  # every fraction of a model trains on the same split
        split = next(ref for ref in of_model[1.0][0].inputs if ref.stage == "filter")
        train_rows = outputs.split_rows(store, split, "train")
        labels = [r["label"] for r in train_rows]
        for fraction, (decoder, _) in of_model.items():
            kept = nested_share(labels, fraction, cfg.train.seed)
            assert decoder.counts["n_examples"] == sum(r["label"] in kept for r in train_rows)
        assert of_model[0.5][0].counts["n_examples"] < of_model[1.0][0].counts["n_examples"]
        held_out.add(frozenset(r["label"] for r in outputs.split_rows(store, split, "eval")))
        train_labels = set(labels)
        assert not train_labels & next(iter(held_out))
    assert len(held_out) == 1  # the two models' splits hold out the same labels


def test_each_model_reads_and_writes_at_the_same_relative_depth(swept):
    _, store, _, result = swept
    layers = {}
    for model, _, decoder, _ in cells(store, result):
        info = json.loads(store.path(decoder, "decoder.json").read_text())
        layers.setdefault(model, set()).add((info["read_layer"], info["write_layer"]))
    cfg = swept[0]
    assert layers == {cfg.sweep.models[0]: {(2, 2)}, cfg.sweep.models[1]: {(3, 3)}}  # 4 and 6 blocks, depth 0.5


def test_the_table_plot_and_artifacts_carry_every_cell_with_intervals(swept):
    cfg, store, _, result = swept
    assert_files_match_protocol(result)
    rows = pq.read_table(store.path(result, "sweep.parquet")).to_pylist()
    evaluated = {(m, f): outputs.scores(store, e) for m, f, _, e in cells(store, result)}
    assert {(r["model"], r["fraction"]) for r in rows} == set(evaluated)
    for r in rows:
        (same,) = [s for s in evaluated[(r["model"], r["fraction"])]
                   if (s["task"], s["condition"], s["metric"]) == (r["task"], r["condition"], r["metric"])]
        assert (r["value"], r["lo"], r["hi"], r["n"]) == (same["value"], same["lo"], same["hi"], same["n"])
        assert r["lo"] <= r["value"] <= r["hi"]
    report = store.path(result, "report.md").read_text()
    assert all(f"| {m} | {f:g} |" in report for m, f in evaluated)
    assert store.path(result, "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    # Other modules' sweeps publish under the same key on this session's server: take this sweep's own run's.
    run_id = result.flow_run_id
    assert run_id
    with get_client(sync_client=True) as client:
        (table,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["scaling-sweep-demo-table"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    assert len(json.loads(table.data) if isinstance(table.data, str) else table.data) == len(rows)


def test_the_cli_runs_a_sweep_and_a_second_run_is_all_cached(swept, capsys):
    from app.cli import main

    cfg, store, _, result = swept
    config = store.root.parent / "sweep.yaml"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    before = {stage: set(finished(store, stage)) for stage in ("train", "evaluate", "sweep")}
    assert main(["sweep", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "# Scaling sweep" in printed and str(store.path(result, "scaling.png")) in printed
    assert {stage: set(finished(store, stage)) for stage in before} == before


def test_a_bad_sweep_is_refused_before_any_work(swept, capsys):
    from app.cli import main

    cfg, store, _, _ = swept
    config = store.root.parent / "bad-sweep.yaml"
    bad = {**cfg.model_dump(mode="json"), "sweep": {"models": [str(store.root / "no-such-model")], "fractions": [1.0]}}
    config.write_text(json.dumps(bad))
    assert main(["sweep", "--config", str(config)]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_the_process_runner_trains_new_cells_in_worker_processes(swept):
    cfg, store, _, _ = swept
    known = set(finished(store, "train"))
    parallel = cfg.model_validate({**cfg.model_dump(mode="json"), "sweep": {
        **cfg.sweep.model_dump(mode="json"), "fractions": [0.25, *FRACTIONS], "runner": "process", "parallel": 2}})
    state = scaling_sweep(parallel, return_state=True)
    assert state.is_completed(), state.message
    new = {fp: m for fp, m in finished(store, "train").items() if fp not in known}
    assert sorted(m.config["train"]["label_fraction"] for m in new.values()) == [0.25, 0.25]  # one per model
    assert all(m.summary["pid"] != os.getpid() for m in new.values())
    assert {(m, f) for m, f, _, _ in cells(store, state.result())} == {(m, f) for m in cfg.sweep.models
                                                                       for f in [0.25, *FRACTIONS]}
