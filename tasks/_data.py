"""A stage's inputs as decoder examples: split rows, their activations (zero-copy views) and encoded prompts."""

from __future__ import annotations

from latentqa.decoder import encode_example
from storage.manifest import Manifest
from storage.parquet import ActivationReader
from storage import outputs
from storage.store import Store


def activation_reader(store: Store, acts: Manifest) -> ActivationReader:
    return ActivationReader(store.path(acts, f.path) for f in acts.files_matching("part-"))


def load_examples(store: Store, split: Manifest, reader: ActivationReader, name: str, tokenizer, ph_id: int,
                  layer: int, loss_on_ack: bool = False, limit: int | None = None):
    """(rows, decoder examples, activation views) of one split (`train` or `eval`); views share the Parquet
    buffers."""
    rows = outputs.split_rows(store, split, name)[:limit]
    views = [reader.acts(r["dialog_id"], layer) for r in rows]
    examples = [encode_example(tokenizer, len(v), r["question"], r["answer"], ph_id, loss_on_ack)
                for r, v in zip(rows, views)]
    return rows, examples, views
