"""regenerate-dataset, train-decoder and evaluate as separate flows on the tiny model (Prefect test server)."""

import pyarrow.parquet as pq
import pytest

from flows.dataset import regenerate_dataset
from flows.evaluate import evaluate_decoder
from flows.train_decoder import train_decoder
from storage import datasets
from storage.store import Store
from tests.flows.helpers import tiny_config
from tests.flows.test_pipeline import stage_states, task_states

pytestmark = pytest.mark.slow
DATASET = {"catalog", "synthesize", "extract", "filter"}


def _run(flow, *args, **kwargs):
    state = flow(*args, return_state=True, **kwargs)
    return state, stage_states(task_states(state))


def _dialogs(store, version) -> list[tuple[str, str]]:
    table = pq.read_table(store.root / version["stages"]["synthesize"]["dir"] / "dialogs.parquet")
    return sorted(zip(table.column("stimulus_user").to_pylist(), table.column("stimulus_model").to_pylist()))


def test_regeneration_versions_latest_and_downstream_flows(prefect_harness, tiny_model_dir, tmp_path):
    greedy = tiny_config(tmp_path / "store", tiny_model_dir)
    with pytest.raises(ValueError, match="synthesize.temperature is 0"):
        regenerate_dataset.fn(greedy, regenerate=True)  # refused before any stage runs
    assert not list((tmp_path / "store").glob("*/*"))
    cfg = greedy.model_copy(update={"synthesize": greedy.synthesize.model_copy(update={"temperature": 1.0})})
    store = Store(cfg.storage.root, cfg.name)
    with pytest.raises(LookupError, match="no complete version"):
        train_decoder.fn(cfg)  # nothing to train on yet: the error says what to run

    state, states = _run(regenerate_dataset, cfg)
    assert state.is_completed() and set(states.values()) == {"Completed"} and set(states) == DATASET
    first = datasets.resolve_version(store, cfg.name)
    assert first["version"] == state.result().fingerprint

    state, states = _run(regenerate_dataset, cfg)  # the nightly schedule with nothing changed
    assert states == {s: "Cached" for s in DATASET}
    assert datasets.resolve_version(store, cfg.name) == first

    state, states = _run(regenerate_dataset, cfg, regenerate=True)
    assert states["catalog"] == "Cached" and {states[s] for s in DATASET - {"catalog"}} == {"Completed"}
    second = datasets.resolve_version(store, cfg.name)
    assert second["version"] != first["version"] and second["synthesize_seed"] != cfg.synthesize.seed
    assert [v["version"] for v in datasets.versions(store, cfg.name)] == [second["version"], first["version"]]
    assert store.finished("filter", first["version"]) is not None  # the old version is still there
    assert _dialogs(store, second) != _dialogs(store, first)  # new content, not only a new version id

    with pytest.raises(LookupError, match="run train-decoder first"):
        evaluate_decoder.fn(cfg)
    state, states = _run(train_decoder, cfg)
    decoder = state.result()
    assert states == {"train": "Completed"}
    assert {i.fingerprint for i in decoder.inputs} == {second["version"], second["stages"]["extract"]["fingerprint"]}
    state, states = _run(evaluate_decoder, cfg)
    assert states == {"evaluate": "Completed"}
    assert decoder.fingerprint in {i.fingerprint for i in state.result().inputs}

    plan = datasets.gc(store, keep=1)  # the first version goes, the decoder on the second stays
    assert plan.removed_versions == [f"{cfg.name}/{first['version'][:12]}"]
    assert store.finished("filter", first["version"]) is None and store.finished("train", decoder.fingerprint)
