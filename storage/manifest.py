"""Manifest: the record a finished stage directory carries in manifest.json (written last).

Its presence is the completion signal; its fields are specified in PROTOCOL.md, "Manifest".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from storage import PROTOCOL_VERSION
from storage.fingerprint import FP_CHARS


class FileEntry(BaseModel):
    """One file of a stage directory, relative to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str
    bytes: int
    sha256: str
    rows: int | None = None


class InputRef(BaseModel):
    """An upstream manifest this stage consumed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    stage: str
    fingerprint: str
    dir: str


class Manifest(BaseModel):
    """What a task returns and what manifest.json holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    protocol: int = PROTOCOL_VERSION
    stage: str
    version: int
    fingerprint: str
    dir: str = Field(description="stage directory relative to the store root, e.g. extract/0123456789ab")
    inputs: list[InputRef] = []
    config: dict[str, Any] = {}
    counts: dict[str, int] = {}
    files: list[FileEntry] = []
    summary: dict[str, Any] = Field(default={}, description="stage-specific facts: model id, dtype, metrics")
    created_at: str
    elapsed_s: float
    flow_run_id: str | None = None
    cache_token: str | None = Field(default=None, description="ties the Prefect cache record to this directory")

    @property
    def fp12(self) -> str:
        return self.fingerprint[:FP_CHARS]

    def ref(self) -> InputRef:
        return InputRef(stage=self.stage, fingerprint=self.fingerprint, dir=self.dir)

    def file(self, name: str) -> FileEntry:
        for entry in self.files:
            if entry.path == name:
                return entry
        raise KeyError(f"{self.dir}/manifest.json lists no file {name!r} (has {[f.path for f in self.files]})")

    def files_matching(self, prefix: str) -> list[FileEntry]:
        return [f for f in self.files if f.path.startswith(prefix)]
