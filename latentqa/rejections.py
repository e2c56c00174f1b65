"""What a stage dropped and why: one row per rejected item (storage/parquet.py's REJECTED schema), and the
manifest's counts of them (PROTOCOL.md, "Manifest")."""

from __future__ import annotations

from typing import Iterable


def reject(item_id: str, step: str, reason: str, detail: str = "", label: str | None = None) -> dict[str, str]:
    """A rejected row; `label` defaults to `item_id` for stages whose items are controls."""
    return {"item_id": item_id, "label": item_id if label is None else label, "step": step, "reason": reason,
            "detail": detail}


def drop_counts(rejected: Iterable[dict], prefix: str = "dropped_") -> dict[str, int]:
    """`<prefix><reason>` -> how many rejected rows have that reason. A prefix can name the row's step:
    "failed_{step}_"."""
    counts: dict[str, int] = {}
    for r in rejected:
        key = prefix.format(**r) + r["reason"]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
