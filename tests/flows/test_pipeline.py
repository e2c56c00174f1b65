"""The whole flow on the tiny model under a Prefect test server: cached reruns, precise invalidation, lineage."""

import json
import shutil
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.pipeline import pipeline
from storage.catalog import lineage
from storage.store import Store
from tests.flows.helpers import tiny_config
from tests.protocol_files import assert_files_match_protocol, listed_files

pytestmark = pytest.mark.slow
STAGES = {"catalog", "synthesize", "extract", "filter", "train", "evaluate"}


def task_states(state) -> dict[str, list[str]]:
    """{task name: [final state names]} of one flow run, read back through the Prefect API.

    Task states reach the server through events, a moment after the flow returns, so this waits until
    every stage's task run is there and final (CI once read a cached evaluate while its state was still on its way)."""
    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=flow_filter)
            seen = {r.name.rsplit("-", 1)[0] for r in runs}
            final = all(r.state and r.state.is_final() for r in runs)
            if (final and STAGES <= seen) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    states: dict[str, list[str]] = {}
    for r in runs:  # run names are "<task>-<suffix>"
        states.setdefault(r.name.rsplit("-", 1)[0], []).append(r.state.name)
    return states


def stage_states(states: dict[str, list[str]]) -> dict[str, str]:
    return {name: s[0] for name, s in states.items() if name in STAGES}


def run(cfg):
    state = pipeline(cfg, return_state=True)
    assert state.is_completed(), state.message
    states = task_states(state)
    return state, states


@pytest.fixture(scope="module")
def first_run(prefect_harness, tiny_model_dir, tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("store"), tiny_model_dir)
    state, states = run(cfg)
    return cfg, state, states


def test_first_run_completes_every_stage(first_run):
    cfg, state, states = first_run
    assert set(stage_states(states)) == STAGES and set(stage_states(states).values()) == {"Completed"}
    assert states["extract-part"] and set(states["extract-part"]) == {"Completed"}  # one task per part
    final = state.result()
    scores = final.summary["scores"]
    assert {"gist", "classification", "relational"} <= set(scores)
    assert set(scores["relational"]) == {"decoder", "shuffled", "zero", "text_only", "untrained_patch"}
    assert "probe" in scores["classification"]
    store = Store(cfg.storage.root)
    assert all(store.path(final, f).is_file() for f in ("metrics.parquet", "summary.parquet", "report.md", "scores.png"))


def test_second_run_is_all_cached(first_run):
    cfg, _, _ = first_run
    _, states = run(cfg)
    recorded = states.pop("dataset")  # the version record is rewritten by no one: it already exists
    assert states == {s: ["Cached"] for s in STAGES}  # no part task runs either
    assert recorded == ["Completed"]


def test_changing_a_training_setting_reruns_only_train_and_evaluate(first_run, tiny_model_dir):
    cfg, _, _ = first_run
    _, states = run(tiny_config(cfg.storage.root, tiny_model_dir, lr=5e-4))
    assert {s for s, name in stage_states(states).items() if name != "Cached"} == {"train", "evaluate"}


def test_deleted_stage_directory_runs_again(first_run):
    cfg, state, _ = first_run
    store = Store(cfg.storage.root)
    extract_dir = next(m for m in store.manifests() if m.stage == "extract")
    shutil.rmtree(store.root / extract_dir.dir)
    _, states = run(cfg)
    assert stage_states(states)["extract"] == "Completed"  # the Prefect cache did not stand in for missing files
    assert store.finished("extract", extract_dir.fingerprint) is not None
    assert {s for s, name in stage_states(states).items() if name != "Cached"} == {"extract"}


def test_lineage_reaches_the_catalog(first_run):
    cfg, state, _ = first_run
    store = Store(cfg.storage.root)
    chain = lineage(store, str(store.path(state.result(), "metrics.parquet")))
    assert {row["stage"] for row in chain} == STAGES
    for row in chain:
        assert store.finished(row["stage"], row["fingerprint"]).dir == row["dir"]
    assert chain[0]["flow_run_id"] == str(state.state_details.flow_run_id)


def test_lineage_command_prints_the_chain_with_fingerprints_on_disk(first_run, capsys):
    import json

    from app.cli import main

    cfg, state, _ = first_run
    store = Store(cfg.storage.root)
    metrics = store.path(state.result(), "metrics.parquet")
    assert main(["lineage", str(metrics), "--json"]) == 0  # the store is found from the path
    chain = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in chain][0] == "evaluate" and chain[-1]["stage"] == "catalog"
    for row in chain:
        manifest = json.loads((store.root / row["dir"] / "manifest.json").read_text())
        assert manifest["fingerprint"] == row["fingerprint"] and manifest["flow_run_id"] == row["flow_run_id"]
    assert main(["lineage", str(metrics)]) == 0
    text = capsys.readouterr().out
    assert all(r["fingerprint"][:12] in text for r in chain)


