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
from latentqa.decoder import DecoderInfo, collate, encode_example, make_decoder, placeholder_id, write_block
from latentqa.models import load_model
from latentqa.patching import patched_block
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import CURVES, SPLIT, ActivationReader, read_table, write_table
from storage.store import Store
from tasks._common import Progress, logger, provenance, publish, stage_cache_policy

STAGE, VERSION = "train", 1


def fingerprint_of(p: dict[str, Any]) -> str:
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], p["model"]],
                       inputs=[p["split"].fingerprint, p["acts"].fingerprint])


def load_examples(store: Store, split: Manifest, acts: Manifest, name: str, tokenizer, ph_id: int):
    """(rows, encoded examples, activation views) for one split file."""
    rows = read_table(store.path(split, name), SPLIT).to_pylist()
    reader = ActivationReader(store.path(acts, f.path) for f in acts.files_matching("part-"))
    layer = acts.summary["layers"][0]
    views = [reader.acts(r["dialog_id"], layer) for r in rows]
    examples = [encode_example(tokenizer, len(v), r["question"], r["answer"], ph_id) for r, v in zip(rows, views)]
    return rows, examples, views


def batch_loss(decoder, batch, write_layer: int) -> torch.Tensor:
    with patched_block(write_block(decoder, write_layer), batch.patch):
        out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids, labels=batch.labels)
    return out.loss


@task(name=STAGE, cache_policy=stage_cache_policy(STAGE, fingerprint_of), result_serializer="json")
def train(cfg: TrainConfig, model: ModelConfig, split: Manifest, acts: Manifest, store: Store) -> Manifest:
    """LoRA fine-tuning of the decoder on (activations, question) -> answer, loss on the answer only."""
    fp = fingerprint_of({"cfg": cfg, "model": model, "split": split, "acts": acts})
    if done := store.finished(STAGE, fp):
        return done
    loaded = load_model(model.name, model.revision, model.dtype, model.device)
    ph_id = placeholder_id(loaded.tokenizer, cfg.placeholder)
    _rows, examples, views = load_examples(store, split, acts, "train.parquet", loaded.tokenizer, ph_id)
    if not examples:
        raise RuntimeError(f"train: {store.path(split, 'train.parquet')} has no rows; nothing to train on")
    decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
    params = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = -(-len(examples) // cfg.batch_size)
    total = min(cfg.max_steps or 10**9, cfg.epochs * n_batches // cfg.grad_accum) or 1
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else loaded.tokenizer.eos_token_id
    rng, curves, step, started = random.Random(cfg.seed), [], 0, time.monotonic()
    progress = Progress(total, "train: optimizer steps")
    decoder.train()
    with store.open_stage(STAGE, fp) as out:
        for epoch in range(cfg.epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            for b in range(n_batches):
                idx = order[b * cfg.batch_size: (b + 1) * cfg.batch_size]
                batch = collate([examples[i] for i in idx], [views[i] for i in idx], pad_id, loaded.device)
                loss = batch_loss(decoder, batch, cfg.write_layer)
                (loss / cfg.grad_accum).backward()
                if (b + 1) % cfg.grad_accum:
                    continue
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                curves.append({"step": step, "epoch": epoch, "loss": float(loss), "lr": cfg.lr})
                progress.advance()
                if step % cfg.log_every == 0:
                    logger().info("train: step %d/%d loss %.4f", step, total, float(loss))
                if step >= total:
                    break
            if step >= total:
                break
        decoder.save_pretrained(out.file("adapter"))
        info = DecoderInfo(base_model=model.name, read_layer=acts.summary["layers"][0], write_layer=cfg.write_layer,
                           placeholder=cfg.placeholder, placeholder_id=ph_id, variant=acts.summary["variant"])
        info.save(out.file("decoder.json"))
        n_curves = write_table(out.file("curves.parquet"), curves, CURVES)
        elapsed = time.monotonic() - started
        summary = {"final_loss": curves[-1]["loss"], "first_loss": curves[0]["loss"], "steps": step,
                   "examples_per_s": round(step * cfg.batch_size * cfg.grad_accum / elapsed, 3),
                   "trainable_params": sum(p.numel() for p in params), "device": str(loaded.device)}
        manifest = out.commit(version=VERSION, inputs=[split, acts], rows={"curves.parquet": n_curves},
                              counts={"n_examples": len(examples), "n_steps": step}, summary=summary,
                              config={"train": cfg.model_dump(mode="json"), "model": model.model_dump(mode="json")},
                              **provenance())
    publish(manifest, store, figures={k: v for k, v in summary.items() if k != "device"})
    return manifest
