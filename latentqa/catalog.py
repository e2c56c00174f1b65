"""Control catalog: personas, goals and scenarios that synthesis expands into dialogs and QA pairs.

A catalog file is YAML: `family: <persona|goal|scenario>` and `categories: {category: {slug: text}}`. The
label `<family>-<category>-<slug>` is stable and ties every downstream row back to its control.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml

FAMILIES = ("persona", "goal", "scenario")


@dataclass(frozen=True)
class Control:
    label: str
    family: str
    category: str
    text: str

    def row(self) -> dict:
        return asdict(self)


def builtin_paths() -> list[Path]:
    root = resources.files("latentqa") / "controls"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml"))


def parse_catalog(path: Path) -> list[Control]:
    data = yaml.safe_load(path.read_text()) or {}
    family = data.get("family")
    if family not in FAMILIES:
        raise ValueError(f"{path}: family must be one of {FAMILIES}, got {family!r}")
    categories = data.get("categories")
    if not isinstance(categories, dict) or not categories:
        raise ValueError(f"{path}: 'categories' must map category -> {{slug: text}}")
    controls = []
    for category, entries in categories.items():
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: category {category!r} must map slug -> control text")
        for slug, text in entries.items():
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}: control {category}/{slug} has no text")
            controls.append(Control(f"{family}-{category}-{slug}", family, str(category), text.strip()))
    return controls


def load_controls(paths: list[Path], families: list[str]) -> list[Control]:
    """All controls of the given families; a label defined twice is an error naming both files."""
    seen: dict[str, Path] = {}
    out = []
    for path in paths:
        for control in parse_catalog(path):
            if control.label in seen:
                raise ValueError(f"control label {control.label!r} is defined in both {seen[control.label]} and {path}")
            seen[control.label] = path
            if control.family in families:
                out.append(control)
    return sorted(out, key=lambda c: c.label)


def _rank(label: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{label}".encode()).hexdigest()


def sample_controls(controls: list[Control], n: int | None, seed: int) -> list[Control]:
    """n controls spread evenly over families (round robin in a seeded order); all when n is None."""
    if n is None or n >= len(controls):
        return controls
    by_family: dict[str, list[Control]] = {}
    for c in sorted(controls, key=lambda c: _rank(c.label, seed)):
        by_family.setdefault(c.family, []).append(c)
    picked: list[Control] = []
    queues = [by_family[f] for f in sorted(by_family)]
    while len(picked) < n:
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return sorted(picked, key=lambda c: c.label)
