"""Fingerprints: sha256 over canonical JSON; they name stage directories and are the Prefect cache key.

fp = H({stage, version, sections, inputs}) where sections are the semantic fields of the config sections a
stage reads (each section class declares its non-semantic fields in NON_SEMANTIC) and inputs are the sorted
full fingerprints of the manifests the stage consumes. See PROTOCOL.md, "Fingerprints".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel

FP_CHARS = 12  # directory names use the first 12 hex characters; manifests keep the full hash


def canonical_json(obj: Any) -> str:
    """Sorted-key, compact JSON: the same object always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, BaseModel):
        return semantic_fields(obj)
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}: {obj!r}")


def semantic_fields(section: BaseModel) -> dict[str, Any]:
    """The fields of a config section that change what a stage writes (NON_SEMANTIC left out, and ADDED_LATER
    fields while they hold their default: a store made before the field existed keeps its fingerprints)."""
    cls = type(section)
    excluded = set(getattr(cls, "NON_SEMANTIC", ()))
    excluded |= {name for name in getattr(cls, "ADDED_LATER", ())
                 if getattr(section, name) == cls.model_fields[name].default}
    data = section.model_dump(mode="json", exclude=excluded)
    return {"section": type(section).__name__, **data}


def sha256_hex(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def fingerprint(stage: str, version: int, sections: Iterable[Any] = (), inputs: Iterable[str] = ()) -> str:
    """Full sha256 fingerprint of a stage run; inputs are upstream fingerprints (order does not matter)."""
    payload = {
        "stage": stage,
        "version": version,
        "sections": [semantic_fields(s) if isinstance(s, BaseModel) else s for s in sections],
        "inputs": sorted(inputs),
    }
    return sha256_hex(canonical_json(payload))


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
