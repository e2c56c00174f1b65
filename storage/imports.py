"""Write an imported LatentQA release (latentqa/release.py) as catalog YAML, Parquet tables and controls."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from storage.parquet import write_table
from storage.store import atomic_path, write_json_atomic

QA_TABLE = pa.schema([("label", pa.string()), ("family", pa.string()), ("question", pa.string()),
                      ("answer", pa.string())])
PERSONA_TABLE = pa.schema([("label", pa.string()), ("text", pa.string()), ("stimulus_user", pa.string())])


def _text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_release(release, source: Path, out: Path) -> dict[str, int]:
    out = Path(out)
    (out / "catalog").mkdir(parents=True, exist_ok=True)
    (out / "steering").mkdir(exist_ok=True)
    for family, text in release.catalogs.items():
        _text(out / "catalog" / f"{family}.yaml", text)
    for name, text in release.steering.items():
        _text(out / "steering" / f"{name}.yaml", text)
    counts = {"controls": release.n_controls, "qa_pairs": write_table(out / "qa.parquet", release.qa, QA_TABLE),
              "hidden_personas": write_table(out / "hidden_persona.parquet", release.personas, PERSONA_TABLE),
              "steering": len(release.steering)}
    write_json_atomic(out / "import.json", {"source": str(Path(source).resolve()), "counts": counts})
    return counts
