"""train: decoder = target + LoRA, taught to answer questions about cached activations patched into it.

Reads   filter/<fp>/train.parquet, extract/<fp>/part-*.parquet (zero-copy)
Writes  train/<fp>/{adapter/, decoder.json, curves.parquet} + manifest.json   (storage/PROTOCOL.md, "train")
Resume  a killed run leaves only <fp>.partial/ and trains again from the start (checkpoints: issue 5).
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch
from prefect import task

from latentqa.config import ModelConfig, TrainConfig
from latentqa.decoder import DecoderInfo, batch_loss, collate, make_decoder, placeholder_id
from latentqa.models import load_model
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import CURVES, write_table
from storage.store import Store
from tasks._common import Progress, load_examples, logger, provenance, publish, stage_cache_policy

STAGE, VERSION = "train", 1


def fingerprint_of(p: dict[str, Any]) -> str:
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], p["model"]],
                       inputs=[p["split"].fingerprint, p["acts"].fingerprint])


def _fit(decoder, examples, views, cfg: TrainConfig, pad_id: int, device) -> list[dict]:
    """AdamW over the adapter weights; returns the loss curve (one row per optimizer step)."""
    params = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = -(-len(examples) // cfg.batch_size)
    total = min(cfg.max_steps or 10**9, cfg.epochs * n_batches // cfg.grad_accum) or 1
    rng, curves, progress = random.Random(cfg.seed), [], Progress(total, "train: optimizer steps")
    decoder.train()
    for epoch in range(cfg.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for b in range(n_batches):
            idx = order[b * cfg.batch_size: (b + 1) * cfg.batch_size]
            batch = collate([examples[i] for i in idx], [views[i] for i in idx], pad_id, device)
            loss = batch_loss(decoder, batch, cfg.write_layer)
            (loss / cfg.grad_accum).backward()
            if (b + 1) % cfg.grad_accum:
                continue
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            curves.append({"step": len(curves) + 1, "epoch": epoch, "loss": loss.item(), "lr": cfg.lr})
            progress.advance()
            if len(curves) % cfg.log_every == 0:
                logger().info("train: step %d/%d loss %.4f", len(curves), total, loss.item())
            if len(curves) >= total:
                return curves
    return curves


@task(name=STAGE, cache_policy=stage_cache_policy(STAGE, fingerprint_of), result_serializer="json")
def train(cfg: TrainConfig, model: ModelConfig, split: Manifest, acts: Manifest, store: Store) -> Manifest:
    """LoRA fine-tuning of the decoder on (activations, question) -> answer, loss on the answer only."""
    fp = fingerprint_of({"cfg": cfg, "model": model, "split": split, "acts": acts})
    if done := store.finished(STAGE, fp):
        return done
    with store.open_stage(STAGE, fp) as out:
        loaded = load_model(model.name, model.revision, model.dtype, model.device)
        tok = loaded.tokenizer
        ph_id = placeholder_id(tok, cfg.placeholder)
        layer = cfg.read_layer if cfg.read_layer is not None else acts.summary["layers"][0]
        _, examples, views = load_examples(store, split, acts, "train.parquet", tok, ph_id, layer)
        if not examples:
            raise RuntimeError(f"train: {store.path(split, 'train.parquet')} has no rows; nothing to train on")
        decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        started = time.monotonic()
        curves = _fit(decoder, examples, views, cfg, pad_id, loaded.device)
        elapsed = time.monotonic() - started
        decoder.save_pretrained(out.file("adapter"))
        DecoderInfo(base_model=model.name, read_layer=layer, write_layer=cfg.write_layer,
                    placeholder=cfg.placeholder, placeholder_id=ph_id,
                    variant=acts.summary["variant"]).save(out.file("decoder.json"))
        n_curves = write_table(out.file("curves.parquet"), curves, CURVES)
        summary = {"first_loss": curves[0]["loss"], "final_loss": curves[-1]["loss"], "steps": len(curves),
                   "examples_per_s": round(len(curves) * cfg.batch_size * cfg.grad_accum / elapsed, 3),
                   "trainable_params": sum(p.numel() for p in decoder.parameters() if p.requires_grad)}
        manifest = out.commit(version=VERSION, inputs=[split, acts], rows={"curves.parquet": n_curves},
                              counts={"n_examples": len(examples), "n_steps": len(curves)},
                              summary={**summary, "device": str(loaded.device)},
                              config={"train": cfg.model_dump(mode="json"), "model": model.model_dump(mode="json")},
                              **provenance())
    publish(manifest, store, figures=summary)
    return manifest
