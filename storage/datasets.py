"""Named dataset versions: which stage directories make one complete dataset, and which one is `latest`.

A dataset version is the chain catalog -> synthesize -> extract -> filter that one run completed; its id is the
filter fingerprint (which covers everything upstream). Layout under the store root (PROTOCOL.md, "Datasets"):

  datasets/<name>/versions/<id12>.json   one record per complete version, written after its filter directory
  datasets/<name>/latest.json            a copy of the newest record; replaced atomically, so it always names
                                         a complete version
  datasets/<name>/versions/<id12>.lease  runs that read the version hold a shared flock on it; gc skips it
  datasets/<name>/writer.lock            held by the run that regenerates <name>: one writer per dataset

`gc(store, keep)` removes the versions beyond the newest `keep` of each name (never `latest`, never a leased
one) together with every stage directory reachable only from removed versions: their own chain and what was
derived from it (decoders, evaluations). Directories no version reaches are left alone.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, Iterator

from storage.fingerprint import FP_CHARS
from storage.manifest import Manifest
from storage.store import MANIFEST, Store, StoreError, is_stage_dir, read_manifest, write_json_atomic

DATASETS = "datasets"
CHAIN = ("catalog", "synthesize", "extract", "filter")


def _dir(store: Store, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"dataset name {name!r} must be a plain, non-empty file name")
    return store.root / DATASETS / name


def _record(store: Store, name: str, version: str) -> Path:
    return _dir(store, name) / "versions" / f"{version[:FP_CHARS]}.json"


def _lease(store: Store, name: str, version: str) -> Path:
    return _dir(store, name) / "versions" / f"{version[:FP_CHARS]}.lease"


def record_version(store: Store, name: str, manifests: dict[str, Manifest], flow_run_id: str | None = None,
                   note: dict[str, Any] | None = None) -> tuple[dict, bool]:
    """Record a complete version (its chain's manifests, all finished) and move `latest` to it if it is new.

    Returns (record, is_new). A run that completes an already recorded version (all cache hits) leaves
    `latest` where it is, so a scheduled rerun never moves it back to an older version."""
    missing = [s for s in CHAIN if s not in manifests]
    if missing:
        raise ValueError(f"dataset {name!r}: a version needs the stages {list(CHAIN)}, missing {missing}")
    for m in manifests.values():
        store.path(m)  # raises unless finished
    version = manifests["filter"].fingerprint
    path = _record(store, name, version)
    is_new = not path.exists()
    record = json.loads(path.read_text()) if not is_new else {
        "name": name, "version": version, "created_at": datetime.now(UTC).isoformat(),  # sub-second: versions sort by it
        "flow_run_id": flow_run_id, **(note or {}),
        # a role names what a stage is to the chain; an imported dataset's `import` stage fills catalog and synthesize
        "stages": {s: {"stage": manifests[s].stage, "fingerprint": manifests[s].fingerprint, "dir": manifests[s].dir}
                   for s in CHAIN}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_new:
        write_json_atomic(path, record)
    latest = _dir(store, name) / "latest.json"
    if is_new or not latest.exists():
        write_json_atomic(latest, record)  # moved only after the version record exists, never to a partial one
    return record, is_new


def versions(store: Store, name: str) -> list[dict]:
    """The recorded versions of `name`, newest first."""
    folder = _dir(store, name) / "versions"
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(records, key=lambda r: r["created_at"], reverse=True)


def names(store: Store) -> list[str]:
    root = store.root / DATASETS
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def resolve_version(store: Store, name: str, version: str | None = None) -> dict:
    """The record of `version` (a fingerprint prefix) of `name`, or of its `latest` version."""
    if version is None:
        latest = _dir(store, name) / "latest.json"
        if not latest.is_file():
            raise LookupError(f"dataset {name!r} has no complete version in {store.root}; run regenerate-dataset "
                              "(or full-pipeline) with this config first")
        return json.loads(latest.read_text())
    found = [r for r in versions(store, name) if r["version"].startswith(version)]
    if len(found) != 1:
        known = ", ".join(r["version"][:FP_CHARS] for r in versions(store, name)) or "none"
        raise LookupError(f"dataset {name!r}: version {version!r} matches {len(found)} versions (known: {known})")
    return found[0]


def chain_manifests(store: Store, record: dict) -> dict[str, Manifest]:
    """The finished manifests of a version's chain; a clear error if gc or a user removed one of them."""
    out = {}
    for role, ref in record["stages"].items():
        stage = ref.get("stage", role)  # records before imports had no stage field: the role was the stage
        manifest = store.finished(stage, ref["fingerprint"])
        if manifest is None:
            raise StoreError(f"dataset {record['name']!r} version {record['version'][:FP_CHARS]}: {stage} directory "
                             f"{ref['dir']} is gone; regenerate the dataset")
        out[role] = manifest
    return out


@contextmanager
def open_version(store: Store, name: str, version: str | None = None) -> Iterator[tuple[dict, dict[str, Manifest]]]:
    """(record, chain manifests) of a version, leased for the duration of the block."""
    record = resolve_version(store, name, version)
    with lease(store, name, record["version"]):
        if not _record(store, name, record["version"]).exists():
            raise StoreError(f"dataset {name!r} version {record['version'][:FP_CHARS]} was removed by gc just now")
        yield record, chain_manifests(store, record)


@contextmanager
def lease(store: Store, name: str, version: str) -> Iterator[None]:
    """Hold a version while a run reads it: gc will not remove it (a shared lock, many readers at once)."""
    path = _lease(store, name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        yield


@contextmanager
def writer(store: Store, name: str, wait_s: float = 24 * 3600, on_wait=None) -> Iterator[None]:
    """One regeneration of `name` at a time: a second one waits here, then finds the first one's work cached."""
    path = _dir(store, name) / "writer.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"dataset {name!r} is being regenerated by another run ({path})") from None
                if not told and on_wait:
                    on_wait(f"dataset {name!r} is being regenerated by another run; waiting for it")
                    told = True
                time.sleep(1.0)
        yield


def _claim(path: Path):
    """An exclusive hold on a version's lease file (kept open until gc ends), or None while a run reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a")  # noqa: SIM115 - held across the removal, closed by gc
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


@dataclass
class GcPlan:
    removed_versions: list[str]   # "<name>/<id12>"
    kept_versions: list[str]
    leased_versions: list[str]    # beyond `keep` but in use: kept this time
    removed_dirs: list[str]       # stage directories relative to the root


def _graph(store: Store) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    up: dict[str, list[str]] = {}
    down: dict[str, list[str]] = {}
    for manifest_path in store.root.glob(f"*/*/{MANIFEST}"):
        if not is_stage_dir(manifest_path.parent):
            continue
        m = read_manifest(manifest_path.parent)
        up[m.dir] = [i.dir for i in m.inputs]
        for i in m.inputs:
            down.setdefault(i.dir, []).append(m.dir)
    return up, down


def _closure(start: list[str], edges: dict[str, list[str]]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo.extend(edges.get(d, []))
    return seen


def gc(store: Store, keep: int, dry_run: bool = False) -> GcPlan:
    """Remove all but the newest `keep` versions of every dataset, and the directories only they reach."""
    if keep < 1:
        raise ValueError(f"--keep must be at least 1 (got {keep}): latest is always kept")
    up, down = _graph(store)
    kept, removed, leased, claims = [], [], [], []
    for name in names(store):
        latest = resolve_version(store, name)["version"] if (_dir(store, name) / "latest.json").exists() else None
        for i, rec in enumerate(versions(store, name)):
            tag = f"{name}/{rec['version'][:FP_CHARS]}"
            if i < keep or rec["version"] == latest:
                kept.append((tag, rec))
            elif (claim := _claim(_lease(store, name, rec["version"]))) is None:
                leased.append((tag, rec))
            else:
                claims.append(claim)
                removed.append((tag, rec))

    def reach(recs) -> set[str]:
        roots = [ref["dir"] for _, r in recs for ref in r["stages"].values()]
        return _closure(roots, up) | _closure([r["stages"]["filter"]["dir"] for _, r in recs], down)

    live = _closure(list(reach(kept + leased)), up)  # and whatever a kept derivation reads
    doomed = sorted(reach(removed) - live)
    try:
        if not dry_run:
            _remove(store, doomed, removed)
    finally:
        for claim in claims:
            claim.close()
    return GcPlan([t for t, _ in removed], [t for t, _ in kept], [t for t, _ in leased], doomed)


def _remove(store: Store, doomed: list[str], removed: list) -> None:
    for _, rec in removed:  # the record first: from here on no run can resolve the version
        _record(store, rec["name"], rec["version"]).unlink(missing_ok=True)
        _lease(store, rec["name"], rec["version"]).unlink(missing_ok=True)
    for d in doomed:
        stage_dir = store.root / d
        (stage_dir / MANIFEST).unlink(missing_ok=True)  # unfinished first: nobody picks up a half-deleted dir
        shutil.rmtree(stage_dir, ignore_errors=True)
