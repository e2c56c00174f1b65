"""filter: planted junk is dropped and counted under its reason; splits never share a control."""

import duckdb
import numpy as np
import pytest

from latentqa.config import FilterConfig
from latentqa.curation import validate_keep_where
from storage.parquet import DIALOGS, QA, activation_rows, write_table
from storage.store import Store
from tasks.filter import filter_qa


def _qa(label, i, question, answer, category="test"):
    return {"qa_id": f"{label}:d0:q{i}", "dialog_id": f"{label}:d0", "label": label, "family": label.split("-")[0],
            "category": category, "kind": "description", "question": question, "answer": answer}


def _dialog(label, text, category="test"):
    return {"dialog_id": f"{label}:d0", "label": label, "family": label.split("-")[0], "category": category,
            "control_user": text, "control_model": "Ok.", "stimulus_user": "Hi.", "stimulus_model": "Hello."}


def _stores(tmp_path, qa, dialogs, extracted_labels):
    store = Store(tmp_path / "s")
    with store.open_stage("synthesize", "1" * 64) as out:
        write_table(out.file("dialogs.parquet"), dialogs, DIALOGS)
        write_table(out.file("qa.parquet"), qa, QA)
        synth = out.commit(version=1)
    with store.open_stage("extract", "2" * 64) as out:
        ids = [f"{l}:d0" for l in extracted_labels]
        table = activation_rows(ids, extracted_labels, 1, [[1, 2]] * len(ids), [0] * len(ids),
                                [np.zeros((2, 4), np.float32)] * len(ids), "float32", 4)
        write_table(out.file("part-00000.parquet"), table, table.schema)
        acts = out.commit(version=1, summary={"layers": [1]})
    return store, synth, acts


LABELS = [f"persona-test-c{i}" for i in range(8)] + [f"goal-test-g{i}" for i in range(4)]
TEXTS = {l: f"Speak as character number {i} who enjoys {w}." for i, (l, w) in
         enumerate(zip(LABELS, ["sailing", "baking", "chess", "poetry", "hiking", "opera", "knitting", "surfing",
                                "gardening", "cycling", "painting", "fishing"]))}


def _base():
    qa = [_qa(l, 0, "What persona will the assistant adopt?", f"A distinct answer number {i} about {l}.")
          for i, l in enumerate(LABELS)]
    return qa, [_dialog(l, TEXTS[l]) for l in LABELS]


def test_planted_rows_are_dropped_and_counted(tmp_path):
    qa, dialogs = _base()
    qa += [
        _qa(LABELS[0], 1, "What persona will the assistant adopt?", "a DISTINCT answer number 0 about persona-test-c0"),
        _qa(LABELS[1], 1, "Who is it?", ""),                                                     # empty
        _qa(LABELS[2], 1, "Who is it?", "x" * 500),                                              # too long
        _qa(LABELS[3], 1, "Who is it?", "A"),                                                    # too short
        _qa(LABELS[4], 1, "Does the assistant love hiking?", "Yes, it talks about it a lot."),   # names its control
        _qa(LABELS[5], 1, "How does it reply?", "It replies with long stories about the opera house."),
        _qa(LABELS[5], 2, "What is its tone?", "It replies with long stories about the opera house!"),  # near-dup
        _qa("persona-test-orphan", 0, "Who is it?", "No activations for me."),                   # not extracted
    ]
    dialogs.append(_dialog("persona-test-orphan", "Speak as an orphan."))
    store, synth, acts = _stores(tmp_path, qa, dialogs, LABELS)
    m = filter_qa.fn(FilterConfig(min_answer_chars=2, max_answer_chars=400, keep_where={"no_xyz": "answer NOT LIKE '%xyz%'"}),
                     synth, acts, store)
    for reason in ("duplicate_qa", "empty", "too_long_answer", "too_short_answer", "leaks_control_words",
                   "near_duplicate", "not_extracted"):
        assert m.counts[f"dropped_{reason}"] == 1, reason
    assert m.counts["rows_in"] == len(qa) and m.counts["rows_out"] == len(LABELS) + 1
    train, eval_ = (str(store.path(m, f"{s}.parquet")) for s in ("train", "eval"))
    assert duckdb.sql(f"SELECT label FROM '{train}' INTERSECT SELECT label FROM '{eval_}'").fetchall() == []
    assert duckdb.sql(f"SELECT DISTINCT family FROM '{eval_}' ORDER BY 1").fetchall() == [("goal",), ("persona",)]
    rejected = duckdb.sql(f"SELECT count(*) FROM '{store.path(m, 'rejected.parquet')}'").fetchall()[0][0]
    assert rejected == 7


