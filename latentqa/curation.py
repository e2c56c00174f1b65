"""Curation rules: each a named SQL predicate over one QA row; a row is dropped for the first rule it meets.

Columns available to a predicate: the QA table's columns, `nq`/`na` (normalised question/answer),
`dup_rank` (1 for the first row with the same normalised (question, answer)), and `extracted`
(whether the dialog has activations). Order matters only for which reason a row is counted under.
"""

from __future__ import annotations

from dataclasses import dataclass

NORMALIZE_SQL = "trim(regexp_replace(lower({col}), '[^a-z0-9]+', ' ', 'g'))"


@dataclass(frozen=True)
class Rule:
    name: str
    predicate: str  # SQL boolean; true means drop


def default_rules(min_answer_chars: int, max_answer_chars: int) -> list[Rule]:
    return [
        Rule("empty", "coalesce(trim(question), '') = '' OR coalesce(trim(answer), '') = ''"),
        Rule("not_extracted", "NOT extracted"),
        Rule("too_short_answer", f"length(trim(answer)) < {int(min_answer_chars)}"),
        Rule("too_long_answer", f"length(trim(answer)) > {int(max_answer_chars)}"),
        Rule("duplicate_qa", "dup_rank > 1"),
    ]


def reason_sql(rules: list[Rule]) -> str:
    """A CASE expression giving each row's drop reason, or NULL to keep it."""
    whens = " ".join(f"WHEN {r.predicate} THEN '{r.name}'" for r in rules)
    return f"CASE {whens} ELSE NULL END"
