"""Curation rules: each a named SQL predicate over one QA row; a row is dropped for the first rule it meets.

Columns a predicate can use: the QA table's columns, `nq`/`na` (normalised question/answer), `extracted`
(the dialog has activations), `dup_rank` (1 for the first row with the same normalised (question, answer) in
its dialog, when its label is the first to have that pair: a pair repeated across labels is kept for one label
only, while a label's several dialogs (behaviours) each keep theirs), `near_dup` (a row of the same dialog with
an earlier qa_id has answer-shingle Jaccard >= the threshold) and
`leaks` (the question names one of its control's distinctive words). Caps (per control, per category) are
applied after the rules, over the rows that survive them. Every drop is counted as `dropped_<rule>`. The
user's own rules (filter.keep_where) run in a sandboxed DuckDB without file or network access.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from latentqa.config import FilterConfig

NORMALIZE_SQL = "trim(regexp_replace(lower({col}), '[^a-z0-9]+', ' ', 'g'))"
# word 3-gram shingles of a normalised string (the whole string when it has fewer than 3 words)
SHINGLES_SQL = ("CASE WHEN len(string_split({col}, ' ')) < 3 THEN [{col}] ELSE list_distinct("
                "[array_to_string(list_slice(string_split({col}, ' '), i, i + 2), ' ') "
                "for i in range(1, len(string_split({col}, ' ')) - 1)]) END")
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
    con.execute("SET lock_configuration = true")
    return con


def user_rule_drops(rows: pa.Table | None, keep_where: dict[str, str]) -> pa.Table:
    """(qa_id, rule) for every row a filter.keep_where rule drops (its condition not true), evaluated in the
    sandbox."""
    if not keep_where:
        return pa.table({"qa_id": [], "rule": []}, schema=pa.schema([("qa_id", pa.string()), ("rule", pa.string())]))
    con = sandbox(rows)
    drops = [(qa_id, name) for name, expr in sorted(keep_where.items())
             for (qa_id,) in con.execute(f"SELECT qa_id FROM qa WHERE NOT coalesce(({expr}), false)").fetchall()]
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
        sql = f"SELECT count(*) FROM qa WHERE ({expr})"
        try:
            statements = con.extract_statements(sql)
            if len(statements) != 1:
                raise ValueError(f"{field}: {expr!r} must be a single expression, not several statements")
            con.execute(sql)
        except duckdb.Error as err:
            first = str(err).splitlines()[0]
            raise ValueError(f"{field}: {expr!r} is not a valid condition on columns {sorted(QA_COLUMNS)}: {first}") from None
