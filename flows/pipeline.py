"""The whole LatentQA pipeline: catalog -> synthesize -> extract -> filter -> train -> evaluate.

Each stage is a cached task keyed by its fingerprint; a rerun with nothing changed is all Cached, and a
changed section re-runs that stage and what follows it.
"""

from __future__ import annotations

from prefect import flow

from latentqa.config import RunConfig
from latentqa.preflight import check_run
from storage.manifest import Manifest
from storage.store import Store
from tasks.catalog import load_catalog
from tasks.evaluate import evaluate
from tasks.extract import extract
from tasks.filter import filter_qa
from tasks.synthesize import synthesize
from tasks.train import train


@flow(name="latentqa-pipeline")
def pipeline(cfg: RunConfig = RunConfig()) -> Manifest:
    check_run(cfg)  # a bad layer fails here, before any stage
    store = Store(cfg.storage.root)
    controls = load_catalog(cfg.catalog, store)
    synth = synthesize(cfg.synthesize, cfg.endpoint, controls, store)
    acts = extract(cfg.extract, cfg.model, synth, store)
    split = filter_qa(cfg.filter, synth, acts, store)
    decoder = train(cfg.train, cfg.model, split, acts, store)
    return evaluate(cfg.evaluate, cfg.model, decoder, split, acts, store)
