"""sweep: the scaling sweep's results, one table and one plot over every cell's evaluation.

Reads   evaluate/<fp>/summary.parquet of every cell, and the train manifest each one scored
Writes  sweep/<fp>/{sweep.parquet, report.md, scaling.png} + manifest.json   (PROTOCOL.md, "sweep")
Resume  one pass over finished evaluations; the cells themselves are train and evaluate directories, cached
        like any other, so an interrupted sweep reruns only the cells it had not finished.
"""

from __future__ import annotations

from typing import Any

from latentqa.config import SweepConfig
from latentqa.sweep import cell_rows, markdown
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import SWEEP, write_table
from storage.plots import plot_scaling
from storage import outputs
from storage.store import StageDir, Store
from tasks._stage import Made, stage_task
from tasks._ui import publish_report

STAGE, VERSION = "sweep", 1


def fingerprint_of(p: dict[str, Any]) -> str:
    return fingerprint(STAGE, VERSION, sections=[p["cfg"]], inputs=[e.fingerprint for e in p["evaluations"]])


@stage_task(STAGE, VERSION, fingerprint_of)
def sweep(out: StageDir, cfg: SweepConfig, evaluations: list[Manifest], store: Store) -> Made:
    """Gather every cell's primary scores (decoder and controls, n and interval) against its training examples."""
    rows = []
    for evaluation in evaluations:
        model, fraction, n_train = outputs.trained_on(outputs.decoder_of(store, evaluation))
        rows += cell_rows(model, fraction, n_train, outputs.scores(store, evaluation))
    n = write_table(out.file("sweep.parquet"), rows, SWEEP)
    report = markdown(rows, cfg.models)
    out.write_text("report.md", report)
    plot_scaling(rows, cfg.models, out.file("scaling.png"))
    publish_report(report, rows, store)
    return Made(rows={"sweep.parquet": n}, counts={"n_cells": len(evaluations), "n_models": len(cfg.models)},
                summary={"models": cfg.models, "fractions": cfg.fractions},
                images={"scaling.png": "scaling sweep: score against training examples"})
