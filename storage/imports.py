"""Write an imported LatentQA release (latentqa/release.py) as one folder: all of it, or nothing.

  catalog/<family>.yaml, steering/<name>.yaml     the eval controls and steering controls
  qa.parquet, hidden_persona.parquet              reference QA pairs and hidden personas (evaluate)
  dataset/{controls,dialogs,qa}.parquet           the trainable dataset, in the synthesize stage's schema
  import.json                                     source and counts

Everything is written into <out>.partial/ and renamed onto <out> when complete, so an error or a kill never
leaves a half-imported folder (an existing <out> is replaced only then).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa

from storage.parquet import CONTROLS, DIALOGS, QA, write_table
from storage.store import PARTIAL, atomic_path, write_json_atomic

QA_TABLE = pa.schema([("label", pa.string()), ("family", pa.string()), ("question", pa.string()),
                      ("answer", pa.string())])
PERSONA_TABLE = pa.schema([("label", pa.string()), ("text", pa.string()), ("stimulus_user", pa.string())])


def _text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_release(release, dataset, source: Path, out: Path) -> dict[str, int]:
    """Write a checked Release and ReleaseData into `out`; returns the counts."""
    out = Path(out)
    tmp = out.with_name(out.name + PARTIAL)
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "dataset").mkdir(parents=True)
    for family, text in release.catalogs.items():
        _text(tmp / "catalog" / f"{family}.yaml", text)
    for name, text in release.steering.items():
        _text(tmp / "steering" / f"{name}.yaml", text)
    counts = {"controls": release.n_controls, "qa_pairs": write_table(tmp / "qa.parquet", release.qa, QA_TABLE),
              "hidden_personas": write_table(tmp / "hidden_persona.parquet", release.personas, PERSONA_TABLE),
              "steering": len(release.steering),
              "dataset_dialogs": write_table(tmp / "dataset" / "dialogs.parquet", dataset.dialogs, DIALOGS),
              "dataset_qa": write_table(tmp / "dataset" / "qa.parquet", dataset.qa, QA),
              "dataset_controls": write_table(tmp / "dataset" / "controls.parquet", dataset.controls, CONTROLS)}
    write_json_atomic(tmp / "import.json", {"source": str(Path(source).resolve()), "counts": counts,
                                           "dataset_counts": dataset.counts})
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return counts
