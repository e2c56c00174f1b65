"""train-decoder: fit the decoder on a recorded dataset version (`latest` unless `version` names one)."""

from __future__ import annotations

from prefect import flow

from latentqa.config import RunConfig
from latentqa.preflight import check_run
from storage.datasets import open_version
from storage.manifest import Manifest
from storage.store import Store
from tasks.train import train


def trained_decoder(cfg: RunConfig, store: Store, record: dict, chain: dict[str, Manifest]) -> Manifest:
    """The decoder `cfg.train` describes on a dataset version; an error naming what to run if there is none."""
    if decoder := train.finished(cfg.train, cfg.model, chain["filter"], chain["extract"], store):
        return decoder
    raise LookupError(f"no decoder trained with this config's train section on dataset {cfg.name!r} "
                      f"version {record['version'][:12]}; run train-decoder first")


@flow(name="train-decoder")
def train_decoder(cfg: RunConfig = RunConfig(), version: str | None = None) -> Manifest:  # noqa: B008
    check_run(cfg)
    store = Store(cfg.storage.root, cfg.name)
    with open_version(store, cfg.name, version) as (_, chain):  # leased: gc leaves it alone meanwhile
        return train(cfg.train, cfg.model, chain["filter"], chain["extract"], store)
