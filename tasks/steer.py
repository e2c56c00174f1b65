"""steer: a steering LoRA on the target, trained through the frozen decoder, and what it changes.

Reads   train/<fp>/{adapter/, decoder.json}; the control (builtin, a file, or a catalog persona)
Writes  steer/<fp>/{adapter/, steer.json, results.parquet, report.md} + manifest.json   (PROTOCOL.md, "steer")
Resume  one pass of `steer.steps` optimizer steps; nothing to resume.

The control is a list of [question, answer] pairs the decoder should give about the target. The target reads
neutral prompts; the decoder's loss on the desired answers, given those activations, is backpropagated into a
LoRA on the target's blocks up to the read layer (latentqa/steering.py). The evaluations compare the target
before steering, after, and with a random LoRA of the same size (each steering weight replaced by noise of the
same norm): sentiment, debiasing and persona identification (latentqa/evals/steering_evals.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from latentqa.config import ModelConfig, SteerConfig
from latentqa.decoder import load_decoder
from latentqa.evals import steering_evals as ev
from latentqa.evals.steering_controls import control_pairs
from latentqa.models import load_model, model_identity
from latentqa.prompts import description_questions
from latentqa.steering import SteerSettings, add_steering_lora, randomize_like, train_steering
from storage.fingerprint import file_sha256, fingerprint
from storage.manifest import Manifest
from storage.parquet import STEER_RESULTS, write_table
from storage.store import StageDir, Store
from tasks._stage import Made, stage_task
from tasks._ui import Progress, logger

STAGE, VERSION = "steer", 3  # 2: debias reports |margin| beside the signed margin; 3: persona on held-out prompts


def fingerprint_of(p: dict[str, Any]) -> str:
    cfg: SteerConfig = p["cfg"]
    control = [file_sha256(Path(cfg.control))] if Path(cfg.control).is_file() else []  # a file by its bytes
    weights = model_identity(p["model"].name, p["model"].revision)
    return fingerprint(STAGE, VERSION, sections=[cfg, p["model"], weights, *control], inputs=[p["decoder"].fingerprint])


@stage_task(STAGE, VERSION, fingerprint_of)
def steer(out: StageDir, cfg: SteerConfig, model: ModelConfig, decoder: Manifest, store: Store) -> Made:
    """Train the steering LoRA through the frozen decoder; compare the target before, after and randomised."""
    pairs, persona = control_pairs(cfg)
    trained = load_decoder(store.path(decoder), model.name, model.revision, model.dtype, model.device)
    info, dec, tok = trained.info, trained.net, trained.tokenizer
    prompts = ev.steering_data()["neutral_prompts"]
    settings = SteerSettings(cfg.steps, cfg.lr, cfg.batch_size, cfg.lora_r, cfg.lora_alpha, per_layer=cfg.per_layer,
                             seed=cfg.seed)
    target = add_steering_lora(load_model(model.name, model.revision, model.dtype, model.device).model,
                               info.read_layer, settings)
    distractors = []
    if persona:  # pairs by reading: the decoder's answers about the target with the persona as system prompt
        pairs = ev.pairs_by_reading(dec, target, tok, info, persona, prompts[:4],  # its LoRA starts at zero
                                    description_questions("persona", 3))
        distractors = ev.distractor_personas(persona, cfg.identification_k)
    measured = Progress(3, "steer: conditions evaluated (before, steered, random LoRA)")
    with target.disable_adapter():
        results, samples = ev.measure(cfg, target, dec, tok, info, persona, distractors, "before")
    measured.advance()
    progress = Progress(cfg.steps, "steer: optimizer steps")
    curve = train_steering(target, dec, tok, info, pairs, prompts, settings, on_step=lambda *_: progress.advance())
    out.save_model("adapter", target)
    r, s = ev.measure(cfg, target, dec, tok, info, persona, distractors, "steered")
    results, samples = results + r, samples + s
    measured.advance()
    randomize_like(target, cfg.seed + 1)  # the trained adapter is saved above
    r, s = ev.measure(cfg, target, dec, tok, info, persona, distractors, "random_lora")
    results, samples = results + r, samples + s
    measured.advance()
    out.write_json("steer.json", {
        "control": cfg.control, "persona": persona, "pairs": pairs, "curve": curve, "trained_on": prompts,
        "persona_measured_on": ev.steering_data()["heldout_prompts"] if persona else []})
    n = write_table(out.file("results.parquet"), results, STEER_RESULTS)
    out.write_text("report.md", ev.report(cfg, results, samples, curve))
    logger().info("steer: loss %.3f -> %.3f; %s", curve[0]["loss"], curve[-1]["loss"], results)
    return Made(rows={"results.parquet": n}, counts={"n_pairs": len(pairs), "steps": cfg.steps},
                summary={"results": results, "first_loss": curve[0]["loss"], "last_loss": curve[-1]["loss"]},
                figures={f"{r['eval']}/{r['metric']}/{r['condition']}": round(r["value"], 4) for r in results})
