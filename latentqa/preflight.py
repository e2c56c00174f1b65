"""Checks run once before any stage: everything a run needs that the config alone cannot vouch for."""

from __future__ import annotations

import os

from latentqa.config import ConfigError, RunConfig, check_against_model
from latentqa.curation import validate_keep_where
from latentqa.models import model_depth


def check_run(cfg: RunConfig) -> None:
    """Model depth against the layers, the API key's variable for a remote endpoint (converts the embedded
    model on first use, which every later stage needs anyway)."""
    try:
        validate_keep_where(cfg.filter.keep_where)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_against_model(cfg, model_depth(cfg.model.name, cfg.model.revision))
    if cfg.endpoint.base_url and cfg.endpoint.api_key_env not in os.environ:
        raise ConfigError(f"endpoint.api_key_env names {cfg.endpoint.api_key_env!r}, which is not set in the "
                          f"environment; export it, or set endpoint.base_url: null to use the local endpoint")
