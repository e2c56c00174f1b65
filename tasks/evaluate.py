"""evaluate: the reading experiments, each scored with the decoder and with faithfulness controls.

Reads   train/<fp>/{adapter/, decoder.json}, filter/<fp>/{train,eval}.parquet, extract/<fp>/part-*.parquet,
        synthesize/<fp>/dialogs.parquet; organism/<fp>/{adapter/, facts.parquet} for the organism task
Writes  evaluate/<fp>/{metrics,summary,margins}.parquet, report.md, scores.png + manifest.json
        (storage/PROTOCOL.md, "evaluate")
Resume  one pass; nothing to resume.

Tasks (latentqa/evals/items.py): held-out QA pairs as gist and fact questions, a persona/goal/scenario
classification, hidden personas and goals (a held-out persona or goal as a masked system prompt, identified
among the K descriptions of its block by calibrated answer loss), relational facts ("Tell me about France." ->
currency) and the organism's invented facts (latentqa/evals/organism_task.py: only the organism's activations
carry them). Held-out items reuse the extracted activations; hidden-persona, relational and organism prompts are
read from the target (or the organism) here. Controls
(latentqa/evals/harness.py): shuffled and zero activations, a text-only reader, the untrained model with the
activations patched in, and a linear probe. Every score carries n and a seeded 95% bootstrap interval; the
report shows the decoder's paired margin over each control and whether it reads (latentqa/evals/stats.py).
"""

from __future__ import annotations

from typing import Any, Callable

from latentqa.config import EndpointConfig, EvaluateConfig, ModelConfig
from latentqa.decoder import load_decoder
from latentqa.dialogs import pad_id_of
from latentqa.evals.harness import GENERATIVE, Scorer, margins, score_items, summarize, verdicts
from latentqa.evals.items import TASKS, Item, build_items, read_fresh, sample_per_task
from latentqa.evals.organism_task import organism_items, score_organism
from latentqa.evals.judge import judge_picks, judge_rows
from latentqa.evals.probe import Probe, mean_pool
from latentqa.evals.report import markdown, pivot, primary_scores
from latentqa.models import model_identity
from latentqa.organism import Fact, load_organism
from storage.fingerprint import file_sha256, fingerprint
from storage.manifest import Manifest
from storage.parquet import MARGINS, METRICS, SUMMARY, read_table, write_table
from storage.plots import plot_bars
from storage import outputs
from storage.store import StageDir, Store
from tasks._data import activation_reader
from tasks._llm import endpoint_client
from tasks._stage import Made, stage_task
from tasks._ui import Progress, logger

STAGE, VERSION = "evaluate", 6  # 6: generative identification (metrics.parquet's `generative`), hard blocks, decoding


def fingerprint_of(p: dict[str, Any]) -> str:
    cfg: EvaluateConfig = p["cfg"]
    # a table of hidden prompts by its bytes
    hidden = [file_sha256(path) for path in (cfg.hidden_persona_file, cfg.hidden_goal_file) if path]
    judge = [p["endpoint"]] if cfg.judge and p.get("endpoint") else []
    weights = model_identity(p["model"].name, p["model"].revision)
    organism = [p["organism"].fingerprint] if p.get("organism") else []
    return fingerprint(STAGE, VERSION, sections=[cfg, p["model"], weights, *hidden, *judge],
                       inputs=[p["decoder"].fingerprint, p["split"].fingerprint, p["acts"].fingerprint,
                               p["synth"].fingerprint, *organism])


def scoring_progress(items: list[Item], controls: list[str]) -> Callable[[str, int], None]:
    """A progress bar (and log line every 10%, and Prefect progress artifact) per kind of scoring work, told of
    every batch: replies generated, answers scored, items ranked (identification)."""
    conditions = 1 + sum(c != "probe" for c in controls)
    ranked = sum(bool(it.candidates) for it in items)
    totals = {"replies generated": len(items) * conditions, "answers scored": (len(items) - ranked) * conditions,
              "items ranked": ranked * conditions}
    bars: dict[str, Progress] = {}

    def tell(what: str, n: int) -> None:
        if what not in bars:
            bars[what] = Progress(totals[what], f"evaluate: {what}")
        bars[what].advance(n)
    return tell


def train_probe(store: Store, split: Manifest, reader, layer: int, seed: int) -> Probe | None:
    """The probe control: family from mean-pooled activations, fit on the train split's dialogs."""
    rows = {r["dialog_id"]: r["family"] for r in outputs.split_rows(store, split, "train")}
    if len(set(rows.values())) < 2:
        return None
    ids = sorted(rows)
    return Probe(mean_pool([reader.acts(d, layer) for d in ids]), [rows[d] for d in ids], seed=seed)


