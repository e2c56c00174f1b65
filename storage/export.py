"""Export a dataset version or a trained decoder as a folder the Hugging Face libraries load (`latentqa export`).

A dataset version becomes `data/{train,eval}-00000-of-00001.parquet` (each QA pair beside its dialog) and a
card: `datasets.load_dataset("parquet", data_dir=<out>)` names the splits from the file names. A decoder
becomes peft's adapter files at the top level, its `decoder.json` and a card: `PeftModel.from_pretrained(base,
<out>)` and `latentqa.reader.Reader(<out>)` both load it. Each folder is written whole or not at all.

The facts a card is made of are read here; the card's text is the caller's (latentqa/cards.py), since storage/
does not import the domain.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from storage import datasets, outputs
from storage.catalog import lineage
from storage.manifest import Manifest
from storage.parquet import DIALOGS, read_table
from storage.store import Store, StoreError, atomic_dir, read_manifest

DIALOG_COLUMNS = [name for name in DIALOGS.names if name not in ("label", "family", "category")]


def _chain(store: Store, stages: dict[str, Manifest]) -> list[dict]:
    return [{"role": role, "stage": m.stage, "fingerprint": m.fingerprint} for role, m in stages.items()]


def version_chain(store: Store, name: str, version: str | None = None) -> tuple[dict, dict[str, Manifest]]:
    """(record, chain manifests) of a dataset version, the newest when `version` is None."""
    record = datasets.resolve_version(store, name, version)
    return record, datasets.chain_manifests(store, record)


def dataset_facts(store: Store, name: str, record: dict, chain: dict[str, Manifest]) -> dict:
    """What a dataset card says about a version: dataset_card's arguments."""
    synth = chain["synthesize"]
    if synth.stage == "import":
        origin = {"kind": "import", "files": synth.summary.get("files", {})}
    else:
        origin = {"kind": "synthesize", "model_id": synth.summary.get("model_id"),
                  "local_endpoint": synth.summary.get("local_endpoint", True)}
    counts = {role: {k: v for k, v in m.counts.items() if k.startswith(("dropped_", "failed_", "generated_rejected_"))}
              for role, m in chain.items()}
    rows = {s: pq.read_metadata(outputs.split_path(store, chain["filter"], s)).num_rows for s in ("train", "eval")}
    return {"name": name, "version": record["version"], "origin": origin, "chain": _chain(store, chain),
            "counts": {role: c for role, c in counts.items() if c}, "rows": rows}


def write_dataset(store: Store, chain: dict[str, Manifest], out: Path, card: str) -> dict[str, int]:
    """The version's splits, each QA row joined with its dialog's turns, and the card; {split: rows}."""
    turns = read_table(outputs.dialogs_path(store, chain["synthesize"]), DIALOGS).select(DIALOG_COLUMNS)
    rows = {}
    with atomic_dir(Path(out)) as tmp:
        (tmp / "data").mkdir(parents=True)
        for split in ("train", "eval"):
            qa = pq.read_table(outputs.split_path(store, chain["filter"], split))
            joined = qa.join(turns, "dialog_id", join_type="left outer").sort_by("qa_id")
            pq.write_table(joined, tmp / "data" / f"{split}-00000-of-00001.parquet", compression="zstd")
            rows[split] = joined.num_rows
        (tmp / "README.md").write_text(card)
    return rows


def decoder_facts(decoder_dir: Path) -> dict:
    """What a model card says about a train/<fp12> directory: its decoder.json, the dataset version it was
    trained on, its lineage and the primary scores of the newest evaluation of it in the same store."""
    decoder_dir = Path(decoder_dir).resolve()
    manifest = read_manifest(decoder_dir)
    if manifest.stage != "train":
        raise StoreError(f"{decoder_dir} is a {manifest.stage} directory, not a trained decoder (train/<fp12>)")
    store = Store(decoder_dir.parents[1])
    upstream = {i.stage: store.finished(i.stage, i.fingerprint) for i in manifest.inputs}
    split = upstream.get("filter")
    dataset = next(({"name": n, "version": r["version"]} for n in datasets.names(store)
                    for r in datasets.versions(store, n) if split and r["version"] == split.fingerprint), None)
    evals = [m for m in store.manifests() if m.stage == "evaluate"
             and any(i.fingerprint == manifest.fingerprint for i in m.inputs)]
    newest = max(evals, key=lambda m: m.created_at, default=None)
    return {"info": json.loads((decoder_dir / "decoder.json").read_text()), "dataset": dataset,
            "chain": [{"role": "decoder" if r["depth"] == 0 else f"upstream {r['depth']}", **r}
                      for r in lineage(store, manifest.fingerprint)],
            "scores": _primary_scores(store, newest) if newest else [],
            "evaluate_fp": newest.fingerprint if newest else None}


def _primary_scores(store: Store, evaluate: Manifest) -> list[dict]:
    """Each task's primary metric (the one its margins are reported on), every condition, from summary.parquet."""
    summary = pq.read_table(store.path(evaluate, "summary.parquet")).to_pylist()
    primary = {(m["task"], m["metric"]) for m in pq.read_table(store.path(evaluate, "margins.parquet")).to_pylist()}
    return [s for s in summary if (s["task"], s["metric"]) in primary]


def write_decoder(decoder_dir: Path, out: Path, card: str) -> list[str]:
    """The adapter's files at the top level (peft's layout), decoder.json and the card; the names written."""
    decoder_dir = Path(decoder_dir)
    with atomic_dir(Path(out)) as tmp:
        shutil.copytree(decoder_dir / "adapter", tmp)
        shutil.copy2(decoder_dir / "decoder.json", tmp / "decoder.json")
        (tmp / "README.md").write_text(card)
        names = sorted(p.name for p in tmp.iterdir())
    return names
