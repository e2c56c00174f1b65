"""organism: the target taught invented facts, the subject of the `organism` evaluation task (privileged reading).

Reads   nothing but the model
Writes  organism/<fp>/{adapter/, facts.parquet, curve.parquet} + manifest.json   (PROTOCOL.md, "organism")
Resume  one pass of a few minutes: a killed run starts over.

Seeded invented people and their facts (latentqa/organism.py), then a LoRA on the target trained on lessons that
state them until the organism answers `target_accuracy` of direct questions, or `max_steps`. Its accuracy before
training (the base target's, near chance) and after are in the summary; a run that stops short of the target
says so in the log and the summary (`reached`), and the evaluation reports the organism's own accuracy beside
every reading, so a weak organism is visible rather than hidden.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from latentqa.config import ModelConfig, OrganismConfig
from latentqa.models import load_model, model_identity
from latentqa.organism import TeachSettings, add_organism_lora, invent, teach
from storage.fingerprint import fingerprint
from storage.parquet import ORGANISM_CURVE, ORGANISM_FACTS, write_table
from storage.store import StageDir, Store
from tasks._stage import Made, stage_task
from tasks._ui import Progress, logger

STAGE, VERSION = "organism", 1


def fingerprint_of(p: dict[str, Any]) -> str:
    model = p["model"]
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], model, model_identity(model.name, model.revision)],
                       inputs=[])


@stage_task(STAGE, VERSION, fingerprint_of)
def organism(out: StageDir, cfg: OrganismConfig, model: ModelConfig, store: Store) -> Made:
    """Invent the facts; teach them to a LoRA copy of the target; keep the adapter, the facts and the curve."""
    loaded = load_model(model.name, model.revision, model.dtype, model.device)  # its own copy: peft wraps in place
    facts = invent(cfg.n_entities, cfg.seed)
    net = add_organism_lora(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.seed)
    settings = TeachSettings(lr=cfg.lr, batch_size=cfg.batch_size, max_steps=cfg.max_steps,
                             eval_every=cfg.eval_every, target_accuracy=cfg.target_accuracy, seed=cfg.seed)
    bar = Progress(cfg.max_steps, "organism: steps (stops early at the target accuracy)")

    def told(row: dict) -> None:
        bar.advance(row["step"] - bar.done)
        logger().info("organism: step %d, direct accuracy %.3f", row["step"], row["accuracy"])

    curve = teach(net, loaded.tokenizer, facts, settings, on_check=told)
    out.save_model("adapter", net)
    n_facts = write_table(out.file("facts.parquet"), [asdict(f) for f in facts], ORGANISM_FACTS)
    n_curve = write_table(out.file("curve.parquet"), curve, ORGANISM_CURVE)
    before, after = curve[0]["accuracy"], curve[-1]["accuracy"]
    if after < cfg.target_accuracy:
        logger().warning("organism: direct accuracy %.3f after %d steps, short of organism.target_accuracy=%.2f; "
                         "raise organism.max_steps or organism.lr", after, curve[-1]["step"], cfg.target_accuracy)
    summary = {"accuracy_before": before, "accuracy": after, "reached": after >= cfg.target_accuracy,
               "steps": curve[-1]["step"]}
    return Made(counts={"n_entities": cfg.n_entities, "n_facts": n_facts, "n_steps": curve[-1]["step"]},
                rows={"facts.parquet": n_facts, "curve.parquet": n_curve}, summary=summary, figures=summary)
