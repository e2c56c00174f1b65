"""A stage's inputs as decoder examples: split rows, their activations (zero-copy views) and encoded prompts."""

from __future__ import annotations

from latentqa.decoder import encode_example
from latentqa.splits import nested_share
from storage.manifest import Manifest
from storage.parquet import ActivationReader
from storage import outputs
from storage.store import Store


def activation_reader(store: Store, acts: Manifest) -> ActivationReader:
    return ActivationReader(store.path(acts, f.path) for f in acts.files_matching("part-"))


def load_examples(store: Store, split: Manifest, reader: ActivationReader, name: str, tokenizer, ph_id: int,
                  layer: int, loss_on_ack: bool = False, limit: int | None = None, label_fraction: float = 1.0,
                  seed: int = 0):
    """(rows, decoder examples, activation views) of one split (`train` or `eval`); views share the Parquet
    buffers. `label_fraction` < 1 keeps the rows of a nested share of the split's labels (latentqa/splits.py)."""
    rows = outputs.split_rows(store, split, name)[:limit]
    if label_fraction < 1:
        kept = nested_share((r["label"] for r in rows), label_fraction, seed)
        rows = [r for r in rows if r["label"] in kept]
    views = [reader.acts(r["dialog_id"], layer) for r in rows]
    examples = [encode_example(tokenizer, len(v), r["question"], r["answer"], ph_id, loss_on_ack)
                for r, v in zip(rows, views)]
    return rows, examples, views
