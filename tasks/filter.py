"""filter: DuckDB over the synthesized QA and the extracted activations -> clean train/eval splits.

Reads   synthesize/<fp>/qa.parquet, extract/<fp>/part-*.parquet (dialog ids only)
Writes  filter/<fp>/{train,eval,rejected}.parquet + manifest.json   (storage/PROTOCOL.md, "filter")
Resume  one pass of SQL; nothing to resume.
"""

from __future__ import annotations

from typing import Any

import duckdb
from prefect import task

from latentqa.config import FilterConfig
from latentqa.curation import NORMALIZE_SQL, default_rules, reason_sql
from latentqa.splits import assign_splits
from storage.duck import copy_to_parquet
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.store import Store
from tasks._common import logger, provenance, publish, stage_cache_policy

STAGE, VERSION = "filter", 1


def fingerprint_of(p: dict[str, Any]) -> str:
    return fingerprint(STAGE, VERSION, sections=[p["cfg"]], inputs=[p["qa"].fingerprint, p["acts"].fingerprint])


def _scored(con: duckdb.DuckDBPyConnection, qa_path: str, part_paths: list[str], cfg: FilterConfig) -> None:
    """Table `scored`: every QA row with the reason it is dropped (NULL when kept)."""
    con.execute("CREATE TABLE extracted AS SELECT DISTINCT dialog_id FROM read_parquet(?)", [part_paths]) \
        if part_paths else con.execute("CREATE TABLE extracted (dialog_id VARCHAR)")
    con.execute(f"""
        CREATE TABLE scored AS
        WITH base AS (
            SELECT q.*, {NORMALIZE_SQL.format(col='q.question')} AS nq, {NORMALIZE_SQL.format(col='q.answer')} AS na,
                   e.dialog_id IS NOT NULL AS extracted
            FROM read_parquet(?) q LEFT JOIN extracted e USING (dialog_id)
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY nq, na ORDER BY qa_id) AS dup_rank FROM base
        )
        SELECT *, {reason_sql(default_rules(cfg.min_answer_chars, cfg.max_answer_chars))} AS reason FROM ranked
    """, [qa_path])


@task(name=STAGE, cache_policy=stage_cache_policy(STAGE, fingerprint_of), result_serializer="json")
def filter_qa(cfg: FilterConfig, qa: Manifest, acts: Manifest, store: Store) -> Manifest:
    """Drop invalid, duplicate and unextracted QA pairs (each counted) and split by control label."""
    fp = fingerprint_of({"cfg": cfg, "qa": qa, "acts": acts})
    if done := store.finished(STAGE, fp):
        return done
    parts = [str(store.path(acts, f.path)) for f in acts.files_matching("part-")]
    con = duckdb.connect()
    _scored(con, str(store.path(qa, "qa.parquet")), parts, cfg)
    labels = dict(con.execute("SELECT DISTINCT label, family FROM scored WHERE reason IS NULL").fetchall())
    splits = assign_splits(labels, cfg.eval_fraction, cfg.seed)
    con.execute("CREATE TABLE splits (label VARCHAR, split VARCHAR)")
    con.executemany("INSERT INTO splits VALUES (?, ?)", list(splits.items()))
    cols = "qa_id, dialog_id, label, family, category, kind, question, answer"
    with store.open_stage(STAGE, fp) as out:
        rows = {}
        for split in ("train", "eval"):
            rows[f"{split}.parquet"] = copy_to_parquet(
                con, f"SELECT {cols}, split FROM scored JOIN splits USING (label) "
                     f"WHERE reason IS NULL AND split = '{split}' ORDER BY qa_id", out.file(f"{split}.parquet"))
        rows["rejected.parquet"] = copy_to_parquet(
            con, "SELECT qa_id AS item_id, label, 'filter' AS step, reason, question || ' => ' || answer AS detail "
                 "FROM scored WHERE reason IS NOT NULL ORDER BY qa_id", out.file("rejected.parquet"))
        # checked on the written files, not on the assignment that produced them
        leaks = con.execute("SELECT DISTINCT label FROM read_parquet(?) INTERSECT SELECT DISTINCT label FROM "
                            "read_parquet(?)", [str(out.file("train.parquet")), str(out.file("eval.parquet"))]).fetchall()
        if leaks:
            raise RuntimeError(f"filter: control labels in both train and eval: {[l for (l,) in leaks]}")
        dropped = dict(con.execute("SELECT 'dropped_' || reason, count(*) FROM scored WHERE reason IS NOT NULL "
                                   "GROUP BY reason").fetchall())
        counts = {"rows_in": con.execute("SELECT count(*) FROM scored").fetchone()[0],
                  "rows_out": rows["train.parquet"] + rows["eval.parquet"], "n_train": rows["train.parquet"],
                  "n_eval": rows["eval.parquet"], "n_train_labels": sum(s == "train" for s in splits.values()),
                  "n_eval_labels": sum(s == "eval" for s in splits.values()), **dropped}
        manifest = out.commit(version=VERSION, inputs=[qa, acts], rows=rows, counts=counts,
                              config={"filter": cfg.model_dump(mode="json")}, **provenance())
    logger().info("filter: %s", counts)
    publish(manifest, store)
    return manifest
