"""extract: dialogs -> residual-stream activations of the target at the read layer, after the masked control.

Reads   synthesize/<fp>/dialogs.parquet
Writes  extract/<fp>/part-NNNNN.parquet (+ rejected.parquet) + manifest.json   (storage/PROTOCOL.md, "extract")
Resume  parts cover fixed slices of the dialogs sorted by id; finished parts are listed on disk and only the
        missing ones are computed, so a rerun after a kill writes exactly what an uninterrupted run would.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import torch
from prefect import task

from latentqa.config import ExtractConfig, ModelConfig
from latentqa.dialogs import encode_dialog
from latentqa.models import load_model, pick_device, pick_dtype
from latentqa.reading import length_batches, read_layers
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import DIALOGS, REJECTED, activation_rows, read_table, write_table
from storage.store import Store
from tasks._common import Progress, logger, provenance, publish, stage_cache_policy

STAGE, VERSION = "extract", 1


def fingerprint_of(p: dict[str, Any]) -> str:
    model: ModelConfig = p["model"]
    dtype = str(pick_dtype(model.dtype, pick_device(model.device)))  # resolved: "auto" differs by device
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], model, {"dtype": dtype}], inputs=[p["dialogs"].fingerprint])


def _encode_all(tokenizer, dialogs: list[dict], cfg: ExtractConfig) -> tuple[dict, list[dict]]:
    """Token ids per dialog id; dialogs that cannot be read are returned as rejected rows with a reason."""
    encoded, rejected = {}, []
    for d in dialogs:
        try:
            enc = encode_dialog(tokenizer, d, cfg.variant)
        except ValueError as err:
            rejected.append({"item_id": d["dialog_id"], "label": d["label"], "step": STAGE, "reason": "empty_dialog",
                             "detail": str(err)})
            continue
        if len(enc.token_ids) > cfg.max_tokens:
            rejected.append({"item_id": d["dialog_id"], "label": d["label"], "step": STAGE,
                             "reason": "exceeds_context", "detail": f"{len(enc.token_ids)} > {cfg.max_tokens} tokens"})
            continue
        encoded[d["dialog_id"]] = enc
    return encoded, rejected


def _read_part(loaded, ids: list[str], encoded: dict, cfg: ExtractConfig) -> dict[str, Any]:
    acts = {}
    for batch in length_batches({i: len(encoded[i].token_ids) for i in ids}, cfg.batch_tokens):
        width = max(len(encoded[i].token_ids) for i in batch)
        ids_bt = torch.full((len(batch), width), loaded.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask_bt = torch.zeros_like(ids_bt)
        for b, i in enumerate(batch):
            toks = encoded[i].token_ids
            ids_bt[b, : len(toks)] = torch.tensor(toks)
            mask_bt[b, : len(toks)] = 1
        acts_btd = read_layers(loaded.model, ids_bt.to(loaded.device), mask_bt.to(loaded.device), [cfg.read_layer])
        for b, i in enumerate(batch):
            enc = encoded[i]
            acts[i] = acts_btd[cfg.read_layer][b, enc.n_prefix: len(enc.token_ids)].float().cpu().numpy()
    return acts


@task(name=STAGE, cache_policy=stage_cache_policy(STAGE, fingerprint_of), result_serializer="json")
def extract(cfg: ExtractConfig, model: ModelConfig, dialogs: Manifest, store: Store) -> Manifest:
    """Read block `read_layer` for every kept token of every dialog; one Parquet part per slice of dialogs."""
    fp = fingerprint_of({"cfg": cfg, "model": model, "dialogs": dialogs})
    if done := store.finished(STAGE, fp):
        return done
    rows = sorted(read_table(store.path(dialogs, "dialogs.parquet"), DIALOGS).to_pylist(), key=lambda r: r["dialog_id"])
    labels = {r["dialog_id"]: r["label"] for r in rows}
    with store.open_stage(STAGE, fp) as out:
        loaded = load_model(model.name, model.revision, model.dtype, model.device)
        encoded, rejected = _encode_all(loaded.tokenizer, rows, cfg)
        kept = [r["dialog_id"] for r in rows if r["dialog_id"] in encoded]
        parts = [kept[i: i + cfg.dialogs_per_part] for i in range(0, len(kept), cfg.dialogs_per_part)]
        d_model = loaded.model.config.hidden_size
        todo = [k for k in range(len(parts)) if not out.finished_files(f"part-{k:05d}.parquet")]
        progress, started, n_tokens = Progress(len(kept), "extract: dialogs read"), time.monotonic(), 0
        progress.advance(sum(len(parts[k]) for k in range(len(parts)) if k not in todo))
        for k in todo:
            acts = _read_part(loaded, parts[k], encoded, cfg)
            table = activation_rows(parts[k], [labels[i] for i in parts[k]], cfg.read_layer,
                                    [encoded[i].token_ids for i in parts[k]], [encoded[i].n_prefix for i in parts[k]],
                                    [acts[i] for i in parts[k]], cfg.act_dtype, d_model)
            write_table(out.file(f"part-{k:05d}.parquet"), table, table.schema)
            n_tokens += sum(len(encoded[i].token_ids) for i in parts[k])
            progress.advance(len(parts[k]))
        write_table(out.file("rejected.parquet"), rejected, REJECTED)
        elapsed = time.monotonic() - started
        counts = {"rows_in": len(rows), "n_dialogs": len(kept), "n_parts": len(parts),
                  "n_kept_tokens": sum(len(encoded[i].token_ids) - encoded[i].n_prefix for i in kept),
                  **{f"dropped_{r}": sum(x["reason"] == r for x in rejected) for r in {x["reason"] for x in rejected}}}
        summary = {"model": model.name, "model_path": loaded.path, "revision": model.revision,
                   "dtype": str(loaded.dtype), "device": str(loaded.device), "layers": [cfg.read_layer],
                   "d_model": d_model, "variant": cfg.variant, "act_dtype": cfg.act_dtype,
                   "tokens_per_s": round(n_tokens / elapsed, 1) if n_tokens else None,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
        manifest = out.commit(version=VERSION, inputs=[dialogs], counts=counts, summary=summary,
                              config={"extract": cfg.model_dump(mode="json"), "model": model.model_dump(mode="json")},
                              rows={f"part-{k:05d}.parquet": len(p) for k, p in enumerate(parts)}, **provenance())
    logger().info("extract: %d dialogs in %d parts, %d rejected", len(kept), len(parts), len(rejected))
    publish(manifest, store)
    return manifest
