"""Score items under the decoder and the faithfulness controls.

  decoder          the trained decoder with the item's own activations
  shuffled         the same decoder with the activations of another item of the task, read from a dialog with a
                   different control label (never the item's own dialog, whose other questions share it)
  zero             the same decoder with zero vectors of the same length
  text_only        the untrained model reading the same tokens as text, no activations
  untrained_patch  the untrained model with the activations patched in (Patchscopes / SelfIE style)
  probe            a linear probe on mean-pooled activations (classification items only)

Identification (hidden persona): the true description must have a strictly lower answer loss than every other
candidate (a tie is a miss, so a condition that scores every candidate alike is never credited).
Every score comes with n and a seeded 95% bootstrap interval, and each margin over a control with a paired one
(latentqa/evals/stats.py).
"""

from __future__ import annotations

import math
import random
from contextlib import nullcontext
from typing import Callable

import numpy as np

from latentqa.evals.items import Item, read_text
from latentqa.evals.probe import Probe, mean_pool
from latentqa.evals.stats import Interval, bootstrap, paired, reads
from latentqa.generate import answer, answer_losses, text_answers, text_losses
from latentqa.ranking import decoder_candidate_losses, text_candidate_losses
from latentqa.metrics import contains_answer, exclusive_choice, rouge_l, token_f1

CONTROLS = ("shuffled", "zero", "text_only", "untrained_patch", "probe")
PRIMARY = {"gist": "token_f1", "fact": "token_f1", "classification": "exact", "hidden_persona": "identification",
           "relational": "exact"}


def shuffled_sources(sources: list[str], seed: int) -> list[int]:
    """For each item, a seeded choice of another item whose activations come from a different control label;
    [] when every item shares one label (no honest shuffle exists)."""
    rng = random.Random(seed)
    out = []
    for s in sources:
        others = [j for j, t in enumerate(sources) if t != s]
        if not others:
            return []
        out.append(rng.choice(others))
    return out


def _batched(fn, n: int, size: int, *columns, done: Callable[[int], None] | None = None):
    """fn over batches of `size` rows, rows grouped by length (less padding), results in the input order."""
    order = sorted(range(n), key=lambda i: tuple(len(c[i]) for c in columns))
    out: list = [None] * n
    for i in range(0, n, size):
        idx = order[i: i + size]
        for j, r in zip(idx, fn(*[[c[j] for j in idx] for c in columns])):
            out[j] = r
        if done:
            done(len(idx))
    return out


