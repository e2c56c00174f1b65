"""The README's recipe "Add a stage", run exactly as written: a whole stage in under 40 lines gets the protocol
(fingerprinted directory, manifest, finished short cut, Prefect task and asset) from the decorator alone."""

import importlib.util
import re
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.parquet import SPLIT, write_table

README = Path(__file__).resolve().parents[2] / "README.md"
ROWS = [("q1", "persona", "Arr, a pirate."), ("q2", "persona", "A chef who loves soup."), ("q3", "goal", "Be brief."),
        ("q4", "goal", "")]


def _example(tmp_path):
    text = README.read_text().split("<!-- example: a new stage -->", 1)[1]
    code = textwrap.dedent(re.search(r"```python\n(.*?)\n\s*```", text, re.S).group(1))
    path = tmp_path / "answer_lengths.py"
    path.write_text(code + "\n")
    spec = importlib.util.spec_from_file_location("answer_lengths", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return code, module


def _split(store):
    """A finished filter directory with a train.parquet, as the real stage leaves it."""
    rows = [{"qa_id": q, "dialog_id": f"d-{q}", "label": f"{f}-x-{q}", "family": f, "category": "x", "kind": "derived",
             "question": "Who?", "answer": a, "split": "train"} for q, f, a in ROWS]
    with store.open_stage("filter", "f" * 64) as out:
        n = write_table(out.file("train.parquet"), rows, SPLIT)
        return out.commit(version=1, rows={"train.parquet": n}, counts={"n_train": n})


def test_the_readme_stage_is_short_and_gets_the_whole_protocol(tmp_path, tmp_store):
    code, module = _example(tmp_path)
    assert len(code.strip().splitlines()) < 40
    split = _split(tmp_store)
    made = module.answer_lengths.fn(split, tmp_store)
    lengths = {r["family"]: r for r in pq.read_table(tmp_store.path(made, "lengths.parquet")).to_pylist()}
    assert lengths["persona"]["n"] == 2 and lengths["persona"]["max_chars"] == len("A chef who loves soup.")
    assert lengths["goal"]["n"] == 1  # the empty answer is under min_chars = 1
    assert made.counts == {"n_families": 2} and [i.fingerprint for i in made.inputs] == [split.fingerprint]
    assert made.config == {"min_chars": 1} and made.dir == f"answer_lengths/{made.fingerprint[:12]}"
    assert module.answer_lengths.fn(split, tmp_store) == made  # finished: the same manifest, nothing rerun
    assert module.answer_lengths.finished(split, tmp_store) == made
    other = module.answer_lengths.fn(split, tmp_store, min_chars=0)
    assert other.fingerprint != made.fingerprint and other.counts == {"n_families": 2}


def test_a_stage_that_fails_on_bad_input_writes_nothing(tmp_path, tmp_store):
    _, module = _example(tmp_path)
    split = _split(tmp_store)
    (tmp_store.root / split.dir / "train.parquet").write_bytes(b"not parquet")
    with pytest.raises(Exception, match="(?i)parquet"):
        module.answer_lengths.fn(split, tmp_store)
    assert not (tmp_store.root / "answer_lengths").exists()


def test_the_stage_runs_as_a_prefect_task_in_a_flow(tmp_path, tmp_store, prefect_harness):
    from prefect import flow

    _, module = _example(tmp_path)
    split = _split(tmp_store)

    @flow
    def lengths_flow():
        return module.answer_lengths(split, tmp_store)

    made = lengths_flow()
    assert made.flow_run_id and made.cache_token  # provenance from the run
    assert tmp_store.finished("answer_lengths", made.fingerprint) == made
