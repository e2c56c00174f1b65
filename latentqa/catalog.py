"""Control catalog: personas, goals and scenarios that synthesis expands into dialogs and QA pairs.

A catalog file is YAML: `family: <persona|goal|scenario>` and `categories: {category: {slug: text}}`. The
label `<family>-<category>-<slug>` is stable and ties every downstream row back to its control.
"""

from __future__ import annotations

import hashlib
import re
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
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'family' and 'categories', got {type(data).__name__}")
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


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i: i + 3]) for i in range(max(len(words) - 2, 1))}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of word 3-grams (the near-duplicate measure the filter stage uses for answers)."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else float(a.strip().lower() == b.strip().lower())


def accept_new(existing: list[Control], candidates: list[Control], threshold: float = 0.5
               ) -> tuple[list[Control], list[tuple[Control, str, str]]]:
    """Candidates that are new: not a label, text or near-duplicate (>= threshold) of the catalog or of an
    earlier candidate. Returns (accepted, [(candidate, reason, what it duplicates)])."""
    kept: list[Control] = []
    rejected: list[tuple[Control, str, str]] = []
    labels = {c.label for c in existing}
    for cand in candidates:
        pool = [c for c in (*existing, *kept) if c.family == cand.family]
        if cand.label in labels:
            rejected.append((cand, "duplicate_label", cand.label))
            continue
        best = max(pool, key=lambda c: similarity(cand.text, c.text), default=None)
        score = similarity(cand.text, best.text) if best else 0.0
        if score >= threshold:
            rejected.append((cand, "duplicate_text" if score == 1.0 else "near_duplicate", best.label))
            continue
        kept.append(cand)
        labels.add(cand.label)
    return kept, rejected


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
