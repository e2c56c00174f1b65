"""Checks run once before any stage: everything a run needs that the config alone cannot vouch for."""

from __future__ import annotations

import os
from pathlib import Path

from latentqa.catalog import builtin_paths, load_controls
from latentqa.config import ConfigError, RunConfig, check_against_model
from latentqa.curation import validate_keep_where
from latentqa.evals.steering_controls import control_pairs
from latentqa.models import model_depth
from latentqa.release import release_dataset


def check_run(cfg: RunConfig) -> None:
    """Every input file the run will read (catalog, release, hidden personas, steering control), the SQL rule,
    model depth against the layers, the API key's variable for a remote endpoint (converts the embedded model
    on first use, which every later stage needs anyway). Each problem is a ConfigError naming the input."""
    try:
        validate_keep_where(cfg.filter.keep_where)
        check_inputs(cfg)
        depth = model_depth(cfg.model.name, cfg.model.revision)
    except (ValueError, OSError) as err:
        raise ConfigError(str(err)) from None
    check_against_model(cfg, depth)
    check_storage(cfg)
    if cfg.endpoint.base_url and cfg.endpoint.api_key_env not in os.environ:
        raise ConfigError(f"endpoint.api_key_env names {cfg.endpoint.api_key_env!r}, which is not set in the "
                          f"environment; export it, or set endpoint.base_url: null to use the local endpoint")


def check_storage(cfg: RunConfig) -> None:
    """The store's root must be a folder, or not exist yet (made by the first stage). (Its finished stages are
    checked by the CLI, which may import storage/: app/cli.py `_run_flow`.)"""
    root = Path(cfg.storage.root)
    for p in (root, *root.parents):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"storage.root {root}: {p} is a file, not a folder: the store cannot be made there")
        if p.exists():
            break


def check_sweep(cfg: RunConfig) -> list[RunConfig]:
    """The sweep's run config per model (latentqa/sweep.py), each checked as check_run checks one run."""
    from latentqa.sweep import model_runs

    try:
        runs = model_runs(cfg, lambda name: model_depth(name, cfg.model.revision if name == cfg.model.name else None))
    except (ValueError, OSError) as err:
        raise ConfigError(f"sweep: {err}") from None
    for run in runs:
        check_run(run)
    return runs


def check_inputs(cfg: RunConfig) -> None:
    """Parse the files the stages will read, so that a bad one stops the run before any stage starts."""
    if cfg.release is not None:
        release_dataset(cfg.release.source, [(f.path, f.heldout) for f in cfg.release.files], cfg.release.qa,
                        cfg.release.stimulus, cfg.release.max_labels, cfg.release.seed)
    else:
        paths = (builtin_paths() if cfg.catalog.builtin else []) + [Path(p) for p in cfg.catalog.paths]
        if not load_controls(paths, cfg.catalog.families):
            raise ValueError(f"catalog.families={cfg.catalog.families} selects no controls from "
                             f"{[str(p) for p in paths]}")
    for field in ("hidden_persona_file", "hidden_goal_file"):
        if (path := getattr(cfg.evaluate, field)) is not None:
            check_persona_table(Path(path), field)
    control_pairs(cfg.steer)


def check_persona_table(path: Path, field: str = "hidden_persona_file") -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as err:  # pyarrow's errors for a file that is not Parquet vary by version
        raise ValueError(f"evaluate.{field} {path}: not a Parquet table ({err})") from None
    missing = {"label", "text"} - set(names)
    if missing:
        raise ValueError(f"evaluate.{field} {path}: columns {sorted(missing)} missing (has {names})")
