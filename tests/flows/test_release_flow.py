"""The LatentQA release as a dataset: import -> extract -> filter -> train -> evaluate on the tiny model, under a
Prefect test server, with held-out labels that no training row ever sees."""

import pyarrow.parquet as pq
import pytest

from flows.pipeline import pipeline
from latentqa.config import RunConfig
from latentqa.describe import describe
from storage import datasets
from storage.catalog import lineage
from storage.store import Store
from tests.flows.helpers import tiny_config
from tests.flows.test_pipeline import task_states
from tests.mini_release import make_release
from tests.protocol_files import assert_files_match_protocol

pytestmark = pytest.mark.slow


def release_config(root, model_dir, source) -> RunConfig:
    raw = tiny_config(root, model_dir, max_steps=6, epochs=3).model_dump(mode="json")
    raw.update(name="release", release={
        "source": str(source), "stimulus": "neutral",
        "files": [{"path": "data/train/system.json"}, {"path": "data/eval/system.json", "heldout": True},
                  {"path": "data/eval/stimulus.json"}, {"path": "data/eval/control.json"},
                  {"path": "history_0e4eebf/data/eval/stimulus_completion.json"}]})
    raw["extract"]["variant"] = "system"
    raw["filter"].update(eval_fraction=0.1, heldout_categories=["heldout"])
    raw["evaluate"].update(tasks=["gist", "gist_derived", "fact", "hidden_persona"], max_examples=8)
    return RunConfig.model_validate(raw)


def test_the_release_trains_and_evaluates_on_labels_it_never_trained_on(prefect_harness, tiny_model_dir, tmp_path):
    source = make_release(tmp_path / "release")
    cfg = release_config(tmp_path / "store", tiny_model_dir, source)
    state = pipeline(cfg, return_state=True)
    assert state.is_completed(), state.message
    states = task_states(state)
    assert states["import"] == ["Completed"] and not {"catalog", "synthesize"} & set(states)
    store = Store(cfg.storage.root, cfg.name)
    manifests = {m.stage: m for m in store.manifests()}
    split = manifests["filter"]
    train = pq.read_table(store.path(split, "train.parquet")).to_pylist()
    heldout = {r["label"] for r in pq.read_table(store.path(split, "eval.parquet")).to_pylist()}
    dialogs = {d["dialog_id"]: d for d in pq.read_table(store.path(manifests["import"], "dialogs.parquet")).to_pylist()}
    trained_texts = {dialogs[r["dialog_id"]]["control_user"] for r in train}
    # every label of data/eval/system.json is held out, with all of its dialogs (stimulus, control, ...)
    assert {"persona-job-train-conductor", "persona-job-volcanologist", "goal-style-haiku"} <= heldout
    assert not heldout & {r["label"] for r in train}
    assert not trained_texts & {dialogs[d]["control_user"] for d in dialogs if dialogs[d]["label"] in heldout}
    # training labels came without QA pairs (derived); the scenario is only in control.json, not held out
    assert {r["label"] for r in train if r["kind"] != "derived"} == {"sqa-eval-scenario-0"}
    assert manifests["train"].counts["n_steps"] == 6

    metrics = pq.read_table(store.path(state.result(), "metrics.parquet")).to_pylist()
    scored = {r["item_id"] for r in metrics}
    assert {r["task"] for r in metrics} == {"gist", "gist_derived", "fact", "hidden_persona"}
    derived = [r for r in metrics if r["task"] == "gist_derived" and r["condition"] == "decoder"]
    assert derived
    for r in derived:  # a held-out dialog described in its own hidden control's words
        dialog = dialogs[r["item_id"].removesuffix(":derived")]
        assert dialog["label"] in heldout
        assert (r["question"], r["reference"]) == describe(dialog["family"], dialog["control_user"])
    persona_items = {r["item_id"] for r in metrics if r["task"] == "hidden_persona"}
    assert persona_items and persona_items <= heldout  # hidden personas: held-out labels only
    assert not {i.split(":")[0] for i in scored} & {r["label"] for r in train}
    assert all(r["k"] == min(5, len(persona_items)) for r in metrics if r["task"] == "hidden_persona")

    record = datasets.resolve_version(store, cfg.name)  # recorded as a dataset version; the import is its origin
    assert record["stages"]["synthesize"]["stage"] == record["stages"]["catalog"]["stage"] == "import"
    assert datasets.chain_manifests(store, record)["synthesize"].stage == "import"
    chain = lineage(store, str(store.path(state.result(), "metrics.parquet")))
    assert {r["stage"] for r in chain} == {"import", "extract", "filter", "train", "evaluate"}
    assert manifests["import"].inputs == []  # the origin: its fingerprint is the files' content alone
    assert_files_match_protocol(manifests["import"])

    with pytest.raises(ValueError, match="nothing to regenerate"):
        pipeline.fn(cfg, regenerate=True)


def test_the_import_fingerprint_is_the_content_of_the_files(tmp_path, tiny_model_dir):
    from tasks.import_release import fingerprint_of

    a, b = make_release(tmp_path / "a"), make_release(tmp_path / "b")
    fa = fingerprint_of({"cfg": release_config(tmp_path, tiny_model_dir, a).release})
    assert fa == fingerprint_of({"cfg": release_config(tmp_path, tiny_model_dir, b).release})  # same bytes elsewhere
    path = b / "data" / "train" / "system.json"
    path.write_text(path.read_text().replace("lighthouse", "windmill"))
    assert fa != fingerprint_of({"cfg": release_config(tmp_path, tiny_model_dir, b).release})
