"""evaluate: score the decoder that `cfg.train` describes on a recorded dataset version (`latest` by default)."""

from __future__ import annotations

from prefect import flow

from flows.organism import organism_for
from flows.train_decoder import trained_decoder
from latentqa.config import RunConfig
from latentqa.preflight import check_run
from storage.datasets import open_version
from storage.manifest import Manifest
from storage.store import Store
from tasks.evaluate import evaluate


@flow(name="evaluate")
def evaluate_decoder(cfg: RunConfig = RunConfig(), version: str | None = None) -> Manifest:  # noqa: B008
    check_run(cfg)
    store = Store(cfg.storage.root, cfg.name)
    with open_version(store, cfg.name, version) as (record, chain):
        split, acts = chain["filter"], chain["extract"]
        decoder = trained_decoder(cfg, store, record, chain)
        return evaluate(cfg.evaluate, cfg.model, decoder, split, acts, chain["synthesize"], store, cfg.endpoint,
                        organism_for(cfg, store))
