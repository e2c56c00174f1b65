"""Benchmark: the filter stage on N synthetic QA rows (default 1 million), in a child process whose peak
memory is measured. Goal (issue 5): 1 million rows curated in under 2 GB.

Prints rows/s and the child's peak RSS; the last line is `rows: N  seconds: S  peak_rss_mb: M`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys
from latentqa.config import FilterConfig
from storage.store import Store
from tasks.filter import filter_qa
store = Store(sys.argv[1])
m = filter_qa.fn(FilterConfig(max_qa_per_control=8), store.finished("synthesize", "1" * 64),
                 store.finished("extract", "2" * 64), store)
import re
print("counts", m.counts)
# VmHWM, not ru_maxrss: the latter survives exec and would report the parent's peak if that was larger
hwm_kb = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1])
print("peak_rss_mb", hwm_kb // 1024)
"""


def make_inputs(root: Path, n_rows: int, per_control: int = 10) -> None:
    """qa.parquet, dialogs.parquet and one extract part, written with DuckDB (no Python rows)."""
    import duckdb
    import numpy as np

    from storage.parquet import activation_rows, write_table
    from storage.store import Store

    store, n_controls = Store(root), n_rows // per_control
    con = duckdb.connect()
    with store.open_stage("synthesize", "1" * 64) as out:
        con.execute(f"""COPY (SELECT 'persona-c' || i || ':d0' AS dialog_id, 'persona-c' || i AS label,
            'persona' AS family, 'cat' || (i % 50) AS category,
            'Speak as character ' || i || ' who loves topic ' || (i * 7919 % 100003) AS control_user,
            'Ok.' AS control_model, 'Hi.' AS stimulus_user, 'Hello.' AS stimulus_model
            FROM range({n_controls}) t(i)) TO '{out.file('dialogs.parquet')}' (FORMAT parquet)""")
        con.execute(f"""COPY (SELECT 'persona-c' || c || ':d0:q' || q AS qa_id, 'persona-c' || c || ':d0' AS dialog_id,
            'persona-c' || c AS label, 'persona' AS family, 'cat' || (c % 50) AS category, 'description' AS kind,
            'Question ' || q || ' about the assistant?' AS question,
            'Answer ' || q || ' for control ' || c || (CASE WHEN q = 9 THEN '' ELSE ' with words ' || (c * q % 977) END) AS answer
            FROM range({n_controls}) a(c), range({per_control}) b(q)) TO '{out.file('qa.parquet')}' (FORMAT parquet)""")
        out.commit(version=1)
    with store.open_stage("extract", "2" * 64) as out:
        ids = [f"persona-c{i}:d0" for i in range(n_controls)]
        table = activation_rows(ids, ids, 1, [[1]] * len(ids), [0] * len(ids),
                                [np.zeros((1, 1), np.float32)] * len(ids), "float32", 1)
        write_table(out.file("part-00000.parquet"), table, table.schema)
        out.commit(version=1, summary={"layers": [1]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_inputs(Path(tmp), args.rows)
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, tmp], capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
    lines = out.stdout.strip().splitlines()
    peak = int(lines[-1].split()[-1])  # the child's own peak, whatever else this process started before
    print(lines[-2])
    print(f"{args.rows / seconds:.0f} rows/s")
    print(f"rows: {args.rows}  seconds: {seconds:.1f}  peak_rss_mb: {peak}")


if __name__ == "__main__":
    main()
