"""Training checkpoints inside an open train stage: <fp12>.partial/checkpoints/step-N/.

Each checkpoint is state.safetensors (tensors) plus state.json (metadata), written into step-N.tmp/ and renamed
to step-N/ when both are complete, so a checkpoint directory that exists is whole. Older ones are pruned.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from storage.store import atomic_dir

_STEP = re.compile(r"^step-(\d+)$")


def save_checkpoint(root: Path, step: int, tensors: dict, meta: dict, keep: int = 2) -> Path:
    final = root / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        tmp.mkdir(parents=True)
        save_file(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(meta))
    for old in sorted(_steps(root))[:-keep]:
        shutil.rmtree(root / f"step-{old:06d}")
    return final


def _steps(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    return [int(m[1]) for p in root.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]


def latest_checkpoint(root: Path) -> tuple[dict, dict] | None:
    """(tensors, meta) of the newest whole checkpoint, or None; half-written ones (*.tmp) are removed."""
    for tmp in root.glob("step-*.tmp") if root.is_dir() else []:
        shutil.rmtree(tmp)
    steps = _steps(root)
    if not steps:
        return None
    path = root / f"step-{max(steps):06d}"
    return load_file(path / "state.safetensors"), json.loads((path / "state.json").read_text())
