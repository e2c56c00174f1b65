"""dataset: record the chain catalog -> synthesize -> extract -> filter as one complete, named version.

Reads   the four finished stage directories (their manifests)
Writes  datasets/<name>/versions/<id12>.json, then datasets/<name>/latest.json when the version is new
        (storage/PROTOCOL.md, "Datasets")
Resume  nothing to resume: the record is written after every stage directory it names is finished.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from storage.datasets import record_version
from storage.manifest import Manifest
from storage.store import Store
from tasks._stage import flow_run_id
from tasks._ui import artifact_key, in_run, logger


@task(name="dataset", cache_policy=NO_CACHE, persist_result=False)
def record_dataset(controls: Manifest, synth: Manifest, acts: Manifest, split: Manifest, store: Store,
                   note: dict | None = None) -> dict:
    """Name the version; `latest` moves only to a version not recorded before (a cached rerun keeps it)."""
    chain = {"catalog": controls, "synthesize": synth, "extract": acts, "filter": split}
    record, is_new = record_version(store, store.dataset, chain, flow_run_id(), note)
    logger().info("dataset %s version %s (%s)", store.dataset, record["version"][:12],
                  "new: latest moved to it" if is_new else "already recorded")
    if in_run():
        rows = "\n".join(f"| {s} | `{r['fingerprint'][:12]}` | {r['dir']} |" for s, r in record["stages"].items())
        create_markdown_artifact(
            key=f"{artifact_key('dataset', store)}-version",
            description=f"dataset {store.dataset} version {record['version'][:12]}",
            markdown=f"# dataset `{store.dataset}` version `{record['version'][:12]}`\n\n"
                     f"{'New version; `latest` now points here.' if is_new else 'Already recorded.'}\n\n"
                     f"| stage | fingerprint | directory |\n|---|---|---|\n{rows}\n")
    return record