class Scorer:
    """Answers and losses for one decoder (a peft model: the adapter off gives the untrained model).

    `progress(what, n)` is told of every batch done: "replies generated", "answers scored", "items ranked"."""

    def __init__(self, net, tokenizer, info, batch_size: int, max_new_tokens: int,
                 progress: Callable[[str, int], None] | None = None):
        self.net, self.tok, self.info, self.bs, self.max_new = net, tokenizer, info, batch_size, max_new_tokens
        self.progress = progress or (lambda what, n: None)

    def _weights(self, trained: bool):
        """The decoder as trained, or the untrained model (the same weights with the adapter switched off)."""
        return nullcontext() if trained else self.net.disable_adapter()

    def _tell(self, what: str):
        return lambda n: self.progress(what, n)

    def generate(self, acts, questions, trained: bool = True) -> list[str]:
        def run(a, q):
            return answer(self.net, self.tok, a, q, self.info.placeholder_id, self.info.write_layer, self.max_new,
                          self.info.norm_match)
        with self._weights(trained):
            return _batched(run, len(acts), self.bs, acts, questions, done=self._tell("replies generated"))

    def losses(self, acts, questions, answers, trained: bool = True) -> list[float]:
        def run(a, q, r):
            return answer_losses(self.net, self.tok, a, q, r, self.info.placeholder_id, self.info.write_layer,
                                 self.info.norm_match)
        with self._weights(trained):
            return _batched(run, len(acts), self.bs, acts, questions, answers, done=self._tell("answers scored"))

    def candidate_losses(self, acts, questions, candidates, trained: bool = True) -> list[list[float]]:
        """Per item, each candidate's loss, the prompt computed once per item (latentqa/ranking.py)."""
        def run(a, q, c):
            return decoder_candidate_losses(self.net, self.tok, a, q, c, self.info.placeholder_id,
                                            self.info.write_layer, self.info.norm_match)
        with self._weights(trained):
            return _batched(run, len(acts), self._items_per_ranking(candidates), acts, questions, candidates,
                            done=self._tell("items ranked"))

    def text(self, texts, questions) -> list[str]:
        with self._weights(trained=False):
            return _batched(lambda t, q: text_answers(self.net, self.tok, t, q, self.max_new), len(texts), self.bs,
                            texts, questions, done=self._tell("replies generated"))

    def text_losses(self, texts, questions, answers) -> list[float]:
        with self._weights(trained=False):
            return _batched(lambda t, q, a: text_losses(self.net, self.tok, t, q, a), len(texts), self.bs,
                            texts, questions, answers, done=self._tell("answers scored"))

    def text_candidate_losses(self, texts, questions, candidates) -> list[list[float]]:
        with self._weights(trained=False):
            return _batched(lambda t, q, c: text_candidate_losses(self.net, self.tok, t, q, c), len(texts),
                            self._items_per_ranking(candidates), texts, questions, candidates,
                            done=self._tell("items ranked"))

    def _items_per_ranking(self, candidates) -> int:
        # a batch holds batch_size candidate sequences (their logits dominate memory), so fewer items
        return max(1, self.bs // max(len(c) for c in candidates))


def first_strictly_lowest(losses: list[float]) -> bool:
    """Identification's hit: the truth (index 0) beats every distractor; a tie is a miss."""
    return len(losses) > 1 and all(losses[0] < other for other in losses[1:])


def _conditions(items: list[Item], controls: list[str], seed: int) -> dict[str, list]:
    """The activations each patched condition reads, per item."""
    acts = [it.acts for it in items]
    patched: dict[str, list] = {"decoder": acts}
    if "shuffled" in controls and (perm := shuffled_sources([it.source for it in items], seed)):
        patched["shuffled"] = [acts[j] for j in perm]
    if "zero" in controls:
        patched["zero"] = [np.zeros_like(a) for a in acts]
    if "untrained_patch" in controls:
        patched["untrained_patch"] = acts
    return patched


def _patched_results(scorer: Scorer, items: list[Item], patched: dict[str, list], trained: bool) -> dict:
    """{condition: (answers, reference losses, candidate losses or None)} for the conditions that share one model
    state, all their rows in one batched pass (the reference is candidate 0 where there are candidates)."""
    conditions = [c for c in patched if (c != "untrained_patch") == trained]
    if not conditions:
        return {}
    acts = [a for c in conditions for a in patched[c]]
    questions = [it.question for it in items] * len(conditions)
    answers = scorer.generate(acts, questions, trained)
    if items[0].candidates:
        ranked = scorer.candidate_losses(acts, questions, [it.candidates for it in items] * len(conditions), trained)
        losses = [r[0] for r in ranked]
    else:
        ranked, losses = None, scorer.losses(acts, questions, [it.reference for it in items] * len(conditions), trained)
    n = len(items)
    return {c: (answers[k * n:(k + 1) * n], losses[k * n:(k + 1) * n], ranked and ranked[k * n:(k + 1) * n])
            for k, c in enumerate(conditions)}


def _text_results(scorer: Scorer, items: list[Item]) -> tuple[list[str], list[float], list | None]:
    texts, questions = [read_text(scorer.tok, it) for it in items], [it.question for it in items]
    answers = scorer.text(texts, questions)
    if items[0].candidates:
        ranked = scorer.text_candidate_losses(texts, questions, [it.candidates for it in items])
        return answers, [r[0] for r in ranked], ranked
    return answers, scorer.text_losses(texts, questions, [it.reference for it in items]), None


def score_task(scorer: Scorer, items: list[Item], controls: list[str], seed: int,
               probe: Probe | None = None) -> list[dict]:
    """Metric rows (one per item and condition) for the items of one task."""
    assert all(it.candidates[0] == it.reference for it in items if it.candidates), "candidate 0 must be the truth"
    patched = _conditions(items, controls, seed)
    results = {**_patched_results(scorer, items, patched, trained=True),
               **_patched_results(scorer, items, patched, trained=False)}
    if "text_only" in controls:
        results["text_only"] = _text_results(scorer, items)
    if "probe" in controls and probe is not None and items[0].task == "classification":  # the probe's classes
        results["probe"] = (probe.predict(mean_pool([it.acts for it in items])), [math.nan] * len(items), None)
    rows = []
    for condition, (generated, losses, ranked) in results.items():
        for k, (it, g, loss) in enumerate(zip(items, generated, losses)):
            rows.append({"task": it.task, "item_id": it.item_id, "condition": condition, "question": it.question,
                         "reference": it.reference, "generated": g, "rouge_l": rouge_l(g, it.reference),
                         "token_f1": token_f1(g, it.reference),
                         "exact": exclusive_choice(g, it.reference, it.choices) if it.choices
                         else contains_answer(g, it.reference),
                         "loss": loss, "identified": first_strictly_lowest(ranked[k]) if ranked else None,
                         "k": len(it.candidates) if it.candidates else None})
    return rows


SCORES = ("rouge_l", "token_f1", "exact")


def _values(rows: list[dict], metric: str) -> dict[str, float]:
    """{item_id: value} of one metric over rows that have it (loss: not NaN; identification: where computed)."""
    if metric == "identification":
        return {r["item_id"]: float(r["identified"]) for r in rows if r["identified"] is not None}
    if metric in ("loss", "judge"):
        return {r["item_id"]: r[metric] for r in rows if r.get(metric) is not None and not math.isnan(r[metric])}
    return {r["item_id"]: r[metric] for r in rows}


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["condition"]), []).append(r)
    return groups


