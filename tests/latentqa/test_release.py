"""The LatentQA release's evaluation data, imported and used by the persona, catalog and steering paths.

Runs only where ../shared/latentqa_data is present (never copied into the repository); the checks that need no
release data (malformed files, the trainable import) are in test_release_import.py and run everywhere."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from latentqa.catalog import load_controls
from app.cli import main
from latentqa.config import SteerConfig
from latentqa.describe import describe
from latentqa.evals.items import hidden_persona_items
from latentqa.evals.steering_controls import control_pairs

SOURCE = Path(__file__).resolve().parents[3] / "shared" / "latentqa_data"
pytestmark = pytest.mark.skipif(not (SOURCE / "data" / "eval").is_dir(),
                                reason=f"the LatentQA release data is not at {SOURCE}")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    assert main(["import-latentqa", "--source", str(SOURCE), "--out", str(out)]) == 0
    return out


def test_import_writes_catalogs_qa_personas_and_controls(imported):
    controls = load_controls(sorted((imported / "catalog").glob("*.yaml")), ["persona", "goal", "scenario"])
    assert len(controls) == 500 and {c.family for c in controls} == {"persona", "goal", "scenario"}
    qa = pq.read_table(imported / "qa.parquet").to_pylist()
    assert len(qa) >= 2 * 500 and all(r["question"] and r["answer"] for r in qa)
    personas = pq.read_table(imported / "hidden_persona.parquet").to_pylist()
    assert personas and all(p["label"].startswith("persona-") and p["text"] for p in personas)


def test_hidden_persona_task_runs_on_the_release_personas(imported, tokenizer, tiny):
    from latentqa.decoder import DecoderInfo, make_decoder, placeholder_id
    from latentqa.evals.harness import Scorer, score_items, summarize
    from latentqa.evals.items import read_fresh

    personas = pq.read_table(imported / "hidden_persona.parquet").to_pylist()[:10]
    by_label = {p["label"]: p for p in personas}
    items = hidden_persona_items(personas, tokenizer, k=5, seed=0)
    assert len(items) == 10 and all(len(it.candidates) == 5 for it in items)
    assert all(it.reference == describe("persona", by_label[it.item_id]["text"])[1]
               and by_label[it.item_id]["text"] not in tokenizer.decode(it.token_ids[it.n_prefix:])
               for it in items)  # the release's system prompt is the masked control
    net = make_decoder(tiny.model, 4, 8, 0.0, ["q_proj", "v_proj"]).eval()  # mechanics: a random tiny decoder
    info = DecoderInfo("tiny", 1, 0, "?", placeholder_id(tokenizer, "?"), "system")
    with net.disable_adapter():
        read_fresh(net, items, 1, tokenizer.eos_token_id, batch_size=6)
    rows = score_items(Scorer(net, tokenizer, info, 6, 2), items, ["shuffled", "zero"], seed=0)
    for metric in ("identification", "calibrated", "attribution"):
        scored = {r["condition"]: r for r in summarize(rows, 0) if r["metric"] == metric}
        assert set(scored) == {"decoder", "shuffled", "zero"} and all(r["n"] == 10 for r in scored.values())


def test_release_steering_controls_load_as_pairs(imported):
    for path in sorted((imported / "steering").glob("*.yaml")):
        pairs, persona = control_pairs(SteerConfig(control=str(path)))
        assert 5 <= len(pairs) <= 15 and persona is None
    original = next((SOURCE / "controls").glob("*.json"))
    assert len(control_pairs(SteerConfig(control=str(original)))[0]) == 15  # the release's own JSON, as is


def test_release_config_trains_on_no_test_label_and_no_test_text():
    """configs/release.yaml: every label of data/eval/system.json lands in eval, with none of its text trained on."""
    import json
    import re

    from latentqa.config import load_config
    from latentqa.release import NEUTRAL_STIMULI, release_dataset
    from latentqa.splits import assign_splits

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "release.yaml")
    r = cfg.release
    data = release_dataset(r.source, [(f.path, f.heldout) for f in r.files], r.qa, r.stimulus, r.max_labels, r.seed)
    splits = assign_splits({c["label"]: c["family"] for c in data.controls}, cfg.filter.eval_fraction,
                           cfg.filter.seed, {c["label"]: c["category"] for c in data.controls},
                           cfg.filter.heldout_categories)
    test = {s["label"] for s in json.loads((SOURCE / "data" / "eval" / "system.json").read_text())}
    assert test <= {label for label, s in splits.items() if s == "eval"}
    norm = lambda t: re.sub(r"[^a-z0-9]+", " ", t.lower()).strip()  # noqa: E731
    trained = {norm(d["control_user"]) for d in data.dialogs if splits[d["label"]] == "train"}
    assert trained and not trained & {norm(d["control_user"]) for d in data.dialogs if d["label"] in test}
    assert {d["stimulus_user"] for d in data.dialogs} <= set(NEUTRAL_STIMULI)  # the hidden prompt is not in the text
