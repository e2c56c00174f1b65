"""DuckDB writes into the store: query results copied to Parquet under a temporary name, then renamed."""

from __future__ import annotations

from pathlib import Path

import duckdb

from storage.store import atomic_path


def copy_to_parquet(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> int:
    """Stream a query's rows to a Parquet file (zstd); returns the row count."""
    with atomic_path(path) as tmp:
        con.execute(f"COPY ({query}) TO '{tmp.as_posix()}' (FORMAT parquet, COMPRESSION zstd)")
    return con.execute(f"SELECT count(*) FROM read_parquet('{path.as_posix()}')").fetchone()[0]
