"""Curation rules: each a named SQL predicate over one QA row; a row is dropped for the first rule it meets.

Columns a predicate can use: the QA table's columns, `nq`/`na` (normalised question/answer), `extracted`
(the dialog has activations), `dup_rank` (1 for the first row with the same normalised (question, answer) in
its dialog, when its label is the first to have that pair: a pair repeated across labels is kept for one label
only, while a label's several dialogs (behaviours) each keep theirs), `near_dup` (a row of the same dialog with
an earlier qa_id has answer-shingle Jaccard >= the threshold) and
`leaks` (the question names one of its control's distinctive words). Caps (per control, per category) are
applied after the rules, over the rows that survive them. Every drop is counted as `dropped_<rule>`. The
user's own rules (filter.keep_where) run in a sandboxed DuckDB without file or network access.

The filter stage (tasks/filter.py) loads table `base` and calls, in order: `signal_tables` (each label's
distinctive words, the near-duplicate join), `score_rows` (every row's reason, then the caps) and, on the split
files it wrote, `check_no_leaks`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from latentqa.config import FilterConfig

NORMALIZE_SQL = "trim(regexp_replace(lower({col}), '[^a-z0-9]+', ' ', 'g'))"
# word 3-gram shingles of a normalised string (the whole string when it has fewer than 3 words)
SHINGLES_SQL = ("CASE WHEN len(string_split({col}, ' ')) < 3 THEN [{col}] ELSE list_distinct("
                "[array_to_string(list_slice(string_split({col}, ' '), i, i + 2), ' ') "
                "for i in range(1, len(string_split({col}, ' ')) - 1)]) END")
WORDS = "string_split_regex(lower({col}), '[^a-z0-9]+')"
QA_COLUMNS = {"qa_id": "VARCHAR", "dialog_id": "VARCHAR", "label": "VARCHAR", "family": "VARCHAR",
              "category": "VARCHAR", "kind": "VARCHAR", "question": "VARCHAR", "answer": "VARCHAR"}


@dataclass(frozen=True)
class Rule:
    name: str
    predicate: str  # SQL boolean; true means drop


def default_rules(cfg: FilterConfig) -> list[Rule]:
    return [
        Rule("empty", "coalesce(trim(question), '') = '' OR coalesce(trim(answer), '') = ''"),
        Rule("not_extracted", "NOT extracted"),
        Rule("too_short_answer", f"length(trim(answer)) < {int(cfg.min_answer_chars)}"),
        Rule("too_long_answer", f"length(trim(answer)) > {int(cfg.max_answer_chars)}"),
        Rule("leaks_control_words", "leaks"),
        Rule("duplicate_qa", "dup_rank > 1"),
        Rule("near_duplicate", "near_dup"),
        # user rules were evaluated in the sandbox (user_rule_drops); here they only look their verdicts up
        *[Rule(f"user_{name}", f"qa_id IN (SELECT qa_id FROM user_drops WHERE rule = '{name}')")
          for name in sorted(cfg.keep_where)],
    ]


def reason_sql(rules: list[Rule]) -> str:
    """A CASE expression giving each row's drop reason, or NULL to keep it."""
    whens = " ".join(f"WHEN {r.predicate} THEN '{r.name}'" for r in rules)
    return f"CASE {whens} ELSE NULL END"


def signal_tables(con: duckdb.DuckDBPyConnection, cfg: FilterConfig) -> None:
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


def score_rows(con: duckdb.DuckDBPyConnection, cfg: FilterConfig) -> None:
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


def check_no_leaks(con: duckdb.DuckDBPyConnection, train: str, eval_: str, dialogs: str) -> None:
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


def sandbox(rows: pa.Table | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for user SQL (filter.keep_where, which a deployment's UI form can set): table `qa`
    with the QA columns (and `rows`, if given), then no file system, network or extensions, locked so the SQL
    cannot turn them back on. A rule like `qa_id IN (SELECT ... FROM read_csv('/etc/passwd'))` fails there."""
    con = duckdb.connect()
    con.execute("CREATE TABLE qa (" + ", ".join(f"{c} {t}" for c, t in QA_COLUMNS.items()) + ")")
    if rows is not None:
        con.register("rows_in", rows)
        con.execute(f"INSERT INTO qa SELECT {', '.join(QA_COLUMNS)} FROM rows_in")
        con.unregister("rows_in")
    con.execute("SET enable_external_access = false")
    con.execute(f"SET memory_limit = '{RULE_MEMORY}'")
    con.execute("SET lock_configuration = true")
    return con


RULE_MEMORY = "2GB"  # a user rule's DuckDB memory, in the sandbox
RULE_CHECK_SECONDS = 5.0  # the pre-run check runs each rule on an empty table: anything slower is not a filter
RULE_SECONDS = 600.0  # the stage runs it on the real rows


def rule_sql(expr: str) -> str:
    """The one statement a user rule runs as, in the check and in the stage alike: the ids of the rows it drops."""
    return f"SELECT qa_id FROM qa WHERE NOT coalesce(({expr}), false)"


def run_rule(con: duckdb.DuckDBPyConnection, name: str, expr: str, seconds: float) -> list[tuple]:
    """A user rule's statement, interrupted after `seconds`; a rule past its time is a ValueError naming it."""
    timer = threading.Timer(seconds, con.interrupt)
    timer.start()
    try:
        return con.execute(rule_sql(expr)).fetchall()
    except duckdb.InterruptException:
        raise ValueError(f"filter.keep_where.{name}: {expr!r} ran past {seconds:g} s and was stopped; a rule is "
                         "one condition on a row's columns") from None
    finally:
        timer.cancel()


def user_rule_drops(rows: pa.Table | None, keep_where: dict[str, str]) -> pa.Table:
    """(qa_id, rule) for every row a filter.keep_where rule drops (its condition not true), evaluated in the
    sandbox."""
    if not keep_where:
        return pa.table({"qa_id": [], "rule": []}, schema=pa.schema([("qa_id", pa.string()), ("rule", pa.string())]))
    con = sandbox(rows)
    drops = [(qa_id, name) for name, expr in sorted(keep_where.items())
             for (qa_id,) in run_rule(con, name, expr, RULE_SECONDS)]
    con.close()
    return pa.table({"qa_id": [d[0] for d in drops], "rule": [d[1] for d in drops]},
                    schema=pa.schema([("qa_id", pa.string()), ("rule", pa.string())]))


def validate_keep_where(keep_where: dict[str, str]) -> None:
    """Each user rule must be one SQL boolean expression over the QA columns that reads nothing else; raises
    ValueError naming it."""
    con = sandbox()
    for name, expr in keep_where.items():
        field = f"filter.keep_where.{name}"
        if not name.isidentifier():
            raise ValueError(f"{field}: rule names must be identifiers")
        sql = rule_sql(expr)
        try:
            statements = con.extract_statements(sql)
            if len(statements) != 1:
                raise ValueError(f"{field}: {expr!r} must be a single expression, not several statements")
            run_rule(con, name, expr, RULE_CHECK_SECONDS)
        except duckdb.Error as err:
            first = str(err).splitlines()[0]
            raise ValueError(f"{field}: {expr!r} is not a valid condition on columns {sorted(QA_COLUMNS)}: {first}") from None
