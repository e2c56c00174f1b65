"""The organism task through the pipeline on the tiny model: the organism stage runs before evaluate, is cached,
is an input of the evaluation, and every condition is scored with n and an interval."""

import pytest

from flows.pipeline import pipeline
from storage.manifest import Manifest
from storage.parquet import MARGINS, METRICS, ORGANISM_CURVE, ORGANISM_FACTS, SUMMARY, read_table
from storage.store import Store, read_manifest
from tests.flows.helpers import tiny_config
from tests.protocol_files import assert_files_match_protocol

pytestmark = pytest.mark.slow
CONDITIONS = {"decoder", "decoder_on_base", "shuffled", "text_only", "organism_direct"}


def organism_config(root, model_dir, **organism):
    cfg = tiny_config(root, model_dir)
    return cfg.model_copy(update={
        "evaluate": cfg.evaluate.model_copy(update={"tasks": ["gist", "organism"], "max_examples": None}),
        "organism": cfg.organism.model_copy(update={"n_entities": 3, "lora_r": 64, "lora_alpha": 128, "lr": 3e-3,
                                                    "batch_size": 8, "max_steps": 40, "eval_every": 20,
                                                    **organism})})


def stages(store: Store) -> dict[str, list[Manifest]]:
    out: dict[str, list[Manifest]] = {}
    for m in store.manifests():
        out.setdefault(m.stage, []).append(m)
    return out


@pytest.fixture(scope="module")
def organism_run(prefect_harness, tiny_model_dir, tmp_path_factory):
    cfg = organism_config(tmp_path_factory.mktemp("store"), tiny_model_dir)
    state = pipeline(cfg, return_state=True)
    assert state.is_completed(), state.message
    return cfg, state.result()


def test_the_organism_is_taught_and_read_under_every_condition(organism_run):
    cfg, evaluation = organism_run
    store = Store(cfg.storage.root)
    (organism,) = stages(store)["organism"]
    assert organism.fingerprint in {i.fingerprint for i in evaluation.inputs}
    facts = read_table(store.path(organism, "facts.parquet"), ORGANISM_FACTS).to_pylist()
    assert len(facts) == 9 and organism.counts["n_facts"] == 9
    curve = read_table(store.path(organism, "curve.parquet"), ORGANISM_CURVE).to_pylist()
    assert curve[0]["step"] == 0 and curve[-1]["step"] == organism.summary["steps"] <= 40
    assert organism.summary["accuracy"] == curve[-1]["accuracy"]
    assert (store.path(organism, "adapter") / "adapter_model.safetensors").is_file()
    for manifest in (organism, evaluation):
        assert_files_match_protocol(manifest)

    metrics = read_table(store.path(evaluation, "metrics.parquet"), METRICS).to_pylist()
    rows = [r for r in metrics if r["task"] == "organism"]
    assert {r["condition"] for r in rows} == CONDITIONS
    assert all(sum(r["condition"] == c for r in rows) == 9 for c in CONDITIONS)
    assert {r["item_id"] for r in rows} == {f"{f['entity']}:{f['attribute']}" for f in facts}
    summary = read_table(store.path(evaluation, "summary.parquet"), SUMMARY).to_pylist()
    exact = {r["condition"]: r for r in summary if r["task"] == "organism" and r["metric"] == "exact"}
    assert set(exact) == CONDITIONS and all(r["n"] == 9 and r["lo"] <= r["value"] <= r["hi"] for r in exact.values())
    margins = read_table(store.path(evaluation, "margins.parquet"), MARGINS).to_pylist()
    privileged = {m["control"] for m in margins if m["task"] == "organism"}
    assert {"decoder_on_base", "text_only", "shuffled"} <= privileged
    report = store.path(evaluation, "report.md").read_text()
    assert "## organism (primary: exact, n=9)" in report and "decoder_on_base" in report


def test_a_rerun_is_cached_and_a_new_organism_reruns_only_organism_and_evaluate(organism_run, tiny_model_dir):
    cfg, evaluation = organism_run
    store = Store(cfg.storage.root)
    before = {stage: {m.fingerprint for m in ms} for stage, ms in stages(store).items()}
    again = pipeline(cfg)
    assert again.fingerprint == evaluation.fingerprint and again.created_at == evaluation.created_at
    reseeded = cfg.model_copy(update={"organism": cfg.organism.model_copy(update={"seed": 1})})
    other = pipeline(reseeded)
    after = {stage: {m.fingerprint for m in ms} for stage, ms in stages(store).items()}
    grown = {stage for stage in after if after[stage] != before.get(stage)}
    assert grown == {"organism", "evaluate"}
    assert other.fingerprint != evaluation.fingerprint


def test_the_sweep_scales_the_organism_task_with_one_organism_per_model(organism_run):
    from flows.sweep import scaling_sweep
    from storage.parquet import SWEEP

    cfg, evaluation = organism_run
    swept = cfg.model_validate({**cfg.model_dump(mode="json"), "sweep": {"fractions": [0.5, 1.0]}})
    result = scaling_sweep(swept)
    store = Store(cfg.storage.root)
    rows = [r for r in read_table(store.path(result, "sweep.parquet"), SWEEP).to_pylist() if r["task"] == "organism"]
    assert {(r["fraction"], r["condition"]) for r in rows} == {(f, c) for f in (0.5, 1.0) for c in CONDITIONS}
    assert len({r["n_train_examples"] for r in rows}) == 2
    organisms = {m.fingerprint for m in stages(store)["organism"]}
    for ref in result.inputs:  # every cell's evaluation read the model's organism, made once before the cells
        inputs = {i.stage: i.fingerprint for i in read_manifest(store.path(ref)).inputs}
        assert inputs["organism"] in organisms
    assert evaluation.fingerprint in {ref.fingerprint for ref in result.inputs}  # the 1.0 cell is the pipeline's
