"""Build stage directories by hand for stage tests (real files, written through the store's commit)."""

from __future__ import annotations

from storage.parquet import DIALOGS, QA, write_table
from storage.store import Store
from tests.conftest import DIALOGS as BASE

SYNTH_FP = "5" * 64


def dialog_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        d = BASE[i % len(BASE)]
        label = f"persona-test-c{i:03d}"
        rows.append({"dialog_id": f"{label}:d0", "label": label, "family": "persona", "category": "test",
                     **{k: (v if k == "control_user" else f"{v} ({i})") for k, v in d.items()}})
    return rows


def make_synth(store: Store, dialogs: list[dict], qa: list[dict] | None = None):
    """A finished synthesize directory holding the given dialogs and QA rows."""
    with store.open_stage("synthesize", SYNTH_FP) as out:
        write_table(out.file("dialogs.parquet"), dialogs, DIALOGS)
        write_table(out.file("qa.parquet"), qa or [], QA)
        return out.commit(version=1, counts={"n_dialogs": len(dialogs)})
