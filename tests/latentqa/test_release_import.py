"""Importing a LatentQA release: every behaviour file in both formats, QA matched by label, derived pairs, and one
clear error (file, item, problem) with nothing written for each kind of malformed file. Uses a small release
written by the test (tests/mini_release.py), so it runs with or without ../shared."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from app.cli import main
from latentqa.release import (HELDOUT_CATEGORY, NEUTRAL_STIMULI, ReleaseError, behaviour_files, read_release,
                              release_dataset)
from storage.parquet import DIALOGS, QA, same_columns
from tests.mini_release import make_release


@pytest.fixture
def release(tmp_path) -> Path:
    return make_release(tmp_path / "release")


def test_every_behaviour_file_becomes_dialogs_with_its_variant_and_qa_by_label(release):
    files = behaviour_files(release)
    assert dict(files) == {"data/eval/control.json": True, "data/eval/stimulus.json": True,
                           "data/eval/system.json": True, "data/train/system.json": False,
                           "history_0e4eebf/data/eval/stimulus_completion.json": True}
    data = release_dataset(release, files, ["data/eval/qa.json"])
    by_id = {d["dialog_id"]: d for d in data.dialogs}
    assert {d["variant"] for d in data.dialogs} == {"control", "stimulus", "stimulus_completion", "system"}
    conductor = "persona-job-train-conductor"
    assert {i for i in by_id if i.startswith(conductor + ":")} == {
        f"{conductor}:{t}" for t in ("control", "stimulus", "system", "h-stimulus_completion")}
    assert by_id[f"{conductor}:h-stimulus_completion"]["stimulus_model"] == "Oh, plenty!"  # the paper-era format
    assert by_id[f"{conductor}:system"]["control_user"] == "Please adopt the persona of a train conductor who loves punctuality."
    qa = [r for r in data.qa if r["dialog_id"] == f"{conductor}:system"]
    assert [(r["kind"], r["answer"]) for r in qa] == [
        ("description", "The assistant will adopt the persona of a train conductor who loves punctuality."),
        ("implication", "Something from its own line of work.")]
    assert {r["kind"] for r in data.qa if r["label"] == "sqa-eval-scenario-0"} == {"extractive"}
    derived = [r for r in data.qa if r["label"] == "persona-mini-0"]  # a training label without qa.json pairs
    assert [(r["kind"], r["answer"]) for r in derived] == [
        ("derived", "The assistant will adopt the persona of a retired lighthouse keeper.")]
    categories = {c["label"]: c["category"] for c in data.controls}
    assert categories[conductor] == HELDOUT_CATEGORY and categories["persona-mini-0"] == "mini"
    assert data.counts["n_labels"] == 15 + 6 and data.counts["n_heldout_labels"] == 6


def test_neutral_stimuli_replace_only_the_system_behaviours_user_turn(release):
    data = release_dataset(release, behaviour_files(release), ["data/eval/qa.json"], stimulus="neutral", seed=1)
    for d in data.dialogs:
        if d["variant"] == "system":
            assert d["stimulus_user"] in NEUTRAL_STIMULI
        elif d["variant"] != "control":
            assert d["stimulus_user"] == "Any plans?"
    again = release_dataset(release, behaviour_files(release), ["data/eval/qa.json"], stimulus="neutral", seed=1)
    assert again.dialogs == data.dialogs  # seeded


def test_cli_writes_the_trainable_dataset_in_the_synthesize_schema(release, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["import-latentqa", "--source", str(release), "--out", str(out)]) == 0
    assert same_columns(pq.read_schema(out / "dataset" / "dialogs.parquet"), DIALOGS)
    assert same_columns(pq.read_schema(out / "dataset" / "qa.parquet"), QA)
    assert pq.read_metadata(out / "dataset" / "dialogs.parquet").num_rows == 15 + 6 + 5 + 5 + 5
    assert (out / "hidden_persona.parquet").is_file() and (out / "steering" / "pirate.yaml").is_file()
    assert "dataset:" in capsys.readouterr().out


def _edit_json(path: Path, fn) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def _set(i, key, value):
    def fn(data):
        data[i][key] = value
        return data
    return fn


def _drop(i, key):
    def fn(data):
        del data[i][key]
        return data
    return fn


TRAIN, EVAL_SYS = "data/train/system.json", "data/eval/system.json"
CORRUPTIONS = [  # (file, how, expected fragments of the one error message)
    (TRAIN, lambda p: p.write_text(p.read_text()[:-40]), ["data/train/system.json", "not valid JSON", "line"]),
    (TRAIN, lambda p: p.write_bytes(b"\xff\xfe[]"), ["data/train/system.json", "not UTF-8"]),
    (TRAIN, lambda p: p.write_text('{"system": "x"}'), ["data/train/system.json", "expected a non-empty JSON list"]),
    (TRAIN, lambda p: p.write_text("[]"), ["data/train/system.json", "(empty)"]),
    (TRAIN, lambda p: _edit_json(p, lambda d: d + ["a string"]), ["item 15", "expected an object"]),
    (TRAIN, lambda p: _edit_json(p, _drop(3, "label")), ["item 3", "label None"]),
    (TRAIN, lambda p: _edit_json(p, _set(3, "label", "villain-x")), ["item 3", "'villain-x' is not a release label"]),
    (TRAIN, lambda p: _edit_json(p, _drop(2, "system")), ["item 2 (persona-mini-2)", "field 'system' is missing"]),
    (TRAIN, lambda p: _edit_json(p, _set(2, "stimulus_user", "  ")), ["item 2", "'stimulus_user' is not a non-empty"]),
    (TRAIN, lambda p: _edit_json(p, _set(2, "system", 42)), ["item 2", "'system' is not a non-empty string"]),
    (TRAIN, lambda p: _edit_json(p, _set(2, "stimulus_model", "hi")), ["item 2", "unexpected field(s) ['stimulus_model']"]),
    (TRAIN, lambda p: _edit_json(p, _set(5, "label", "persona-mini-0")), ["item 5 (persona-mini-0)", "repeats item 0"]),
    (EVAL_SYS, lambda p: p.unlink(), ["data/eval/system.json not found"]),
    ("data/eval/control.json", lambda p: _edit_json(p, _drop(0, "control_user")), ["control.json", "item 0",
                                                                                    "'control_user' is missing"]),
    ("data/eval/stimulus.json", lambda p: _edit_json(p, _drop(1, "control_model")), ["stimulus.json", "item 1",
                                                                                      "'control_model' is missing"]),
    ("history_0e4eebf/data/eval/stimulus_completion.json", lambda p: _edit_json(p, _set(0, "stimulus_model", "")),
     ["stimulus_completion.json", "item 0", "'stimulus_model'"]),
    ("data/eval/qa.json", lambda p: p.write_text("[]"), ["qa.json", "expected a non-empty JSON object"]),
    ("data/eval/qa.json", lambda p: _edit_json(p, lambda d: {**d, "goal-style-haiku": [["only a question"]]}),
     ["qa.json", "goal-style-haiku", "pair 0"]),
    ("data/eval/qa.json", lambda p: _edit_json(p, lambda d: {**d, "goal-style-haiku": [["Q?", ""], ["Q2?", "A"]]}),
     ["qa.json", "goal-style-haiku", "two non-empty strings"]),
    ("data/eval/qa.json", lambda p: _edit_json(p, lambda d: {**d, "goal-style-haiku": [["Q?", "A"]]}),
     ["qa.json", "goal-style-haiku", "1 pairs where every other label so far has 2"]),
    ("data/eval/qa.json", lambda p: _edit_json(p, lambda d: {**d, "not a label": [["Q?", "A"], ["Q", "A"]]}),
     ["qa.json", "'not a label' is not a release label"]),
    ("controls/pirate.json", lambda p: p.write_text('{"Be a pirate.": "arr"}'), ["pirate.json", "[question, answer]"]),
]


@pytest.mark.parametrize("rel,corrupt,fragments", CORRUPTIONS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CORRUPTIONS)])
def test_a_malformed_release_is_one_clear_error_and_nothing_is_written(release, tmp_path, capsys, rel, corrupt,
                                                                       fragments):
    corrupt(release / rel)
    out = tmp_path / "out"
    assert main(["import-latentqa", "--source", str(release), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists() and not list(tmp_path.glob("out*"))


def test_a_failed_reimport_leaves_the_previous_import_untouched(release, tmp_path):
    out = tmp_path / "out"
    assert main(["import-latentqa", "--source", str(release), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (release / TRAIN).write_text("[")
    assert main(["import-latentqa", "--source", str(release), "--out", str(out)]) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    assert main(["import-latentqa", "--source", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "data/eval/control.json not found" in capsys.readouterr().err


def test_read_release_checks_before_returning(release):
    assert read_release(release).n_controls == 6
    (release / EVAL_SYS).write_text('[{"system": "x", "label": "persona-a"}]')
    with pytest.raises(ReleaseError, match="'stimulus_user' is missing"):
        read_release(release)
