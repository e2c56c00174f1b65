"""filter: DuckDB over the synthesized QA and the extracted activations -> clean, leak-free train/eval splits.

Reads   synthesize/<fp>/{qa,dialogs}.parquet, extract/<fp>/part-*.parquet (dialog ids only)
Writes  filter/<fp>/{train,eval,rejected}.parquet + manifest.json   (storage/PROTOCOL.md, "filter")
Resume  one streaming pass of SQL (memory bounded by DuckDB, spilling into the stage directory); nothing to resume.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
from latentqa.config import FilterConfig
from latentqa.curation import NORMALIZE_SQL, check_no_leaks, score_rows, signal_tables, user_rule_drops
from latentqa.splits import assign_splits
from storage.duck import copy_to_parquet
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage import outputs
from storage.store import StageDir, Store
from tasks._stage import Made, stage_task
from tasks._ui import logger

STAGE, VERSION = "filter", 2


def fingerprint_of(p: dict[str, Any]) -> str:
    return fingerprint(STAGE, VERSION, sections=[p["cfg"]], inputs=[p["qa"].fingerprint, p["acts"].fingerprint])


def _load(con: duckdb.DuckDBPyConnection, qa: str, dialogs: str, parts: list[str]) -> None:
    """Table `base`: QA rows with their control text, normalised text and whether the dialog was extracted."""
    con.execute("CREATE TABLE extracted AS SELECT DISTINCT dialog_id FROM read_parquet(?)", [parts]) if parts \
        else con.execute("CREATE TABLE extracted (dialog_id VARCHAR)")
    con.execute(f"""CREATE TABLE base AS
        SELECT q.*, d.control_user, {NORMALIZE_SQL.format(col='q.question')} AS nq,
               {NORMALIZE_SQL.format(col='q.answer')} AS na, e.dialog_id IS NOT NULL AS extracted
        FROM read_parquet(?) q
        LEFT JOIN (SELECT dialog_id, control_user FROM read_parquet(?)) d USING (dialog_id)
        LEFT JOIN extracted e USING (dialog_id)""", [qa, dialogs])


def _split_table(con: duckdb.DuckDBPyConnection, cfg: FilterConfig) -> dict[str, str]:
    rows = con.execute("SELECT DISTINCT label, family, category FROM scored WHERE reason IS NULL").fetchall()
    splits = assign_splits({l: f for l, f, _ in rows}, cfg.eval_fraction, cfg.seed, {l: c for l, _, c in rows},
                           cfg.heldout_categories)
    con.register("splits", pa.table({"label": list(splits), "split": list(splits.values())}))
    return splits


@stage_task(STAGE, VERSION, fingerprint_of)
def filter_qa(out: StageDir, cfg: FilterConfig, qa: Manifest, acts: Manifest, store: Store) -> Made:
    """Drop invalid, duplicate, leaking and unextracted QA pairs (each counted), cap, and split by control."""
    parts = [str(store.path(acts, f.path)) for f in acts.files_matching("part-")]
    dialogs = str(outputs.dialogs_path(store, qa))
    con = duckdb.connect()
    con.execute(f"SET temp_directory = '{out.dir / 'duckdb.tmp'}'")  # spills stay inside the stage directory
    con.execute("SET memory_limit = '1GB'")
    _load(con, str(outputs.qa_path(store, qa)), dialogs, parts)
    rows = con.sql("SELECT * FROM base").to_arrow_table() if cfg.keep_where else None
    con.register("user_drops", user_rule_drops(rows, cfg.keep_where))  # evaluated in a sandbox
    signal_tables(con, cfg)
    score_rows(con, cfg)
    splits = _split_table(con, cfg)
    cols = "qa_id, dialog_id, label, family, category, kind, question, answer"
    rows = {f"{s}.parquet": copy_to_parquet(con, f"SELECT {cols}, split FROM scored JOIN splits USING (label) WHERE "
                                                 f"reason IS NULL AND split = '{s}' ORDER BY qa_id", out.file(f"{s}.parquet"))
            for s in ("train", "eval")}
    rows["rejected.parquet"] = copy_to_parquet(
        con, "SELECT qa_id AS item_id, label, 'filter' AS step, reason, question || ' => ' || answer AS detail "
             "FROM scored WHERE reason IS NOT NULL ORDER BY qa_id", out.file("rejected.parquet"))
    check_no_leaks(con, str(out.file("train.parquet")), str(out.file("eval.parquet")), dialogs)
    dropped = dict(con.execute("SELECT 'dropped_' || reason, count(*) FROM scored WHERE reason IS NOT NULL "
                               "GROUP BY reason").fetchall())
    counts = {"rows_in": con.execute("SELECT count(*) FROM scored").fetchone()[0],
              "rows_out": rows["train.parquet"] + rows["eval.parquet"], "n_train": rows["train.parquet"],
              "n_eval": rows["eval.parquet"], "n_train_labels": sum(s == "train" for s in splits.values()),
              "n_eval_labels": sum(s == "eval" for s in splits.values()), **dropped}
    con.close()
    out.remove("duckdb.tmp")
    logger().info("filter: %s", counts)
    return Made(counts=counts, rows=rows)
