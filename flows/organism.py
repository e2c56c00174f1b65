"""The model organism a run's evaluation reads, made (or found cached) only when evaluate.tasks asks for it."""

from __future__ import annotations

from latentqa.config import RunConfig
from storage.manifest import Manifest
from storage.store import Store
from tasks.organism import organism


def organism_for(cfg: RunConfig, store: Store) -> Manifest | None:
    """The organism stage's output for the run's model, or None when no `organism` task is evaluated."""
    return organism(cfg.organism, cfg.model, store) if "organism" in cfg.evaluate.tasks else None
