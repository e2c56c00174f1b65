"""filter: planted junk is dropped and counted under its reason; splits never share a control label."""

import duckdb

from latentqa.config import FilterConfig
from storage.store import Store
from tasks.filter import filter_qa


def _qa(label, i, question, answer):
    return {"qa_id": f"{label}:d0:q{i}", "dialog_id": f"{label}:d0", "label": label, "family": label.split("-")[0],
            "category": "test", "kind": "description", "question": question, "answer": answer}


def _stores(tmp_path, qa, extracted_labels):
    from storage.parquet import DIALOGS, QA, activation_rows, write_table
    import numpy as np

    store = Store(tmp_path / "s")
    with store.open_stage("synthesize", "1" * 64) as out:
        write_table(out.file("dialogs.parquet"), [], DIALOGS)
        write_table(out.file("qa.parquet"), qa, QA)
        synth = out.commit(version=1)
    with store.open_stage("extract", "2" * 64) as out:
        ids = [f"{l}:d0" for l in extracted_labels]
        table = activation_rows(ids, extracted_labels, 1, [[1, 2]] * len(ids), [0] * len(ids),
                                [np.zeros((2, 4), np.float32)] * len(ids), "float32", 4)
        write_table(out.file("part-00000.parquet"), table, table.schema)
        acts = out.commit(version=1, summary={"layers": [1]})
    return store, synth, acts


def test_planted_rows_are_dropped_and_counted(tmp_path):
    labels = [f"persona-test-c{i}" for i in range(8)] + [f"goal-test-g{i}" for i in range(4)]
    qa = [_qa(l, 0, "What persona?", f"A distinct answer for {l}.") for l in labels]
    qa += [
        _qa(labels[0], 1, "What persona?", "a DISTINCT answer for persona-test-c0"),  # duplicate after normalising
        _qa(labels[1], 1, "What persona?", ""),                                       # empty
        _qa(labels[2], 1, "What persona?", "x" * 500),                                # too long
        _qa(labels[3], 1, "What persona?", "A"),                                      # too short
        _qa("persona-test-orphan", 0, "What persona?", "No activations for me."),    # dialog not extracted
    ]
    store, synth, acts = _stores(tmp_path, qa, labels)
    m = filter_qa.fn(FilterConfig(min_answer_chars=2, max_answer_chars=400), synth, acts, store)
    assert m.counts["dropped_duplicate_qa"] == 1
    assert m.counts["dropped_empty"] == 1
    assert m.counts["dropped_too_long_answer"] == 1
    assert m.counts["dropped_too_short_answer"] == 1
    assert m.counts["dropped_not_extracted"] == 1
    assert m.counts["rows_in"] == len(qa) and m.counts["rows_out"] == len(labels)
    train, eval_ = (str(store.path(m, f"{s}.parquet")) for s in ("train", "eval"))
    shared = duckdb.sql(f"SELECT label FROM '{train}' INTERSECT SELECT label FROM '{eval_}'").fetchall()
    assert shared == []
    families = duckdb.sql(f"SELECT DISTINCT family FROM '{eval_}' ORDER BY 1").fetchall()
    assert families == [("goal",), ("persona",)]  # stratified: every family is held out
    rejected = duckdb.sql(f"SELECT reason, count(*) FROM '{store.path(m, 'rejected.parquet')}' GROUP BY 1").fetchall()
    assert sum(n for _, n in rejected) == 5