def test_read_answers_about_a_dialog_from_the_targets_own_activations(first_run, capsys):
    import torch

    from app.cli import main
    from latentqa.dialogs import encode_turns
    from latentqa.reader import Reader

    cfg, _, _ = first_run
    store = Store(cfg.storage.root)
    decoder_dir = store.root / next(m for m in store.manifests() if m.stage == "train").dir
    reader = Reader(decoder_dir)
    acts = reader.activations("How was your day?", system="Talk like a pirate.")
    prefix = [{"role": "system", "content": "Talk like a pirate."}]
    enc = encode_turns(reader.tokenizer, prefix, [*prefix, {"role": "user", "content": "How was your day?"}], True)
    with reader.net.disable_adapter(), torch.no_grad():  # the target: a plain forward, adapter off
        hidden = reader.net(input_ids=torch.tensor([enc.token_ids]), output_hidden_states=True).hidden_states
    assert torch.allclose(torch.from_numpy(acts), hidden[reader.info.read_layer + 1][0, enc.n_prefix:], atol=1e-5)
    assert main(["read", "--decoder", str(decoder_dir), "--prompt", "How was your day?", "--system",
                 "Talk like a pirate.", "--question", "What persona is the assistant adopting?",
                 "--max-new-tokens", "3"]) == 0
    assert "A: " in capsys.readouterr().out
    assert main(["read", "--decoder", str(decoder_dir), "--prompt", "How was your day?", "--question", "Who?",
                 "--max-new-tokens", "3", "--decoding", "rerank"]) == 0
    assert "A: " in capsys.readouterr().out
    assert main(["read", "--decoder", str(store.root), "--prompt", "x", "--question", "y"]) == 2  # not a decoder


@pytest.mark.parametrize("damage, argv, says", [
    ("not json", [], "is not valid JSON"),
    ("not a decoder.json", [], "not a decoder.json"),
    ("layer beyond the model", [], "read_layer 99 is beyond the model"),
    (None, ["--max-new-tokens", "-1"], "--max-new-tokens -1: at least 1 token"),
    (None, ["--prompt", "  "], "--prompt is empty"),
    (None, ["--question", ""], "--question is empty"),
])
def test_read_names_a_damaged_decoder_or_a_bad_argument_and_exits_2(first_run, tmp_path, damage, argv, says):
    """The real command, as a process: exit code 2, a message naming the problem, no traceback."""
    import shutil
    import subprocess
    import sys

    cfg, _, _ = first_run
    store = Store(cfg.storage.root)
    decoder_dir = tmp_path / "decoder"
    shutil.copytree(store.root / next(m for m in store.manifests() if m.stage == "train").dir, decoder_dir)
    info = json.loads((decoder_dir / "decoder.json").read_text())
    if damage == "not json":
        (decoder_dir / "decoder.json").write_text('{"base_model": ')
    elif damage == "not a decoder.json":
        (decoder_dir / "decoder.json").write_text('{"hello": 1}')
    elif damage == "layer beyond the model":
        (decoder_dir / "decoder.json").write_text(json.dumps({**info, "read_layer": 99}))
    args = {"--prompt": "How was your day?", "--question": "Who?", "--max-new-tokens": "3"}
    args.update(dict(zip(argv[::2], argv[1::2])))
    done = subprocess.run([sys.executable, "-m", "app.cli", "read", "--decoder", str(decoder_dir),
                           *[x for kv in args.items() for x in kv]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_every_stage_writes_the_files_protocol_names(first_run):
    cfg = first_run[0]
    manifests = Store(cfg.storage.root).manifests()
    assert {m.stage for m in manifests} == STAGES
    for manifest in manifests:
        assert_files_match_protocol(manifest)


def test_the_protocol_file_check_catches_an_unlisted_and_a_missing_file(first_run):
    manifest = next(m for m in Store(first_run[0].storage.root).manifests() if m.stage == "evaluate")
    assert "scores.png" in listed_files("evaluate")
    with pytest.raises(AssertionError, match="named but not written \\['scores.png'\\]"):
        assert_files_match_protocol(manifest.model_copy(update={"files": [f for f in manifest.files
                                                                          if f.path != "scores.png"]}))
    extra = manifest.files[0].model_copy(update={"path": "notes.txt"})
    with pytest.raises(AssertionError, match="does not name \\['notes.txt'\\]"):
        assert_files_match_protocol(manifest.model_copy(update={"files": [*manifest.files, extra]}))

