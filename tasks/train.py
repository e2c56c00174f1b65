"""train: decoder = target + LoRA, taught to answer questions about cached activations patched into it.

Reads   filter/<fp>/{train,eval}.parquet, extract/<fp>/part-*.parquet (zero-copy)
Writes  train/<fp>/{adapter/, decoder.json, curves.parquet, curves.png} + manifest.json   (PROTOCOL.md, "train")
Resume  every train.checkpoint_every steps a checkpoint (adapter, AdamW moments, scheduler, RNG, data position)
        lands in <fp>.partial/checkpoints/step-N/; a rerun after a kill continues from the newest one and ends
        with the adapter an uninterrupted run would have written. Checkpoints are removed at commit.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from latentqa.config import ModelConfig, TrainConfig
from latentqa.decoder import DecoderInfo, make_decoder, placeholder_id
from latentqa.models import load_model
from latentqa.training import Position, fit, total_steps
from storage.checkpoints import latest_checkpoint, save_checkpoint
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import CURVES, write_table
from storage.plots import plot_curves
from storage.store import Store
from tasks._common import (Progress, activation_reader, fail_if_asked, load_examples, logger, provenance, publish,
                           publish_image, stage_task)

STAGE, VERSION = "train", 2


def fingerprint_of(p: dict[str, Any]) -> str:
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], p["model"]],
                       inputs=[p["split"].fingerprint, p["acts"].fingerprint])


@stage_task(STAGE, fingerprint_of)
def train(cfg: TrainConfig, model: ModelConfig, split: Manifest, acts: Manifest, store: Store) -> Manifest:
    """LoRA fine-tuning of the decoder on (activations, question) -> answer, loss on the answer only."""
    fp = fingerprint_of({"cfg": cfg, "model": model, "split": split, "acts": acts})
    if done := store.finished(STAGE, fp):
        return done
    fail_if_asked(STAGE)
    with store.open_stage(STAGE, fp) as out:
        loaded = load_model(model.name, model.revision, model.dtype, model.device)
        tok, layer = loaded.tokenizer, cfg.read_layer if cfg.read_layer is not None else acts.summary["layers"][0]
        ph_id = placeholder_id(tok, cfg.placeholder)
        reader = activation_reader(store, acts)  # both splits read the same parts: map them once
        _, *train_set = load_examples(store, split, reader, "train.parquet", tok, ph_id, layer, cfg.loss_on_ack)
        _, *eval_set = load_examples(store, split, reader, "eval.parquet", tok, ph_id, layer, cfg.loss_on_ack,
                                     limit=cfg.eval_examples)
        if not train_set[0]:
            raise RuntimeError(f"train: {store.path(split, 'train.parquet')} has no rows; nothing to train on")
        decoder = make_decoder(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
        if cfg.grad_checkpointing:
            decoder.gradient_checkpointing_enable()
        resume = latest_checkpoint(out.dir / "checkpoints")
        start_step = resume[1]["step"] if resume else 0
        progress, started = Progress(total_steps(len(train_set[0]), cfg), "train: optimizer steps"), time.monotonic()
        progress.advance(start_step)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

        def on_step(pos: Position) -> None:
            progress.advance()
            if pos.step % cfg.log_every == 0:
                logger().info("train: step %d loss %.4f", pos.step, pos.curves[-1]["loss"])

        final = fit(decoder, tuple(train_set), tuple(eval_set), cfg, pad_id, loaded.device, resume=resume,
                    on_checkpoint=lambda step, t, m: save_checkpoint(out.dir / "checkpoints", step, t, m),
                    on_step=on_step)
        elapsed = time.monotonic() - started
        shutil.rmtree(out.dir / "checkpoints", ignore_errors=True)  # resume state, not a result
        decoder.save_pretrained(out.file("adapter"))
        DecoderInfo(base_model=model.name, read_layer=layer, write_layer=cfg.write_layer, placeholder=cfg.placeholder,
                    placeholder_id=ph_id, variant=acts.summary["variant"], norm_match=cfg.norm_match
                    ).save(out.file("decoder.json"))
        n_curves = write_table(out.file("curves.parquet"), final.curves, CURVES)
        plot_curves(final.curves, out.file("curves.png"))
        summary = _summary(final, cfg, start_step, elapsed)
        manifest = out.commit(version=VERSION, inputs=[split, acts], rows={"curves.parquet": n_curves},
                              counts={"n_examples": len(train_set[0]), "n_eval_examples": len(eval_set[0]),
                                      "n_steps": final.step, "resumed_at_step": start_step},
                              summary={**summary, "device": str(loaded.device)},
                              config={"train": cfg.model_dump(mode="json"), "model": model.model_dump(mode="json")},
                              **provenance())
    publish(manifest, store, figures=summary)
    publish_image(manifest, store, "curves.png", "training curves")
    return manifest


def _summary(final: Position, cfg: TrainConfig, start_step: int, elapsed: float) -> dict[str, Any]:
    evals = [c["eval_loss"] for c in final.curves if c["eval_loss"] is not None]
    steps_now = final.step - start_step
    return {"first_loss": final.curves[0]["loss"], "final_loss": final.curves[-1]["loss"], "steps": final.step,
            "final_eval_loss": evals[-1] if evals else None,
            "examples_per_s": round(steps_now * cfg.batch_size * cfg.grad_accum / elapsed, 3) if steps_now else None}
