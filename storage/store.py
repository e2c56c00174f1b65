"""Store: stage directories under one root, named by fingerprint, finished when manifest.json exists.

A stage writes into <root>/<stage>/<fp12>.partial/, renames every file into place only once complete,
writes manifest.json last and then renames the directory to <root>/<stage>/<fp12>/ (PROTOCOL.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from storage import PROTOCOL_VERSION
from storage.fingerprint import FP_CHARS, file_sha256
from storage.manifest import FileEntry, InputRef, Manifest

MANIFEST = "manifest.json"
PARTIAL = ".partial"
TMP = ".tmp"


class StoreError(RuntimeError):
    """A store directory is not what PROTOCOL.md says it should be."""


def is_stage_dir(path: Path) -> bool:
    """A finished stage directory: <root>/<stage>/<fp12>/ holding manifest.json."""
    return path.is_dir() and not path.name.endswith(PARTIAL) and (path / MANIFEST).is_file()


HASH_ON_HIT = 64 * 2**20  # files up to this size are hashed on every cache hit; larger ones checked by size and,
# for Parquet, by their footer (a full hash of every activation part on every hit would cost a read of the store)


def check_files(stage_dir: Path, manifest: Manifest, hash_up_to: int | None) -> None:
    """What a cache hit depends on: every file the manifest lists is there with its recorded size; files up to
    `hash_up_to` bytes have its sha256, larger Parquet files a readable footer. A damaged file is an error naming
    it, never a cached result. `hash_up_to=None` hashes every file (`latentqa verify`)."""
    for entry in manifest.files:
        path = stage_dir / entry.path
        size = path.stat().st_size if path.is_file() else None
        if size != entry.bytes:
            found = "missing" if size is None else f"{size} bytes"
            raise StoreError(f"{path} is {found}, its manifest says {entry.bytes} bytes: {stage_dir} was damaged "
                             "after it was written; move it aside and rerun its stage to recompute it")
        if hash_up_to is None or entry.bytes <= hash_up_to:
            if file_sha256(path) != entry.sha256:
                raise StoreError(f"{path} does not have the sha256 its manifest records: {stage_dir} was damaged "
                                 "after it was written (same size, other bytes); move it aside and rerun its stage")
        elif path.suffix == ".parquet" and not _parquet_footer_ok(path):
            raise StoreError(f"{path}: its Parquet footer cannot be read: {stage_dir} was damaged after it was "
                             "written; move it aside and rerun its stage")


def _parquet_footer_ok(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
        return True
    except Exception:  # pyarrow's errors for a damaged file vary by version
        return False


def read_manifest(stage_dir: Path) -> Manifest:
    path = stage_dir / MANIFEST
    if not path.is_file():
        raise StoreError(f"{stage_dir} has no {MANIFEST}: it is not a finished stage directory (rerun the stage)")
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except ValueError as err:  # pydantic's ValidationError (malformed JSON included) is a ValueError
        raise StoreError(f"{path} is damaged ({str(err).splitlines()[0]}); move {stage_dir} aside and rerun its "
                         "stage to recompute it") from None
    if manifest.protocol != PROTOCOL_VERSION:  # another layout: its files may not mean what this code reads
        raise StoreError(f"{path} was written under storage protocol {manifest.protocol}; this code reads protocol "
                         f"{PROTOCOL_VERSION} (storage/PROTOCOL.md). Use a fresh storage.root, or the code of that "
                         "protocol to read it")
    return manifest


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    tmp = path.with_name(path.name + TMP)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder path beside `path` (not yet made, like atomic_path's file); when the block
    succeeds, fsync its files and rename it onto `path`. A killed block leaves only the temporary, which the next
    open_stage removes."""
    tmp = path.with_name(path.name + TMP)
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    for written in tmp.rglob("*"):
        if written.is_file():
            with open(written, "rb") as fh:
                os.fsync(fh.fileno())
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def remove_file(path: Path) -> None:
    """Delete one file outside a store (the deployment's state file); inside a stage, StageDir.remove."""
    path.unlink(missing_ok=True)


def append_log(path: Path) -> BinaryIO:
    """A log opened for appending: the one kind of file that is never renamed into place, because a child
    process writes it as it runs."""
    return open(path, "ab")


