"""DuckDB catalog over every manifest.json of a store: what produced a file, and from what.

The catalog is a view, rebuilt on each query from the manifests on disk, so it can never disagree with them.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from storage.store import MANIFEST, Store, read_manifest


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with views `manifests`, `inputs` and `files` over the store's manifests."""
    con = duckdb.connect()
    manifests = [p for p in store.root.glob(f"*/*/{MANIFEST}") if not p.parent.name.endswith(".partial")]
    for path in manifests:  # a damaged manifest is an error naming it, not a DuckDB parse error about "record 2"
        read_manifest(path.parent)
    if not manifests:
        con.execute("CREATE VIEW manifests AS SELECT NULL::VARCHAR AS stage, NULL::VARCHAR AS fingerprint,"
                    " NULL::VARCHAR AS dir, NULL::VARCHAR AS created_at, NULL::VARCHAR AS flow_run_id WHERE false")
        con.execute("CREATE VIEW inputs AS SELECT NULL::VARCHAR AS fingerprint, NULL::VARCHAR AS input_stage,"
                    " NULL::VARCHAR AS input_fingerprint, NULL::VARCHAR AS input_dir WHERE false")
        con.execute("CREATE VIEW files AS SELECT NULL::VARCHAR AS dir, NULL::VARCHAR AS path WHERE false")
        return con
    listed = ", ".join("'" + p.as_posix().replace("'", "''") + "'" for p in manifests)  # views take no parameters
    con.execute(
        "CREATE VIEW manifests AS SELECT stage, fingerprint, dir, created_at::VARCHAR AS created_at, "
        "flow_run_id::VARCHAR AS flow_run_id, elapsed_s, counts, "
        f"inputs, files, summary FROM read_json([{listed}], format='auto', union_by_name=true, "
        "maximum_object_size=67108864)"
    )
    con.execute(
        "CREATE VIEW inputs AS SELECT m.fingerprint, i.stage AS input_stage, i.fingerprint AS input_fingerprint,"
        " i.dir AS input_dir FROM manifests m, unnest(m.inputs) AS t(i)"
    )
    con.execute(
        "CREATE VIEW files AS SELECT m.dir, m.stage, m.fingerprint, f.path, f.bytes, f.sha256"
        " FROM manifests m, unnest(m.files) AS t(f)"
    )
    return con


def resolve(store: Store, ref: str, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """The fingerprint of a stage directory given a path inside it, its directory, or a fingerprint prefix."""
    con = con or connect(store)
    path = Path(ref)
    if path.exists():
        rel = path.resolve().relative_to(store.root).as_posix()
        rows = con.execute("SELECT fingerprint FROM manifests WHERE ? = dir OR starts_with(?, dir || '/')",
                           [rel, rel]).fetchall()
    else:
        rows = con.execute("SELECT fingerprint FROM manifests WHERE starts_with(fingerprint, ?)", [ref]).fetchall()
    if len(rows) != 1:
        raise LookupError(f"{ref!r} matches {len(rows)} finished stage directories in {store.root}; give a path"
                          " inside one stage directory or a longer fingerprint")
    return rows[0][0]


def lineage(store: Store, ref: str) -> list[dict]:
    """The stage directory named by `ref` and every upstream directory, nearest first (a recursive query)."""
    con = connect(store)  # one read of the manifests for both queries
    fp = resolve(store, ref, con)
    rows = con.execute(
        """
        WITH RECURSIVE chain(fingerprint, depth) AS (
            SELECT ?, 0
            UNION
            SELECT i.input_fingerprint, c.depth + 1 FROM chain c JOIN inputs i ON i.fingerprint = c.fingerprint
        )
        SELECT min(c.depth) AS depth, m.stage, m.fingerprint, m.dir, m.created_at, m.flow_run_id
        FROM chain c JOIN manifests m USING (fingerprint)
        GROUP BY ALL ORDER BY depth, m.stage
        """,
        [fp],
    ).fetchall()
    cols = ["depth", "stage", "fingerprint", "dir", "created_at", "flow_run_id"]
    return [dict(zip(cols, r)) for r in rows]
