import pyarrow as pa

from latentqa.rejections import drop_counts, reject
from storage.parquet import REJECTED


def test_rejected_rows_fit_the_schema_and_count_by_reason_and_step():
    rows = [reject("persona-a", "answers", "timeout"), reject("persona-b", "answers", "timeout"),
            reject("persona-b:d0", "extract", "exceeds_context", "900 > 512 tokens", label="persona-b")]
    table = pa.Table.from_pylist(rows, schema=REJECTED)  # raises on a missing or extra column
    assert table.column("label").to_pylist() == ["persona-a", "persona-b", "persona-b"]
    assert drop_counts(rows) == {"dropped_exceeds_context": 1, "dropped_timeout": 2}
    assert drop_counts(rows, "failed_{step}_") == {"failed_answers_timeout": 2, "failed_extract_exceeds_context": 1}