def save_pretrained_atomic(model, path: Path) -> None:
    """`model.save_pretrained` (safetensors), never a half-written adapter."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)


class Store:
    """The artifact store rooted at one directory; `dataset` names the run's dataset (artifact keys, versions)."""

    def __init__(self, root: Path | str, dataset: str = "default"):
        self.root = Path(root).resolve()
        self.dataset = dataset

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, dataset={self.dataset!r})"

    def stage_dir(self, stage: str, fp: str) -> Path:
        return self.root / stage / fp[:FP_CHARS]

    def finished(self, stage: str, fp: str) -> Manifest | None:
        """The manifest of the finished directory for this fingerprint, or None."""
        final = self.stage_dir(stage, fp)
        if not is_stage_dir(final):
            return None
        manifest = read_manifest(final)
        if manifest.fingerprint != fp:
            raise StoreError(f"{final}: manifest fingerprint {manifest.fingerprint} != expected {fp} (12-char clash?)")
        check_files(final, manifest, HASH_ON_HIT)
        return manifest

    def path(self, manifest: Manifest | InputRef, name: str = "") -> Path:
        """A file of a finished stage directory (asserts the directory is finished)."""
        stage_dir = self.root / manifest.dir
        if not is_stage_dir(stage_dir):
            raise StoreError(f"{stage_dir} is not a finished stage directory; rerun stage {manifest.stage!r}")
        return stage_dir / name if name else stage_dir

    def manifests(self) -> list[Manifest]:
        return [read_manifest(p.parent) for p in sorted(self.root.glob(f"*/*/{MANIFEST}")) if is_stage_dir(p.parent)]

    def damaged(self, full: bool = False) -> list[str]:
        """A line per finished stage directory whose manifest or files are damaged, checked as a cache hit
        checks them (every file hashed when `full`); [] for a sound store."""
        hash_up_to = None if full else HASH_ON_HIT
        problems = []
        for p in sorted(self.root.glob(f"*/*/{MANIFEST}")):
            if not is_stage_dir(p.parent):
                continue
            try:
                check_files(p.parent, read_manifest(p.parent), hash_up_to)
            except StoreError as err:
                problems.append(str(err))
        return problems

    @contextmanager
    def open_stage(self, stage: str, fp: str) -> Iterator[StageDir]:
        """Open <stage>/<fp12>.partial/ for writing, keeping what an earlier killed run finished there. A stage
        that fails before writing any file leaves nothing behind (bad input writes nothing)."""
        final = self.stage_dir(stage, fp)
        partial = final.with_name(final.name + PARTIAL)
        partial.mkdir(parents=True, exist_ok=True)
        lock_path = final.with_name(final.name + ".lock")
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"another process is writing {partial}; wait for it or stop it") from None
            try:
                for stale in sorted(partial.rglob(f"*{TMP}"), reverse=True):  # a killed run's half-written files
                    shutil.rmtree(stale) if stale.is_dir() else stale.unlink()  # (and dirs: checkpoints) never count
                yield StageDir(self, stage, fp, partial, final)
            except BaseException:
                if partial.is_dir() and not any(p.is_file() for p in partial.rglob("*")):
                    shutil.rmtree(partial)  # nothing a rerun could reuse
                lock_path.unlink(missing_ok=True)
                if not any(final.parent.iterdir()):
                    final.parent.rmdir()
                raise
        lock_path.unlink(missing_ok=True)


class StageDir:
    """A stage directory being written; commit() makes it finished."""

    def __init__(self, store: Store, stage: str, fp: str, partial: Path, final: Path):
        self.store, self.stage, self.fp = store, stage, fp
        self.dir, self.final = partial, final
        self.started = time.monotonic()

    def file(self, name: str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, name: str, text: str) -> Path:
        """A text file (a report), written under a temporary name and renamed into place."""
        write_text_atomic(path := self.file(name), text)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        write_json_atomic(path := self.file(name), obj)
        return path

    def save_model(self, name: str, model) -> Path:
        """A model's weights (an adapter) as a safetensors folder, renamed into place when complete."""
        save_pretrained_atomic(model, path := self.file(name))
        return path

    def remove(self, name: str) -> None:
        """Drop a file or folder that is not a result (resume state, scratch space, parts a new plan voids)."""
        path = self.dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def finished_files(self, pattern: str) -> list[Path]:
        """Completed files matching a glob; temporaries are never listed."""
        return sorted(p for p in self.dir.glob(pattern) if p.is_file() and not p.name.endswith(TMP))

    def commit(
        self,
        *,
        version: int,
        inputs: list[Manifest] = (),
        config: dict[str, Any] | None = None,
        counts: dict[str, int] | None = None,
        summary: dict[str, Any] | None = None,
        rows: dict[str, int] | None = None,
        flow_run_id: str | None = None,
        cache_token: str | None = None,
    ) -> Manifest:
        """Hash every file, write manifest.json last, then rename the directory into place."""
        rows = rows or {}
        files = [
            FileEntry(path=rel, bytes=p.stat().st_size, sha256=file_sha256(p), rows=rows.get(rel))
            for p in sorted(self.dir.rglob("*"))
            if p.is_file() and (rel := p.relative_to(self.dir).as_posix()) != MANIFEST
        ]
        manifest = Manifest(
            stage=self.stage,
            version=version,
            fingerprint=self.fp,
            dir=self.final.relative_to(self.store.root).as_posix(),
            inputs=[m.ref() for m in inputs],
            config=config or {},
            counts=counts or {},
            files=files,
            summary=summary or {},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            elapsed_s=round(time.monotonic() - self.started, 3),
            flow_run_id=flow_run_id,
            cache_token=cache_token,
        )
        write_json_atomic(self.dir / MANIFEST, manifest.model_dump(mode="json"))
        if self.final.exists():  # an unfinished leftover without a manifest; never a finished one
            if is_stage_dir(self.final):
                raise StoreError(f"{self.final} is already finished; refusing to overwrite it")
            shutil.rmtree(self.final)
        os.replace(self.dir, self.final)
        return manifest
