"""Score items under the decoder and the faithfulness controls.

  decoder          the trained decoder with the item's own activations
  shuffled         the same decoder with another item's activations (same task)
  zero             the same decoder with zero vectors of the same length
  text_only        the untrained model reading the same tokens as text, no activations
  untrained_patch  the untrained model with the activations patched in (Patchscopes / SelfIE style)
  probe            a linear probe on mean-pooled activations (classification items only)

Identification (hidden persona): the true description must have the lowest answer loss among the candidates.
"""

from __future__ import annotations

import math
import random
from contextlib import nullcontext

import numpy as np

from latentqa.evals.items import Item, read_text
from latentqa.evals.probe import Probe, mean_pool
from latentqa.generate import answer, answer_losses, text_answers, text_losses
from latentqa.metrics import contains_answer, exclusive_choice, rouge_l, token_f1

CONTROLS = ("shuffled", "zero", "text_only", "untrained_patch", "probe")
PRIMARY = {"gist": "token_f1", "fact": "token_f1", "classification": "exact", "hidden_persona": "identification",
           "relational": "exact"}


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point (each item gets another item's activations)."""
    if n < 2:
        return []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    nxt = {order[i]: order[(i + 1) % n] for i in range(n)}
    return [nxt[i] for i in range(n)]


def _batched(fn, n: int, size: int, *columns):
    out = []
    for i in range(0, n, size):
        out += fn(*[c[i: i + size] for c in columns])
    return out


class Scorer:
    """Answers and losses for one decoder (a peft model: the adapter off gives the untrained model)."""

    def __init__(self, net, tokenizer, info, batch_size: int, max_new_tokens: int):
        self.net, self.tok, self.info, self.bs, self.max_new = net, tokenizer, info, batch_size, max_new_tokens

    def _weights(self, trained: bool):
        """The decoder as trained, or the untrained model (the same weights with the adapter switched off)."""
        return nullcontext() if trained else self.net.disable_adapter()

    def generate(self, acts, questions, trained: bool = True) -> list[str]:
        def run(a, q):
            return answer(self.net, self.tok, a, q, self.info.placeholder_id, self.info.write_layer, self.max_new,
                          self.info.norm_match)
        with self._weights(trained):
            return _batched(run, len(acts), self.bs, acts, questions)

    def losses(self, acts, questions, answers, trained: bool = True) -> list[float]:
        def run(a, q, r):
            return answer_losses(self.net, self.tok, a, q, r, self.info.placeholder_id, self.info.write_layer,
                                 self.info.norm_match)
        with self._weights(trained):
            return _batched(run, len(acts), self.bs, acts, questions, answers)

    def text(self, texts, questions) -> list[str]:
        with self._weights(trained=False):
            return _batched(lambda t, q: text_answers(self.net, self.tok, t, q, self.max_new), len(texts), self.bs,
                            texts, questions)

    def text_losses(self, texts, questions, answers) -> list[float]:
        with self._weights(trained=False):
            return _batched(lambda t, q, a: text_losses(self.net, self.tok, t, q, a), len(texts), self.bs,
                            texts, questions, answers)


def _identify(scorer: Scorer, items: list[Item], acts, condition: str) -> list[bool]:
    """Per item: is candidate 0 (the truth) the one with the lowest loss?"""
    flat_acts, flat_q, flat_a, spans = [], [], [], []
    for it, a in zip(items, acts):
        spans.append((len(flat_a), len(it.candidates)))
        flat_acts += [a] * len(it.candidates)
        flat_q += [it.question] * len(it.candidates)
        flat_a += it.candidates
    if condition == "text_only":
        texts = [read_text(scorer.tok, it) for it in items for _ in it.candidates]
        losses = scorer.text_losses(texts, flat_q, flat_a)
    else:
        losses = scorer.losses(flat_acts, flat_q, flat_a, trained=condition != "untrained_patch")
    return [int(np.argmin(losses[s: s + n])) == 0 for s, n in spans]


def score_task(scorer: Scorer, items: list[Item], controls: list[str], seed: int,
               probe: Probe | None = None) -> list[dict]:
    """Metric rows (one per item and condition) for the items of one task."""
    acts = [it.acts for it in items]
    questions, refs = [it.question for it in items], [it.reference for it in items]
    patched: dict[str, list] = {"decoder": acts}
    if "shuffled" in controls and (perm := derangement(len(items), seed)):
        patched["shuffled"] = [acts[j] for j in perm]
    if "zero" in controls:
        patched["zero"] = [np.zeros_like(a) for a in acts]
    if "untrained_patch" in controls:
        patched["untrained_patch"] = acts
    results: dict[str, tuple[list[str], list[float]]] = {}
    for condition, a in patched.items():
        trained = condition != "untrained_patch"
        results[condition] = (scorer.generate(a, questions, trained), scorer.losses(a, questions, refs, trained))
    if "text_only" in controls:
        texts = [read_text(scorer.tok, it) for it in items]
        results["text_only"] = (scorer.text(texts, questions), scorer.text_losses(texts, questions, refs))
    if "probe" in controls and probe is not None and items[0].task == "classification":  # the probe's classes
        results["probe"] = (probe.predict(mean_pool(acts)), [math.nan] * len(items))
    identified: dict[str, list] = {}
    if items[0].candidates:
        for condition in results:
            if condition == "probe":
                continue
            source = patched.get(condition, acts)
            identified[condition] = _identify(scorer, items, source, condition)
    rows = []
    for condition, (generated, losses) in results.items():
        for k, (it, g, loss) in enumerate(zip(items, generated, losses)):
            rows.append({"task": it.task, "item_id": it.item_id, "condition": condition, "question": it.question,
                         "reference": it.reference, "generated": g, "rouge_l": rouge_l(g, it.reference),
                         "token_f1": token_f1(g, it.reference),
                         "exact": exclusive_choice(g, it.reference, it.choices) if it.choices
                         else contains_answer(g, it.reference),
                         "loss": loss, "identified": identified[condition][k] if condition in identified else None})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """(task, condition, metric, value, n) means; identification only where it was computed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["condition"]), []).append(r)
    out = []
    for (task, condition), rs in groups.items():
        values = {m: [r[m] for r in rs] for m in ("rouge_l", "token_f1", "exact")}
        values["loss"] = [r["loss"] for r in rs if r["loss"] is not None and not math.isnan(r["loss"])]
        values["identification"] = [float(r["identified"]) for r in rs if r["identified"] is not None]
        values["judge"] = [r["judge"] for r in rs if r.get("judge") is not None]
        for metric, vals in values.items():
            if vals:
                out.append({"task": task, "condition": condition, "metric": metric,
                            "value": round(float(np.mean(vals)), 4), "n": len(vals)})
    return out
