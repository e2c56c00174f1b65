"""Parquet tables of the store: schemas (PROTOCOL.md, "Tables"), atomic writes and zero-copy reads."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.store import atomic_path

CONTROLS = pa.schema([
    ("label", pa.string()), ("family", pa.string()), ("category", pa.string()), ("text", pa.string()),
])
DIALOGS = pa.schema([
    ("dialog_id", pa.string()), ("label", pa.string()), ("family", pa.string()), ("category", pa.string()),
    ("control_user", pa.string()), ("control_model", pa.string()),
    ("stimulus_user", pa.string()), ("stimulus_model", pa.string()),
    ("variant", pa.string()),  # how the target reads this dialog; null: extract.variant (synthesized dialogs)
])
QA = pa.schema([
    ("qa_id", pa.string()), ("dialog_id", pa.string()), ("label", pa.string()), ("family", pa.string()),
    ("category", pa.string()), ("kind", pa.string()), ("question", pa.string()), ("answer", pa.string()),
])
REJECTED = pa.schema([
    ("item_id", pa.string()), ("label", pa.string()), ("step", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()),
])
SPLIT = pa.schema([*QA, ("split", pa.string())])
METRICS = pa.schema([
    ("task", pa.string()), ("item_id", pa.string()), ("condition", pa.string()), ("question", pa.string()),
    ("reference", pa.string()), ("generated", pa.string()), ("rouge_l", pa.float64()), ("token_f1", pa.float64()),
    ("exact", pa.float64()), ("loss", pa.float64()), ("identified", pa.bool_()), ("calibrated", pa.bool_()),
    ("attributed", pa.bool_()), ("generative", pa.bool_()), ("judge", pa.float64()),
    ("judge_generative", pa.bool_()),
    ("k", pa.int32()),
])
STEER_RESULTS = pa.schema([
    ("eval", pa.string()), ("condition", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
])
SUMMARY = pa.schema([
    ("task", pa.string()), ("condition", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("lo", pa.float64()), ("hi", pa.float64()), ("n", pa.int64()),
])
MARGINS = pa.schema([
    ("task", pa.string()), ("control", pa.string()), ("metric", pa.string()), ("margin", pa.float64()),
    ("lo", pa.float64()), ("hi", pa.float64()), ("n", pa.int64()),
])
SWEEP = pa.schema([
    ("model", pa.string()), ("fraction", pa.float64()), ("n_train_examples", pa.int64()), ("task", pa.string()),
    ("condition", pa.string()), ("metric", pa.string()), ("value", pa.float64()), ("lo", pa.float64()),
    ("hi", pa.float64()), ("n", pa.int64()),
])
ORGANISM_FACTS = pa.schema([("entity", pa.string()), ("attribute", pa.string()), ("value", pa.string())])
ORGANISM_CURVE = pa.schema([("step", pa.int64()), ("loss", pa.float64()), ("accuracy", pa.float64())])
CURVES = pa.schema([("step", pa.int64()), ("epoch", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()),
                    ("eval_loss", pa.float64())])

ACT_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def activations_schema(d_model: int, act_dtype: str) -> pa.Schema:
    """One row per (dialog, layer): the kept positions' residual vectors as a list of fixed-size lists."""
    return pa.schema([
        ("dialog_id", pa.string()), ("label", pa.string()), ("layer", pa.int32()),
        ("token_ids", pa.list_(pa.int32())), ("n_prefix", pa.int32()),
        ("acts", pa.list_(pa.list_(ACT_DTYPES[act_dtype], d_model))),
    ])


def same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    """Same column names and types in order (nullability is not part of the protocol)."""
    return [(f.name, f.type) for f in a] == [(f.name, f.type) for f in b]


def write_table(path: Path, table: pa.Table | list[dict], schema: pa.Schema) -> int:
    """Write a table atomically (tmp name, renamed when closed); returns the row count."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(table, schema=schema)
    if not same_columns(table.schema, schema):
        raise ValueError(f"{path.name}: schema {table.schema} does not match PROTOCOL schema {schema}")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return table.num_rows


def read_table(paths: Path | Iterable[Path], schema: pa.Schema | None = None) -> pa.Table:
    paths = [paths] if isinstance(paths, Path) else list(paths)
    tables = [pq.read_table(p, memory_map=True) for p in paths]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if schema is not None and not same_columns(table.schema, schema):
        raise ValueError(f"{paths}: schema {table.schema} does not match PROTOCOL schema {schema}")
    return table


def activation_rows(dialog_ids, labels, layer: int, token_ids, n_prefix, acts_list, act_dtype: str, d_model: int):
    """Build an activations record batch from per-dialog arrays acts [n_kept, d]."""
    np_dtype = np.float16 if act_dtype == "float16" else np.float32
    flat = np.concatenate([a.astype(np_dtype, copy=False).reshape(-1) for a in acts_list]) if acts_list else np.zeros(0, np_dtype)
    offsets = np.cumsum([0] + [a.shape[0] for a in acts_list]).astype(np.int32)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=ACT_DTYPES[act_dtype]), d_model)
    acts = pa.ListArray.from_arrays(pa.array(offsets), vectors)
    schema = activations_schema(d_model, act_dtype)
    return pa.table([
        pa.array(dialog_ids, pa.string()), pa.array(labels, pa.string()),
        pa.array([layer] * len(dialog_ids), pa.int32()),
        pa.array([list(map(int, t)) for t in token_ids], pa.list_(pa.int32())),
        pa.array(n_prefix, pa.int32()), acts,
    ], schema=schema)


class ActivationReader:
    """Zero-copy access to stored activations: one numpy view per (dialog, layer), no per-row copies."""

    def __init__(self, paths: Iterable[Path]):
        self.table = read_table(list(paths))
        acts = self.table.column("acts").combine_chunks()
        self.d_model = acts.type.value_type.list_size
        self._offsets = acts.offsets.to_numpy()
        values = acts.values.values  # list -> fixed-size list -> flat floats, sharing the Parquet buffers
        self._flat = values.to_numpy(zero_copy_only=True).reshape(-1, self.d_model)
        keys = zip(self.table.column("dialog_id").to_pylist(), self.table.column("layer").to_pylist())
        self._row = {key: i for i, key in enumerate(keys)}
        self._token_ids = self.table.column("token_ids")
        self._n_prefix = self.table.column("n_prefix").to_numpy()

    def __len__(self) -> int:
        return self.table.num_rows

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._row

    def acts(self, dialog_id: str, layer: int) -> np.ndarray:
        """[n_kept, d_model] view into the table's memory."""
        i = self._row[(dialog_id, layer)]
        return self._flat[self._offsets[i]: self._offsets[i + 1]]

    def tokens(self, dialog_id: str, layer: int) -> tuple[list[int], int]:
        i = self._row[(dialog_id, layer)]
        return self._token_ids[i].as_py(), int(self._n_prefix[i])
