"""evaluate: score the decoder that `cfg.train` describes on a recorded dataset version (`latest` by default)."""

from __future__ import annotations

from prefect import flow

from latentqa.config import RunConfig
from latentqa.preflight import check_run
from storage.datasets import open_version
from storage.manifest import Manifest
from storage.store import Store
from tasks import train as train_stage
from tasks.evaluate import evaluate


@flow(name="evaluate")
def evaluate_decoder(cfg: RunConfig = RunConfig(), version: str | None = None) -> Manifest:  # noqa: B008
    check_run(cfg)
    store = Store(cfg.storage.root, cfg.name)
    with open_version(store, cfg.name, version) as (record, chain):
        split, acts = chain["filter"], chain["extract"]
        fp = train_stage.fingerprint_of({"cfg": cfg.train, "model": cfg.model, "split": split, "acts": acts})
        decoder = store.finished(train_stage.STAGE, fp)
        if decoder is None:
            raise LookupError(f"no decoder trained with this config's train section on dataset {cfg.name!r} "
                              f"version {record['version'][:12]}; run train-decoder first")
        return evaluate(cfg.evaluate, cfg.model, decoder, split, acts, chain["synthesize"], store)
