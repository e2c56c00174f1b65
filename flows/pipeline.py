"""full-pipeline: catalog -> synthesize -> extract -> filter (a dataset version) -> train -> evaluate.

Each stage is a cached task keyed by its fingerprint; a rerun with nothing changed is all Cached, and a
changed section re-runs that stage and what follows it. A failed run retried (from the UI or with
`prefect flow-run retry`) finds the finished stages Cached and re-runs from the one that failed.
"""

from __future__ import annotations

from prefect import flow

from flows.dataset import build_dataset
from flows.organism import organism_for
from latentqa.config import RunConfig
from latentqa.preflight import check_run
from storage.datasets import lease
from storage.manifest import Manifest
from storage.store import Store
from tasks.evaluate import evaluate
from tasks.train import train


@flow(name="latentqa-pipeline")
def pipeline(cfg: RunConfig = RunConfig(), regenerate: bool = False) -> Manifest:  # noqa: B008
    check_run(cfg)  # a bad layer fails here, before any stage
    store = Store(cfg.storage.root, cfg.name)
    data = build_dataset(cfg, store, regenerate)
    with lease(store, cfg.name, data["filter"].fingerprint):
        decoder = train(cfg.train, cfg.model, data["filter"], data["extract"], store)
        return evaluate(cfg.evaluate, cfg.model, decoder, data["filter"], data["extract"], data["synthesize"], store,
                        cfg.endpoint, organism_for(cfg, store))