def organism_read(store: Store, organism: Manifest, cfg: EvaluateConfig, tok) -> list[Item]:
    """The organism task's items: one per taught fact (at most evaluate.max_examples, a seeded sample)."""
    facts = [Fact(**r) for r in outputs.organism_facts(store, organism)]
    return sample_per_task(organism_items(tok, facts), cfg.max_examples, cfg.seed)


@stage_task(STAGE, VERSION, fingerprint_of)
def evaluate(out: StageDir, cfg: EvaluateConfig, model: ModelConfig, decoder: Manifest, split: Manifest,
             acts: Manifest, synth: Manifest, store: Store, endpoint: EndpointConfig | None = None,
             organism: Manifest | None = None) -> Made:
    """Score every task under the decoder and every control; write the tables, the report and the chart."""
    if cfg.judge and endpoint is None:
        raise ValueError("evaluate.judge needs an endpoint: pass the run config's endpoint section")
    if "organism" in cfg.tasks and organism is None:
        raise ValueError("evaluate.tasks has `organism`: pass the organism stage's manifest (tasks/organism.py)")
    trained = load_decoder(store.path(decoder), model.name, model.revision, model.dtype, model.device)
    info, net, tok = trained.info, trained.net, trained.tokenizer
    reader = activation_reader(store, acts)
    dialogs = {d["dialog_id"]: d for d in outputs.dialogs(store, synth)}
    split_rows = outputs.split_rows(store, split, "eval")
    hidden = {family: read_table(path).to_pylist() for family, path in
              (("persona", cfg.hidden_persona_file), ("goal", cfg.hidden_goal_file)) if path}
    stored, fresh = build_items(cfg, tok, split_rows, dialogs, reader, info.read_layer, info.variant, hidden)
    with net.disable_adapter():  # the target is the untrained model
        read_fresh(net, fresh, info.read_layer, pad_id_of(tok), cfg.batch_size)
    probe = train_probe(store, split, reader, info.read_layer, cfg.seed) if "probe" in cfg.controls else None
    items = sorted(stored + fresh, key=lambda it: TASKS.index(it.task))  # the report's task order
    taught = organism_read(store, organism, cfg, tok) if "organism" in cfg.tasks else []
    scorer = Scorer(net, tok, info, cfg.batch_size, cfg.max_new_tokens, scoring_progress(items + taught, cfg.controls),
                    cfg.decoding, cfg.contrast, cfg.rerank_samples, cfg.rerank_temperature, cfg.seed)
    rows = score_items(scorer, items, cfg.controls, cfg.seed, probe)
    if taught:
        subject = load_organism(outputs.organism_adapter(store, organism), model.name, model.revision, model.dtype,
                                model.device)
        rows += score_organism(scorer, subject, taught, cfg.controls, info.read_layer, pad_id_of(tok), cfg.seed)
        items += taught
    scores, picks = [None] * len(rows), [None] * len(rows)
    if cfg.judge:
        candidates = {(it.task, it.item_id): it.candidates for it in items if it.candidates}
        with endpoint_client(endpoint, store) as llm:
            scores = judge_rows(llm, rows)
            picks = judge_picks(llm, rows, candidates, cfg.seed) if candidates else picks
    for r, score, pick in zip(rows, scores, picks):
        r["judge"], r["judge_generative"] = score, pick
    summary, margin = summarize(rows, cfg.seed), margins(rows, cfg.seed)
    reads, says = verdicts(summary), verdicts(summary, GENERATIVE)
    n = write_table(out.file("metrics.parquet"), rows, METRICS)
    write_table(out.file("summary.parquet"), summary, SUMMARY)
    write_table(out.file("margins.parquet"), margin, MARGINS)
    out.write_text("report.md", markdown(summary, margin, reads, rows, says, cfg.decoding))
    plot_bars(primary_scores(summary), out.file("scores.png"), ylabel="primary score")
    by_task = pivot(summary)
    logger().info("evaluate: %s", {t: c.get("decoder") for t, c in by_task.items()})
    tasks = [t for t in TASKS if any(it.task == t for it in items)]
    return Made(rows={"metrics.parquet": n, "summary.parquet": len(summary), "margins.parquet": len(margin)},
                counts={"n_items": len(items), **{f"n_{t}": sum(it.task == t for it in items) for t in tasks}},
                summary={"scores": by_task, "reads": reads, "reads_generative": says, "decoding": cfg.decoding},
                figures={f"{r['task']}/{r['condition']}/{r['metric']}": r["value"] for r in summary},
                images={"scores.png": "decoder vs controls per task"})
