"""regenerate-dataset: catalog -> synthesize -> extract -> filter, recorded as a version of the config's dataset
(import -> extract -> filter when the config has a `release` section: the LatentQA release's own data).

Unchanged inputs are all cache hits (seconds). `regenerate=True` draws a fresh synthesis seed, so the LLM is
asked again, sampling with that seed (refused at temperature 0, where a seed changes nothing), and a new
version is written beside the old one; `latest` moves to it only once it is complete.
One regeneration of a dataset name runs at a time (a file lock; deployments also carry a concurrency limit).
"""

from __future__ import annotations

import secrets

from prefect import flow

from latentqa.config import RunConfig
from latentqa.preflight import check_run
from storage.datasets import writer
from storage.manifest import Manifest
from storage.store import Store
from tasks._ui import logger
from tasks.catalog import load_catalog
from tasks.dataset import record_dataset
from tasks.extract import extract
from tasks.filter import filter_qa
from tasks.import_release import import_release
from tasks.synthesize import synthesize


def fresh_generation(cfg: RunConfig) -> RunConfig:
    """The same config with a new synthesis seed: new requests, new data, new fingerprints downstream."""
    if cfg.synthesize.temperature == 0:  # greedy decoding ignores the seed: a "new" version would repeat the old
        raise ValueError("regenerate=true needs sampling, but synthesize.temperature is 0 (greedy): a new seed would "
                         "send new requests and get the same dialogs back. Set synthesize.temperature > 0 (e.g. 0.7)")
    seed = secrets.randbelow(2**31)
    logger().info("regenerate: synthesize.seed %d -> %d", cfg.synthesize.seed, seed)
    return cfg.model_copy(update={"synthesize": cfg.synthesize.model_copy(update={"seed": seed})})


def dialogs_and_qa(cfg: RunConfig, store: Store, regenerate: bool) -> tuple[Manifest, Manifest]:
    """(controls, dialogs and QA): synthesized from the catalog, or imported from the LatentQA release."""
    if cfg.release is not None:
        if regenerate:
            raise ValueError("regenerate=true asks the LLM for new data, but this dataset is imported from the "
                             "LatentQA release (config section `release`): there is nothing to regenerate")
        imported = import_release(cfg.release, store)
        return imported, imported
    controls = load_catalog(cfg.catalog, store, cfg.endpoint)
    return controls, synthesize(cfg.synthesize, cfg.endpoint, controls, store)


def build_dataset(cfg: RunConfig, store: Store, regenerate: bool = False) -> dict[str, Manifest]:
    """The dataset chain under the dataset's writer lock; returns the stage manifests by role."""
    cfg = fresh_generation(cfg) if regenerate and cfg.release is None else cfg  # refused before anything is written
    with writer(store, cfg.name, on_wait=logger().info):
        controls, synth = dialogs_and_qa(cfg, store, regenerate)
        acts = extract(cfg.extract, cfg.model, synth, store)
        split = filter_qa(cfg.filter, synth, acts, store)
        record_dataset(controls, synth, acts, split, store, note={"synthesize_seed": cfg.synthesize.seed})
    return {"catalog": controls, "synthesize": synth, "extract": acts, "filter": split}


@flow(name="regenerate-dataset")
def regenerate_dataset(cfg: RunConfig = RunConfig(), regenerate: bool = False) -> Manifest:  # noqa: B008
    check_run(cfg)
    return build_dataset(cfg, Store(cfg.storage.root, cfg.name), regenerate)["filter"]
