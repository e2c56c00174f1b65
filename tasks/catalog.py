"""catalog: control catalog files -> the controls this run expands.

Reads   the builtin catalog (latentqa/controls/*.yaml) and any catalog.paths
Writes  catalog/<fp>/controls.parquet + manifest.json   (storage/PROTOCOL.md, section "catalog")
Resume  nothing to resume: the stage is one small file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentqa.catalog import builtin_paths, load_controls, sample_controls
from latentqa.config import CatalogConfig
from storage.fingerprint import file_sha256, fingerprint
from storage.manifest import Manifest
from storage.parquet import CONTROLS, write_table
from storage.store import Store
from tasks._common import fail_if_asked, provenance, publish, stage_task

STAGE, VERSION = "catalog", 1


def _paths(cfg: CatalogConfig) -> list[Path]:
    return (builtin_paths() if cfg.builtin else []) + [Path(p) for p in cfg.paths]


def fingerprint_of(p: dict[str, Any]) -> str:
    cfg: CatalogConfig = p["cfg"]
    # the catalog is identified by its files' bytes, not their names
    files = [file_sha256(path) for path in _paths(cfg)]
    return fingerprint(STAGE, VERSION, sections=[cfg.model_dump(mode="json", exclude={"paths"}), files])


@stage_task(STAGE, fingerprint_of)
def load_catalog(cfg: CatalogConfig, store: Store) -> Manifest:
    """Load, check and sample the controls; write them as a table."""
    fp = fingerprint_of({"cfg": cfg})
    if done := store.finished(STAGE, fp):
        return done
    fail_if_asked(STAGE)
    controls = sample_controls(load_controls(_paths(cfg), cfg.families), cfg.n_controls, cfg.seed)
    if not controls:
        raise ValueError(f"catalog.families={cfg.families} selects no controls from {[str(p) for p in _paths(cfg)]}")
    with store.open_stage(STAGE, fp) as out:
        n = write_table(out.file("controls.parquet"), [c.row() for c in controls], CONTROLS)
        families = {f: sum(c.family == f for c in controls) for f in cfg.families}
        manifest = out.commit(version=VERSION, config=cfg.model_dump(mode="json"), rows={"controls.parquet": n},
                              counts={"n_controls": n, **{f"n_{f}": k for f, k in families.items()}},
                              summary={"catalog_files": [p.name for p in _paths(cfg)]}, **provenance())
    publish(manifest, store)
    return manifest
