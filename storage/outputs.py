"""What a finished stage directory holds, read by name: the accessors downstream stages use instead of file
names and manifest summary keys (PROTOCOL.md, "Stages"). One place knows that dialogs live in
`dialogs.parquet` with the DIALOGS schema, or that extract records its layers in its summary."""

from __future__ import annotations

from pathlib import Path

from storage.manifest import Manifest
from storage.parquet import CONTROLS, DIALOGS, ORGANISM_FACTS, SPLIT, SUMMARY, read_table
from storage.store import Store, read_manifest


def controls(store: Store, catalog: Manifest) -> list[dict]:
    """The control rows of a catalog (or import) directory."""
    return read_table(store.path(catalog, "controls.parquet"), CONTROLS).to_pylist()


def dialogs_path(store: Store, synth: Manifest) -> Path:
    return store.path(synth, "dialogs.parquet")


def dialogs(store: Store, synth: Manifest) -> list[dict]:
    """The dialog rows of a synthesize (or import) directory."""
    return read_table(dialogs_path(store, synth), DIALOGS).to_pylist()


def qa_path(store: Store, synth: Manifest) -> Path:
    return store.path(synth, "qa.parquet")


def split_path(store: Store, split: Manifest, name: str) -> Path:
    """`train` or `eval` of a filter directory."""
    if name not in ("train", "eval"):
        raise ValueError(f"a filter directory has the splits train and eval, not {name!r}")
    return store.path(split, f"{name}.parquet")


def split_rows(store: Store, split: Manifest, name: str) -> list[dict]:
    return read_table(split_path(store, split, name), SPLIT).to_pylist()


def read_layers(acts: Manifest) -> list[int]:
    """The blocks an extract directory read, in its config's order."""
    return list(acts.summary["layers"])


def variant(acts: Manifest) -> str:
    """How the extract stage rendered dialogs without a variant of their own (`extract.variant`)."""
    return acts.summary["variant"]


def scores(store: Store, evaluation: Manifest) -> list[dict]:
    """The summary rows (task, condition, metric, value, lo, hi, n) of an evaluate directory."""
    return read_table(store.path(evaluation, "summary.parquet"), SUMMARY).to_pylist()


def decoder_of(store: Store, evaluation: Manifest) -> Manifest:
    """The train manifest an evaluate directory scored."""
    (ref,) = [i for i in evaluation.inputs if i.stage == "train"]
    return read_manifest(store.path(ref))


def trained_on(decoder: Manifest) -> tuple[str, float, int]:
    """(model, share of the training labels, training examples) of a train directory."""
    train = decoder.config["train"]
    return decoder.config["model"]["name"], train.get("label_fraction", 1.0), decoder.counts["n_examples"]


def organism_facts(store: Store, organism: Manifest) -> list[dict]:
    """The invented facts (entity, attribute, value) an organism directory was taught."""
    return read_table(store.path(organism, "facts.parquet"), ORGANISM_FACTS).to_pylist()


def organism_adapter(store: Store, organism: Manifest) -> Path:
    return store.path(organism, "adapter")
