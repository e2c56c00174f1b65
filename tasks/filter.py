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
from latentqa.curation import NORMALIZE_SQL, SHINGLES_SQL, default_rules, reason_sql, user_rule_drops
from latentqa.splits import assign_splits
from storage.duck import copy_to_parquet
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.store import Store
from tasks._stage import fail_if_asked, provenance, stage_task
from tasks._ui import logger, publish

STAGE, VERSION = "filter", 2
WORDS = "string_split_regex(lower({col}), '[^a-z0-9]+')"


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


def _signals(con: duckdb.DuckDBPyConnection, cfg: FilterConfig) -> None:
    """Tables `distinctive` (label -> its control's rare words) and `near` (qa_ids repeating an earlier answer)."""
    con.execute(f"""CREATE TABLE words AS SELECT DISTINCT label, unnest({WORDS.format(col='control_user')}) AS word
                    FROM (SELECT DISTINCT label, control_user FROM base WHERE control_user IS NOT NULL)""")
    con.execute("""CREATE TABLE distinctive AS
        SELECT label, list(word) AS words FROM words
        JOIN (SELECT word, count(*) AS df FROM words GROUP BY word) USING (word)
        WHERE length(word) >= 4 AND df <= greatest(1, floor(? * (SELECT count(DISTINCT label) FROM words)))
        GROUP BY label""", [cfg.leak_max_df])
    con.execute(f"CREATE TABLE shingled AS SELECT qa_id, dialog_id, {SHINGLES_SQL.format(col='na')} AS sh FROM base")
    # within one dialog: a label's other dialogs (the release's behaviours) carry the same pairs on purpose
    con.execute("""CREATE TABLE near AS SELECT DISTINCT b.qa_id FROM shingled a JOIN shingled b
                   ON a.dialog_id = b.dialog_id AND a.qa_id < b.qa_id
                   WHERE len(list_intersect(a.sh, b.sh)) / len(list_distinct(list_concat(a.sh, b.sh))) >= ?""",
                [cfg.near_dup_threshold])


def _score(con: duckdb.DuckDBPyConnection, cfg: FilterConfig) -> None:
    """Table `scored`: every QA row with the reason it is dropped (NULL when kept), caps applied last."""
    con.execute(f"""CREATE TABLE scored AS
        WITH first AS (SELECT base.*, min(qa_id) OVER (PARTITION BY nq, na, label) AS label_first FROM base),
        r AS (
            SELECT first.*, CASE WHEN dense_rank() OVER (PARTITION BY nq, na ORDER BY label_first) > 1 THEN 2
                                 ELSE row_number() OVER (PARTITION BY nq, na, dialog_id ORDER BY qa_id) END AS dup_rank,
                   near.qa_id IS NOT NULL AS near_dup,
                   coalesce(list_has_any({WORDS.format(col='question')}, distinctive.words), false) AS leaks
            FROM first LEFT JOIN near USING (qa_id) LEFT JOIN distinctive USING (label))
        SELECT *, {reason_sql(default_rules(cfg))} AS reason FROM r""")
    for cap, key, reason in ((cfg.max_qa_per_control, "label", "over_cap_control"),
                             (cfg.max_qa_per_category, "category", "over_cap_category")):
        if cap is not None:
            con.execute(f"""UPDATE scored SET reason = '{reason}' WHERE qa_id IN (
                SELECT qa_id FROM (SELECT qa_id, row_number() OVER (PARTITION BY {key} ORDER BY hash(qa_id || ?)) AS rn
                                   FROM scored WHERE reason IS NULL) WHERE rn > ?)""", [str(cfg.seed), cap])


def _split_table(con: duckdb.DuckDBPyConnection, cfg: FilterConfig) -> dict[str, str]:
    rows = con.execute("SELECT DISTINCT label, family, category FROM scored WHERE reason IS NULL").fetchall()
    splits = assign_splits({l: f for l, f, _ in rows}, cfg.eval_fraction, cfg.seed, {l: c for l, _, c in rows},
                           cfg.heldout_categories)
    con.register("splits", pa.table({"label": list(splits), "split": list(splits.values())}))
    return splits


