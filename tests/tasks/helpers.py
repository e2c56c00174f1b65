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


def run_and_kill(args: list[str], ready, timeout_s: float = 120) -> None:
    """Start `python -c ...args`, wait until ready() is true, then SIGKILL it: a stage killed mid-way."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", *args], cwd=os.getcwd())
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert proc.poll() is None, "the stage ended before it could be killed"
            assert time.monotonic() < deadline, f"not ready within {timeout_s}s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
