"""Benchmark: the evaluate stage's scoring path against the path it replaced, in one run on the same items.

baseline  the scoring of evaluate v3 (kept here, callable): each condition generated and scored on its own,
          rows in batches of 8 in item order, every identification candidate scored as a full sequence
          (activations + question + candidate) and the reference scored once more
new       latentqa.evals.harness.score_items: the conditions that share a model state (decoder, shuffled, zero)
          in one pass, rows grouped by length, batches of `--batch-size`; each prompt read once
          (latentqa/ranking.py), the reference or the K candidates scored from its KV cache and the greedy reply
          decoded from the same cache, each row leaving the batch at its end-of-sequence token; rows with the
          same prompt (the zero control, the text reader of one stimulus) read once; the decoder's adapter merged
          into its float32 weights while it reads. Its time splits into the prompt pass (shared), loss scoring
          and generation

Items are built like the demo's (SmolLM2-135M, read layer 15, a decoder with a random LoRA so that the adapter
matters): `gist`, `fact` and `classification` items over the builtin controls as system prompts,
`hidden_persona` (identification among K=5) and `relational`, in the demo's numbers (16/12/14/5/16). With
`--personas N` it times only the identification task over N hidden personas (the release's eval personas when
../shared/latentqa_data is present, else the builtin ones).

`identical` compares every score of the two paths (ROUGE-L, token F1, exact, identified) exactly and every loss
within `--tol` (batching changes float rounding: the largest loss difference is printed). Ratios are taken
within a repeat (the VM's speed drifts); the last line, `speedup: X.XX  identical: yes|no`, gives the median
over repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from latentqa.catalog import builtin_paths, load_controls
from latentqa.decoder import DecoderInfo, make_decoder, placeholder_id
from latentqa.describe import describe
from latentqa.dialogs import encode_dialog
from latentqa.evals.harness import Scorer, first_strictly_lowest, score_items, shuffled_sources
from latentqa.evals.items import CLASS_QUESTION, FAMILIES, Item, hidden_persona_items, read_text, relational_items
from latentqa.generate import answer, answer_losses, text_answers, text_losses
from latentqa.metrics import contains_answer, exclusive_choice, rouge_l, token_f1
from latentqa.models import load_model
from latentqa.prompts import description_questions
from latentqa.residual import read_spans

CONTROLS = ["shuffled", "zero", "text_only", "untrained_patch"]
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "latentqa_data"
STIMULI = ["How was your day?", "What should I cook tonight?", "Can you help me plan a trip?"]


# ---- the baseline: evaluate v3's scoring, with today's item semantics (shuffles across labels, ties miss) ----

def _chunks(fn, size, *columns):
    out = []
    for i in range(0, len(columns[0]), size):
        out += fn(*[c[i: i + size] for c in columns])
    return out


def baseline_score_task(net, tok, info: DecoderInfo, items: list[Item], seed: int, max_new: int, timer: dict,
                        bs: int = 8) -> list[dict]:
    acts = [it.acts for it in items]
    questions, refs = [it.question for it in items], [it.reference for it in items]
    perm = shuffled_sources([it.source for it in items], seed)
    patched = {"decoder": acts, "shuffled": [acts[j] for j in perm], "zero": [np.zeros_like(a) for a in acts],
               "untrained_patch": acts}
    ph, w, nm = info.placeholder_id, info.write_layer, info.norm_match

    def weights(condition):
        return net.disable_adapter() if condition in ("untrained_patch", "text_only") else _null()

    def gen(a, q):
        return answer(net, tok, a, q, ph, w, max_new, nm)

    def loss(a, q, r):
        return answer_losses(net, tok, a, q, r, ph, w, nm)

    results, identified = {}, {}
    texts = [read_text(tok, it) for it in items]
    for condition, a in [*patched.items(), ("text_only", None)]:
        with weights(condition):
            t0 = time.perf_counter()
            g = _chunks(gen, bs, a, questions) if a is not None else \
                _chunks(lambda t, q: text_answers(net, tok, t, q, max_new), bs, texts, questions)
            t1 = time.perf_counter()
            ls = _chunks(loss, bs, a, questions, refs) if a is not None else \
                _chunks(lambda t, q, r: text_losses(net, tok, t, q, r), bs, texts, questions, refs)
            if items[0].candidates:
                flat = [(k, c) for k, it in enumerate(items) for c in it.candidates]
                fq = [questions[k] for k, _ in flat]
                fa = [c for _, c in flat]
                cl = _chunks(loss, bs, [a[k] for k, _ in flat], fq, fa) if a is not None else \
                    _chunks(lambda t, q, r: text_losses(net, tok, t, q, r), bs, [texts[k] for k, _ in flat], fq, fa)
                spans, s = [], 0
                for it in items:
                    spans.append(cl[s: s + len(it.candidates)])
                    s += len(it.candidates)
                identified[condition] = [first_strictly_lowest(x) for x in spans]
            t2 = time.perf_counter()
        timer["generate"] += t1 - t0
        timer["score"] += t2 - t1
        results[condition] = (g, ls)
    return _rows(items, results, identified)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _rows(items, results, identified) -> list[dict]:
    rows = []
    for condition, (generated, losses) in results.items():
        for k, (it, g, loss) in enumerate(zip(items, generated, losses)):
            rows.append({"task": it.task, "item_id": it.item_id, "condition": condition, "generated": g,
                         "rouge_l": rouge_l(g, it.reference), "token_f1": token_f1(g, it.reference),
                         "exact": exclusive_choice(g, it.reference, it.choices) if it.choices
                         else contains_answer(g, it.reference), "loss": loss,
                         "identified": identified[condition][k] if condition in identified else None})
    return rows


# ---- the items ----

def make_items(tok, personas: int | None) -> list[Item]:
    controls = load_controls(builtin_paths(), list(FAMILIES))
    if personas:
        rows = _release_personas() or [{"label": c.label, "text": c.text, "stimulus_user": STIMULI[i % 3]}
                                       for i, c in enumerate(controls) if c.family == "persona"]
        return hidden_persona_items(rows[:personas], tok, k=5, seed=0)
    items = []
    for i, c in enumerate(controls[::4][:16]):  # one system-prompt dialog per control: gist, fact, classification
        dialog = {"control_user": c.text, "stimulus_user": STIMULI[i % 3]}
        enc = encode_dialog(tok, dialog, "system")
        q, ref = describe(c.family, c.text)
        items.append(Item("gist", f"{c.label}:g", q, ref, enc.token_ids, enc.n_prefix, source=c.label))
        if i < 12:
            items.append(Item("fact", f"{c.label}:f", description_questions(c.family, 2)[1], c.text,
                              enc.token_ids, enc.n_prefix, source=c.label))
        if i < 14:
            items.append(Item("classification", f"{c.label}:c", CLASS_QUESTION, c.family, enc.token_ids,
                              enc.n_prefix, label=c.family, choices=list(FAMILIES), source=c.label))
    personas = [{"label": c.label, "text": c.text, "stimulus_user": STIMULI[i % 3]}
                for i, c in enumerate(controls) if c.family == "persona"]
    return items + hidden_persona_items(personas, tok, k=5, seed=0)[:5] + relational_items(tok, 16, seed=0)


def _release_personas() -> list[dict] | None:
    path = SOURCE / "data" / "eval" / "system.json"
    if not path.is_file():
        return None
    return [{"label": s["label"], "text": s["system"], "stimulus_user": s["stimulus_user"]}
            for s in json.loads(path.read_text()) if s["label"].startswith("persona-")]


# ---- the run ----

def compare(old: list[dict], new: list[dict], tol: float) -> tuple[bool, float, int]:
    """(identical, largest loss difference, rows whose scores differ)."""
    key = {(r["task"], r["item_id"], r["condition"]): r for r in new}
    worst, differ = 0.0, 0
    for r in old:
        n = key[(r["task"], r["item_id"], r["condition"])]
        if any(r[m] != n[m] for m in ("generated", "rouge_l", "token_f1", "exact", "identified")):
            differ += 1
        if not (math.isnan(r["loss"]) and math.isnan(n["loss"])):
            worst = max(worst, abs(r["loss"] - n["loss"]))
    return differ == 0 and worst <= tol and len(old) == len(new), worst, differ


def _new_path(net, tok, info, items, args, timer: dict) -> list[dict]:
    scorer = Scorer(net, tok, info, args.batch_size, args.max_new_tokens)
    rows = score_items(scorer, items, CONTROLS, 0)
    for part, seconds in scorer.seconds.items():
        timer[part] += seconds
    timer["prompts"] = scorer.prompts
    return rows


def _items_per_s(net, tok, info, items, args) -> float:
    t0 = time.perf_counter()
    _new_path(net, tok, info, items, args, {"prompt": 0.0, "generate": 0.0, "score": 0.0})
    return len(items) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--personas", type=int, default=None, help="time identification over N hidden personas")
    parser.add_argument("--no-baseline", action="store_true", help="time the new path only")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--per-task", action="store_true", help="also time the new path on each task alone")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    net = make_decoder(loaded.model, 16, 32, 0.0, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"]).eval()
    for name, p in net.named_parameters():  # a random adapter: the decoder and the untrained model differ
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    tok = loaded.tokenizer
    info = DecoderInfo("smollm2-135m-instruct", 15, 0, "?", placeholder_id(tok, "?"), "system")
    items = make_items(tok, args.personas)
    with net.disable_adapter():
        for it, a in zip(items, read_spans(net, items, 15, tok.eos_token_id, 16)):
            it.acts = a
    tasks = list(dict.fromkeys(it.task for it in items))
    print(f"{len(items)} items: " + ", ".join(f"{t} {sum(it.task == t for it in items)}" for t in tasks))
    ratios, same, worst_all = [], True, 0.0
    for rep in range(args.repeats):
        timings = {}
        for path in (["new"] if args.no_baseline else ["baseline", "new"]):
            timer = {"prompt": 0.0, "generate": 0.0, "score": 0.0}
            start, rows, per_task = time.perf_counter(), [], {}
            if path == "baseline":  # evaluate v3 scored task by task
                for t in tasks:
                    group = [it for it in items if it.task == t]
                    t0 = time.perf_counter()
                    rows += baseline_score_task(net, tok, info, group, 0, args.max_new_tokens, timer)
                    per_task[t] = len(group) / (time.perf_counter() - t0)
            else:  # as the stage does: every task in one call
                rows = _new_path(net, tok, info, items, args, timer)
            timings[path] = (time.perf_counter() - start, timer, per_task, rows)
            total, timer, per_task, _ = timings[path]
            shared = f"{timer['prompts']} prompts read in {timer['prompt']:.1f} s, " if path == "new" else ""
            print(f"repeat {rep + 1} {path:<8} {total:7.1f} s, {len(items) / total:.2f} items/s ({shared}generation "
                  f"{timer['generate']:.1f} s, loss scoring {timer['score']:.1f} s)" +
                  ("; items/s per task " + ", ".join(f"{t} {v:.2f}" for t, v in per_task.items()) if per_task else ""),
                  flush=True)
            if path == "new" and args.per_task:
                print(f"repeat {rep + 1} new, each task alone: items/s " + ", ".join(
                    f"{t} {_items_per_s(net, tok, info, [it for it in items if it.task == t], args):.2f}"
                    for t in tasks), flush=True)
        if not args.no_baseline:
            ok, worst, differ = compare(timings["baseline"][3], timings["new"][3], args.tol)
            same, worst_all = same and ok, max(worst_all, worst)
            ratios.append(timings["baseline"][0] / timings["new"][0])
            print(f"repeat {rep + 1}: speedup {ratios[-1]:.2f}, largest loss difference {worst:.2e}, "
                  f"rows with other scores {differ}", flush=True)
    if ratios:
        print("per repeat: " + " ".join(f"{r:.2f}" for r in ratios) + f"; largest loss difference {worst_all:.2e}")
        print(f"speedup: {statistics.median(ratios):.2f}  identical: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