def _check_leaks(con: duckdb.DuckDBPyConnection, train: str, eval_: str, dialogs: str) -> None:
    """On the written files: no control label, and no control text under another label, in both splits."""
    labels = con.execute("SELECT DISTINCT label FROM read_parquet(?) INTERSECT SELECT DISTINCT label FROM read_parquet(?)",
                         [train, eval_]).fetchall()
    text = f"{NORMALIZE_SQL.format(col='d.control_user')}"
    texts = con.execute(f"""
        SELECT t.label, e.label FROM
          (SELECT DISTINCT s.label, {text} AS t FROM read_parquet(?) s JOIN read_parquet(?) d USING (dialog_id)) t
        JOIN (SELECT DISTINCT s.label, {text} AS t FROM read_parquet(?) s JOIN read_parquet(?) d USING (dialog_id)) e
        USING (t)""", [train, dialogs, eval_, dialogs]).fetchall()
    if labels or texts:
        raise RuntimeError(f"filter: controls in both train and eval: labels {[l for (l,) in labels]}, same control "
                           f"text under train/eval labels {texts}; deduplicate the control catalog")


@stage_task(STAGE, fingerprint_of)
def filter_qa(cfg: FilterConfig, qa: Manifest, acts: Manifest, store: Store) -> Manifest:
    """Drop invalid, duplicate, leaking and unextracted QA pairs (each counted), cap, and split by control."""
    fp = fingerprint_of({"cfg": cfg, "qa": qa, "acts": acts})
    if done := store.finished(STAGE, fp):
        return done
    fail_if_asked(STAGE)
    parts = [str(store.path(acts, f.path)) for f in acts.files_matching("part-")]
    dialogs = str(store.path(qa, "dialogs.parquet"))
    with store.open_stage(STAGE, fp) as out:
        con = duckdb.connect()
        con.execute(f"SET temp_directory = '{out.dir / 'duckdb.tmp'}'")  # spills stay inside the stage directory
        con.execute("SET memory_limit = '1GB'")
        _load(con, str(store.path(qa, "qa.parquet")), dialogs, parts)
        rows = con.execute("SELECT * FROM base").to_arrow_table() if cfg.keep_where else None
        con.register("user_drops", user_rule_drops(rows, cfg.keep_where))  # evaluated in a sandbox
        _signals(con, cfg)
        _score(con, cfg)
        splits = _split_table(con, cfg)
        cols = "qa_id, dialog_id, label, family, category, kind, question, answer"
        rows = {f"{s}.parquet": copy_to_parquet(con, f"SELECT {cols}, split FROM scored JOIN splits USING (label) WHERE "
                                                     f"reason IS NULL AND split = '{s}' ORDER BY qa_id", out.file(f"{s}.parquet"))
                for s in ("train", "eval")}
        rows["rejected.parquet"] = copy_to_parquet(
            con, "SELECT qa_id AS item_id, label, 'filter' AS step, reason, question || ' => ' || answer AS detail "
                 "FROM scored WHERE reason IS NOT NULL ORDER BY qa_id", out.file("rejected.parquet"))
        _check_leaks(con, str(out.file("train.parquet")), str(out.file("eval.parquet")), dialogs)
        dropped = dict(con.execute("SELECT 'dropped_' || reason, count(*) FROM scored WHERE reason IS NOT NULL "
                                   "GROUP BY reason").fetchall())
        counts = {"rows_in": con.execute("SELECT count(*) FROM scored").fetchone()[0],
                  "rows_out": rows["train.parquet"] + rows["eval.parquet"], "n_train": rows["train.parquet"],
                  "n_eval": rows["eval.parquet"], "n_train_labels": sum(s == "train" for s in splits.values()),
                  "n_eval_labels": sum(s == "eval" for s in splits.values()), **dropped}
        con.close()
        out.remove("duckdb.tmp")
        manifest = out.commit(version=VERSION, inputs=[qa, acts], rows=rows, counts=counts,
                              config={"filter": cfg.model_dump(mode="json")}, **provenance())
    logger().info("filter: %s", counts)
    publish(manifest, store)
    return manifest