def summarize(rows: list[dict], seed: int) -> list[dict]:
    """(task, condition, metric, value, lo, hi, n): means over items with seeded 95% bootstrap intervals;
    identification only where it was computed, loss only where defined."""
    out = []
    for (task, condition), rs in _groups(rows).items():
        for metric in (*SCORES, "loss", "identification", "judge"):
            if vals := list(_values(rs, metric).values()):
                ci = bootstrap(vals, seed)
                out.append({"task": task, "condition": condition, "metric": metric, "value": round(ci.mean, 4),
                            "lo": round(ci.lo, 4), "hi": round(ci.hi, 4), "n": ci.n})
    return out


def margins(rows: list[dict], seed: int) -> list[dict]:
    """The decoder's margin over each control on the task's primary metric, paired by item, with its
    seeded 95% bootstrap interval (task, control, metric, margin, lo, hi, n)."""
    groups, out = _groups(rows), []
    for task in dict.fromkeys(r["task"] for r in rows):
        metric = PRIMARY[task]
        decoder = _values(groups.get((task, "decoder"), []), metric)
        for (t, condition), rs in groups.items():
            control = _values(rs, metric)
            shared = [i for i in decoder if i in control]
            if t != task or condition == "decoder" or not shared:
                continue
            ci = paired([decoder[i] for i in shared], [control[i] for i in shared], seed)
            out.append({"task": task, "control": condition, "metric": metric, "margin": round(ci.mean, 4),
                        "lo": round(ci.lo, 4), "hi": round(ci.hi, 4), "n": ci.n})
    return out


def verdicts(summary: list[dict]) -> dict[str, bool]:
    """{task: the decoder's interval on the primary metric lies above every control's}."""
    out = {}
    for task in dict.fromkeys(r["task"] for r in summary):
        primary = [r for r in summary if r["task"] == task and r["metric"] == PRIMARY[task]]
        decoder = [Interval(r["value"], r["lo"], r["hi"], r["n"]) for r in primary if r["condition"] == "decoder"]
        controls = [Interval(r["value"], r["lo"], r["hi"], r["n"]) for r in primary if r["condition"] != "decoder"]
        out[task] = bool(decoder) and reads(decoder[0], controls)
    return out