def test_user_rule_and_caps_are_counted(tmp_path):
    qa, dialogs = _base()
    qa += [_qa(LABELS[0], i, f"Question {i}?", f"Answer variant {w} here.") for i, w in
           enumerate(["alpha", "bravo", "charlie xyz", "delta"], start=1)]
    store, synth, acts = _stores(tmp_path, qa, dialogs, LABELS)
    m = filter_qa.fn(FilterConfig(max_qa_per_control=2, keep_where={"no_xyz": "answer NOT LIKE '%xyz%'"}),
                     synth, acts, store)
    assert m.counts["dropped_user_no_xyz"] == 1
    assert m.counts["dropped_over_cap_control"] == 2  # 5 rows of c0 survive the rules; the cap keeps 2


def test_heldout_categories_go_to_eval_whole(tmp_path):
    qa, dialogs = _base()
    qa = [{**r, "category": "odd" if r["label"].endswith(("c1", "c2")) else "test"} for r in qa]
    store, synth, acts = _stores(tmp_path, qa, dialogs, LABELS)
    m = filter_qa.fn(FilterConfig(heldout_categories=["odd"]), synth, acts, store)
    eval_ = str(store.path(m, "eval.parquet"))
    assert {"persona-test-c1", "persona-test-c2"} <= {l for (l,) in duckdb.sql(f"SELECT label FROM '{eval_}'").fetchall()}
    train = str(store.path(m, "train.parquet"))
    assert duckdb.sql(f"SELECT count(*) FROM '{train}' WHERE category = 'odd'").fetchall()[0][0] == 0


def test_same_control_under_two_labels_in_both_splits_fails(tmp_path):
    qa, dialogs = _base()
    dialogs = [_dialog(d["label"], TEXTS[LABELS[0]]) if d["label"].startswith("persona") else d for d in dialogs]
    store, synth, acts = _stores(tmp_path, qa, dialogs, LABELS)
    with pytest.raises(RuntimeError, match="same control text"):
        filter_qa.fn(FilterConfig(), synth, acts, store)
    assert store.finished("filter", "x" * 64) is None and not list((store.root / "filter").glob("*/manifest.json"))


@pytest.mark.parametrize("expr, message", [
    ("no_such_column > 3", "not a valid condition"),
    ("true; DROP TABLE qa", "not a valid condition"),
    ("true) ; DROP TABLE qa; SELECT (1", "not a valid condition"),  # the stage's own statement does not parse
    ("length(answer) >", "not a valid condition"),
])
def test_invalid_user_rule_is_named(expr, message):
    with pytest.raises(ValueError, match=f"filter.keep_where.bad: .*{message}"):
        validate_keep_where({"bad": expr})
    validate_keep_where({"ok": "length(answer) < 200 AND family = 'persona'"})


@pytest.mark.parametrize("expr", [
    "qa_id NOT IN (SELECT column0 FROM read_csv('/etc/hostname'))",
    "answer NOT IN (SELECT content FROM read_text('/etc/passwd'))",
    "(SELECT count(*) FROM read_parquet('/tmp/*.parquet')) >= 0",
    "(SELECT count(*) FROM glob('/etc/*')) >= 0",
])
def test_user_rules_cannot_read_files(tmp_path, expr):
    """A rule is a condition on the QA row, nothing more: table functions that read the disk are refused."""
    secret = tmp_path / "secret.csv"
    secret.write_text("column0\nx\n")
    expr = expr.replace("/etc/hostname", str(secret))
    with pytest.raises(ValueError, match="filter.keep_where.sneaky: .*(disabled by configuration|Permission)"):
        validate_keep_where({"sneaky": expr})
    from latentqa.curation import user_rule_drops  # the stage's own evaluation is sandboxed as well
    import duckdb
    import pyarrow as pa

    rows = pa.table({c: ["x"] for c in ("qa_id", "dialog_id", "label", "family", "category", "kind", "question",
                                        "answer")})
    with pytest.raises(duckdb.PermissionException):
        user_rule_drops(rows, {"sneaky": expr})
    assert user_rule_drops(rows, {"ok": "answer = 'y'"}).to_pylist() == [{"qa_id": "x", "rule": "ok"}]


@pytest.mark.slow
def test_one_million_rows_in_under_2_gb(tmp_path):
    import subprocess
    import sys

    from bench.curation import CHILD, make_inputs

    make_inputs(tmp_path, 1_000_000)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, check=True)
    assert "'rows_in': 1000000" in out.stdout
    peak_mb = int(out.stdout.strip().splitlines()[-1].split()[-1])  # the child's own peak RSS
    assert peak_mb < 2048, f"filter on 1M rows peaked at {peak_mb:.0f} MB"
