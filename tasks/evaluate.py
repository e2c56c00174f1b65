"""evaluate: held-out controls -> decoder answers scored against the references, with a shuffled control.

Reads   train/<fp>/{adapter/, decoder.json}, filter/<fp>/eval.parquet, extract/<fp>/part-*.parquet
Writes  evaluate/<fp>/{metrics.parquet, report.md} + manifest.json   (storage/PROTOCOL.md, "evaluate")
Resume  one pass; nothing to resume.

Conditions: `true` feeds each question the activations of its own dialog; `shuffled` feeds those of another
dialog of the same split. The margin between them is how much of the score comes from the activations.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from latentqa.config import EvaluateConfig, ModelConfig
from latentqa.decoder import DecoderInfo, batch_loss, collate, encode_example
from latentqa.generate import answer
from latentqa.metrics import rouge_l, token_f1
from latentqa.models import load_model
from storage.fingerprint import fingerprint
from storage.manifest import Manifest
from storage.parquet import METRICS, write_table
from storage.store import Store
from tasks._common import fail_if_asked, activation_reader, load_examples, logger, provenance, publish, stage_task

STAGE, VERSION = "evaluate", 1


def fingerprint_of(p: dict[str, Any]) -> str:
    return fingerprint(STAGE, VERSION, sections=[p["cfg"], p["model"]],
                       inputs=[p["decoder"].fingerprint, p["split"].fingerprint, p["acts"].fingerprint])


def shuffled_sources(dialog_ids: list[str], seed: int) -> dict[str, str]:
    """Each dialog -> a different dialog of the same split (a seeded derangement over distinct dialogs)."""
    distinct = sorted(set(dialog_ids))
    if len(distinct) < 2:
        return {}
    rotated = distinct[:]
    random.Random(seed).shuffle(rotated)
    return {d: rotated[(rotated.index(d) + 1) % len(rotated)] for d in distinct}


@torch.no_grad()
def _score(net, loaded, info: DecoderInfo, rows: list[dict], acts_list: list, cfg: EvaluateConfig, condition: str):
    """Metric rows and their means for one condition: greedy answers plus teacher-forced answer loss."""
    tok, step = loaded.tokenizer, cfg.batch_size
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    generated, losses = [], []
    for i in range(0, len(rows), step):
        chunk, acts = rows[i: i + step], acts_list[i: i + step]
        generated += answer(net, tok, acts, [r["question"] for r in chunk], info.placeholder_id, info.write_layer,
                            cfg.max_new_tokens, info.norm_match)
        # another dialog's activations have another length: the prompt is rebuilt around them
        examples = [encode_example(tok, len(a), r["question"], r["answer"], info.placeholder_id)
                    for r, a in zip(chunk, acts)]
        batch = collate(examples, acts, pad_id, loaded.device, info.norm_match)
        losses.append(float(batch_loss(net, batch, info.write_layer)))
    metrics = [{"qa_id": r["qa_id"], "dialog_id": r["dialog_id"], "label": r["label"], "condition": condition,
                "question": r["question"], "reference": r["answer"], "generated": g,
                "rouge_l": rouge_l(g, r["answer"]), "token_f1": token_f1(g, r["answer"])} for r, g in zip(rows, generated)]
    n = max(len(metrics), 1)
    means = {"n": len(metrics), "loss": round(sum(losses) / max(len(losses), 1), 4),
             "rouge_l": round(sum(m["rouge_l"] for m in metrics) / n, 4),
             "token_f1": round(sum(m["token_f1"] for m in metrics) / n, 4)}
    return metrics, means


@stage_task(STAGE, fingerprint_of)
def evaluate(cfg: EvaluateConfig, model: ModelConfig, decoder: Manifest, split: Manifest, acts: Manifest,
             store: Store) -> Manifest:
    """Generate answers for held-out QA pairs with true and shuffled activations; score ROUGE-L and token F1."""
    from peft import PeftModel

    fp = fingerprint_of({"cfg": cfg, "model": model, "decoder": decoder, "split": split, "acts": acts})
    if done := store.finished(STAGE, fp):
        return done
    fail_if_asked(STAGE)
    with store.open_stage(STAGE, fp) as out:
        info = DecoderInfo.load(store.path(decoder, "decoder.json"))
        loaded = load_model(model.name, model.revision, model.dtype, model.device)
        net = PeftModel.from_pretrained(loaded.model, store.path(decoder, "adapter")).eval()
        reader = activation_reader(store, acts)
        rows, _, views = load_examples(store, split, reader, "eval.parquet", loaded.tokenizer, info.placeholder_id,
                                       info.read_layer)
        rows, views = rows[: cfg.max_examples], views[: cfg.max_examples]
        conditions = {"true": views}
        if others := shuffled_sources([r["dialog_id"] for r in rows], cfg.seed):
            view_of = {r["dialog_id"]: v for r, v in zip(rows, views)}
            conditions["shuffled"] = [view_of[others[r["dialog_id"]]] for r in rows]
        metrics, summary = [], {}
        for condition, acts_list in conditions.items():
            rows_c, summary[condition] = _score(net, loaded, info, rows, acts_list, cfg, condition)
            metrics += rows_c
        n = write_table(out.file("metrics.parquet"), metrics, METRICS)
        out.file("report.md").write_text(report(summary, metrics))
        manifest = out.commit(version=VERSION, inputs=[decoder, split, acts], rows={"metrics.parquet": n},
                              counts={"n_examples": len(rows), "n_metrics_rows": n}, summary={"metrics": summary},
                              config={"evaluate": cfg.model_dump(mode="json")}, **provenance())
    logger().info("evaluate: %s", summary)
    publish(manifest, store, figures={f"{c}_{k}": v for c, s in summary.items() for k, v in s.items()})
    return manifest


def report(summary: dict[str, dict], metrics: list[dict], n_examples: int = 5) -> str:
    lines = ["# Evaluation", "", "| condition | n | loss | ROUGE-L | token F1 |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {s['n']} | {s['loss']:.3f} | {s['rouge_l']:.3f} | {s['token_f1']:.3f} |" for c, s in summary.items()]
    lines += ["", "## Examples (true activations)", ""]
    for m in [m for m in metrics if m["condition"] == "true"][:n_examples]:
        lines += [f"- **{m['label']}**: {m['question']}", f"  - reference: {m['reference']}",
                  f"  - decoder: {m['generated']}"]
    return "\n".join(lines) + "\n"
