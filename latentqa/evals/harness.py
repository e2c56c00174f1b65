"""Score items under the decoder and the faithfulness controls.

  decoder          the trained decoder with the item's own activations
  shuffled         the same decoder with the activations of another item of the task, read from a dialog with a
                   different control label (never the item's own dialog, whose other questions share it)
  zero             the same decoder with zero vectors of the same length
  text_only        the untrained model reading the same tokens as text, no activations
  untrained_patch  the untrained model with the activations patched in (Patchscopes / SelfIE style)
  probe            a linear probe on mean-pooled activations (classification items only)

Identification (hidden persona and hidden goal, items in blocks of K whose candidates are the block's descriptions; a tie is
always a miss, so a condition that scores every candidate alike is never credited):
  identification  the true description has a strictly lower loss than every other candidate
  calibrated      the same after each description's loss is taken relative to its mean over the block's K
                  activations (the primary score: it cancels how likely a description is whatever the
                  activations, the confound of READING_SPIKE.md, and how easy an item's activations make every
                  answer)
  attribution     the description's loss is lowest under its own item's activations among the block's K
  generative      what the decoder says, scored as the paper scores it: its reply, matched to each of the
                  block's K candidates by content-word F1 (latentqa.metrics.matched_candidate), matches the true
                  description strictly best (a tie, or no content word shared with any, is a miss: chance is at
                  most 1/K)
Every score comes with n and a seeded 95% bootstrap interval, and each margin over a control with a paired one
(latentqa/evals/stats.py).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from typing import Callable

import numpy as np
import torch

from latentqa.decoder import merged_adapter
from latentqa.dialogs import pad_id_of
from latentqa.evals.items import Item, read_text
from latentqa.evals.probe import Probe, mean_pool
from latentqa.evals.stats import Interval, bootstrap, paired, reads
from latentqa.metrics import contains_answer, exclusive_choice, matched_candidate, rouge_l, token_f1
from latentqa.ranking import decoder_prompts, greedy, prefill, replies, rerank, score_continuations, text_prompts

CONTROLS = ("shuffled", "zero", "text_only", "untrained_patch", "probe")
IDENTIFICATION = ("hidden_persona", "hidden_goal", "hidden_persona_hard", "hidden_goal_hard")
PRIMARY = {"gist": "token_f1", "gist_derived": "token_f1", "fact": "token_f1", "classification": "exact",
           **{t: "calibrated" for t in IDENTIFICATION}, "relational": "exact", "organism": "exact"}
# what the decoder *says*, beside the primary score of what it ranks: its reply matched to the block's candidates
GENERATIVE = {t: "generative" for t in IDENTIFICATION}
DECODINGS = ("greedy", "contrastive", "rerank")
# conditions reported beside the decoder that are not controls: an upper bound it need not beat (the organism
# answering its own facts directly, latentqa/evals/organism_task.py)
CEILINGS = ("organism_direct",)


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


def _batched(fn, n: int, size: int, *columns, done: Callable[[list[int]], None] | None = None):
    """fn over batches of `size` rows, rows grouped by length (less padding), results in the input order."""
    order = sorted(range(n), key=lambda i: tuple(len(c[i]) for c in columns))
    out: list = [None] * n
    for i in range(0, n, size):
        idx = order[i: i + size]
        for j, r in zip(idx, fn(*[[c[j] for j in idx] for c in columns])):
            out[j] = r
        if done:
            done(idx)
    return out


def _digest(acts: np.ndarray) -> tuple:
    return acts.shape, str(acts.dtype), hashlib.blake2b(np.ascontiguousarray(acts).tobytes(), digest_size=16).digest()


class Scorer:
    """Replies and continuation losses for one decoder (a peft model: the adapter off gives the untrained model).

    Each distinct prompt is read once (latentqa/ranking.py): rows that would read the same tokens and activations
    (the zero control under one question and length, the text-only reader of dialogs that differ only in the
    masked control) share one prefill and one greedy reply, and every continuation of theirs (the references, or
    the identification candidates) is scored from that prompt's KV cache. `progress(what, n)` is told of every
    batch done, in rows: "replies generated", and "answers scored" or "items ranked". `seconds` splits the time
    spent into the prompt pass, loss scoring and generation; `prompts` counts the prompts read."""

    def __init__(self, net, tokenizer, info, batch_size: int, max_new_tokens: int,
                 progress: Callable[[str, int], None] | None = None, decoding: str = "greedy",
                 contrast: float = 1.0, samples: int = 8, temperature: float = 1.0, seed: int = 0):
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}: one of {', '.join(DECODINGS)}")
        self.net, self.tok, self.info, self.bs, self.max_new = net, tokenizer, info, batch_size, max_new_tokens
        self.decoding, self.contrast, self.samples, self.temperature = decoding, contrast, samples, temperature
        self.generator = torch.Generator().manual_seed(seed)  # rerank's samples, the same on every rerun
        self.progress = progress or (lambda what, n: None)
        self.seconds = {"prompt": 0.0, "score": 0.0, "generate": 0.0}
        self.prompts = 0

    def _weights(self, trained: bool):
        """The decoder as trained (its adapter merged where that is exact enough and faster), or the untrained
        model (the same weights with the adapter switched off)."""
        return merged_adapter(self.net) if trained else self.net.disable_adapter()

    def read(self, acts, questions, continuations, trained: bool = True) -> list[tuple[str, list[float]]]:
        """Per item, (the greedy reply, each continuation's loss) with the item's activations patched in."""
        def run(a, q, c):
            prompts, conts, patch = decoder_prompts(self.net, self.tok, a, q, c, self.info.placeholder_id,
                                                    self.info.write_layer, self.info.norm_match)
            null = None
            if self.decoding != "greedy":  # the same prompts with zero vectors: what the model says whatever it reads
                null = decoder_prompts(self.net, self.tok, [np.zeros_like(x) for x in a], q, [[] for _ in q],
                                       self.info.placeholder_id, self.info.write_layer, self.info.norm_match)[2]
            return self._answer(prompts, conts, patch, null)
        with self._weights(trained):
            return self._once([(_digest(a), q) for a, q in zip(acts, questions)], run, acts, questions,
                              continuations)

    def read_text(self, texts, questions, continuations) -> list[tuple[str, list[float]]]:
        """The same for the text-only reader: the untrained model, the dialog as text, no activations."""
        def run(t, q, c):
            return self._answer(*text_prompts(self.tok, t, q, c), None)
        with self._weights(trained=False):
            return self._once(list(zip(texts, questions)), run, texts, questions, continuations)

    def _once(self, keys: list, run, inputs, questions, continuations) -> list[tuple[str, list[float]]]:
        """`run` over the distinct prompts (rows with equal keys), each with the union of its rows'
        continuations; the results fanned back out to the rows."""
        rows_of: dict = {}
        for i, key in enumerate(keys):
            rows_of.setdefault(key, []).append(i)
        groups = list(rows_of.values())
        conts = [list(dict.fromkeys(c for i in g for c in continuations[i])) for g in groups]
        tell = self._done(continuations)
        read = _batched(run, len(groups), self.bs, [inputs[g[0]] for g in groups], [questions[g[0]] for g in groups],
                        conts, done=lambda idx: tell([i for j in idx for i in groups[j]]))
        out: list = [None] * len(keys)
        for g, cs, (reply, losses) in zip(groups, conts, read):
            loss_of = dict(zip(cs, losses))
            for i in g:
                out[i] = (reply, [loss_of[c] for c in continuations[i]])
        return out

    def _answer(self, prompts, conts, patch, null_patch=None) -> list[tuple[str, list[float]]]:
        pad = pad_id_of(self.tok)
        t0 = time.perf_counter()
        self.prompts += len(prompts)
        pre = prefill(self.net, prompts, pad, patch)
        t1 = time.perf_counter()
        # rows of continuations per forward: their logits [rows, len, vocab] dominate memory
        losses = score_continuations(self.net, pre, conts, pad, max_rows=max(self.bs, 8))
        t2 = time.perf_counter()
        null = prefill(self.net, prompts, pad, null_patch) if null_patch else None
        eos = self.tok.eos_token_id
        if null is None:  # the text-only reader, or greedy decoding
            ids = greedy(self.net, pre, self.max_new, eos)
        elif self.decoding == "contrastive":
            ids = greedy(self.net, pre, self.max_new, eos, null, self.contrast)
        else:
            ids = rerank(self.net, pre, null, self.max_new, eos, pad, self.samples, self.temperature, self.generator,
                         max_rows=max(self.bs, 8))
        texts = replies(self.tok, ids)
        t3 = time.perf_counter()
        for part, dt in zip(self.seconds, (t1 - t0, t2 - t1, t3 - t2)):
            self.seconds[part] += dt
        return list(zip(texts, losses))

    def _done(self, continuations) -> Callable[[list[int]], None]:
        def tell(rows: list[int]) -> None:
            ranked = sum(len(continuations[r]) > 1 for r in rows)
            self.progress("replies generated", len(rows))
            for what, n in (("items ranked", ranked), ("answers scored", len(rows) - ranked)):
                if n:
                    self.progress(what, n)
        return tell


def first_strictly_lowest(losses: list[float]) -> bool:
    """Identification's hit: the truth (index 0) beats every distractor; a tie is a miss."""
    return len(losses) > 1 and all(losses[0] < other for other in losses[1:])


def block_hits(items: list[Item], ranked: list[list[float]]) -> tuple[list[bool | None], list[bool | None]]:
    """Per item, (calibrated, attribution) hits from its block's K x K losses; None for an item whose block is
    not all among `items`. loss[a][c]: description c under item a's activations (candidate order = peers)."""
    scored = {it.item_id for it in items}
    loss = {(it.item_id, peer): ranked[k][j] for k, it in enumerate(items) for j, peer in enumerate(it.peers or [])}
    calibrated, attributed = [], []
    for it in items:
        block = it.peers or []
        if len(block) < 2 or any(p not in scored for p in block):
            calibrated.append(None)
            attributed.append(None)
            continue
        mean = {c: float(np.mean([loss[(a, c)] for a in block])) for c in block}
        calibrated.append(first_strictly_lowest([loss[(it.item_id, c)] - mean[c] for c in block]))
        attributed.append(first_strictly_lowest([loss[(a, it.item_id)] for a in block]))
    return calibrated, attributed


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


def _continuations(items: list[Item]) -> list[list[str]]:
    """What each item's losses are taken of: its candidates (truth first), else its reference answer."""
    return [it.candidates or [it.reference] for it in items]


def split_read(items: list[Item], read: list[tuple[str, list[float]]]) -> tuple[list[str], list[float], list | None]:
    """(replies, reference losses, candidate losses or None) from `Scorer.read` results."""
    ranked = [losses for _, losses in read] if items[0].candidates else None
    return [reply for reply, _ in read], [losses[0] for _, losses in read], ranked


def _read_state(scorer: Scorer, groups: dict[str, list[Item]], patched: dict[str, dict], trained: bool) -> dict:
    """{(task, condition): (replies, reference losses, candidate losses or None)} for the patched conditions of
    every task that share one model state, all their rows read in one batched pass."""
    plan = [(t, c) for t in groups for c in patched[t] if (c != "untrained_patch") == trained]
    if not plan:
        return {}
    read = scorer.read([a for t, c in plan for a in patched[t][c]],
                       [it.question for t, _ in plan for it in groups[t]],
                       [cont for t, _ in plan for cont in _continuations(groups[t])], trained)
    return _by_group(plan, groups, read)


def _read_texts(scorer: Scorer, groups: dict[str, list[Item]]) -> dict:
    plan = [(t, "text_only") for t in groups]
    read = scorer.read_text([read_text(scorer.tok, it) for t in groups for it in groups[t]],
                            [it.question for t in groups for it in groups[t]],
                            [cont for t in groups for cont in _continuations(groups[t])])
    return _by_group(plan, groups, read)


def _by_group(plan: list[tuple[str, str]], groups: dict[str, list[Item]], read: list) -> dict:
    out, k = {}, 0
    for task, condition in plan:
        n = len(groups[task])
        out[(task, condition)] = split_read(groups[task], read[k: k + n])
        k += n
    return out


def score_items(scorer: Scorer, items: list[Item], controls: list[str], seed: int,
                probe: Probe | None = None) -> list[dict]:
    """Metric rows (one per item and condition). Items of several tasks are read together: the rows of every
    task that share a model state go through one batched pass (fuller batches; generation's per-step cost is
    mostly fixed). Shuffles stay within a task."""
    assert all(it.candidates[0] == it.reference for it in items if it.candidates), "candidate 0 must be the truth"
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.task, []).append(it)
    patched = {t: _conditions(g, controls, seed) for t, g in groups.items()}
    results = {**_read_state(scorer, groups, patched, trained=True),
               **_read_state(scorer, groups, patched, trained=False)}
    if "text_only" in controls:
        results.update(_read_texts(scorer, groups))
    if "probe" in controls and probe is not None and "classification" in groups:  # the probe's classes
        group = groups["classification"]
        results[("classification", "probe")] = (probe.predict(mean_pool([it.acts for it in group])),
                                                [math.nan] * len(group), None)
    rows = []
    for task, group in groups.items():
        for condition in ("decoder", *CONTROLS):
            if (task, condition) in results:
                rows += condition_rows(group, condition, *results[(task, condition)])
    return rows


def condition_rows(items: list[Item], condition: str, generated: list[str], losses: list[float], ranked) -> list[dict]:
    calibrated, attributed = block_hits(items, ranked) if ranked else ([None] * len(items), [None] * len(items))
    rows = []
    for k, (it, g, loss) in enumerate(zip(items, generated, losses)):
        rows.append({"task": it.task, "item_id": it.item_id, "condition": condition, "question": it.question,
                     "reference": it.reference, "generated": g, "rouge_l": rouge_l(g, it.reference),
                     "token_f1": token_f1(g, it.reference),
                     "exact": exclusive_choice(g, it.reference, it.choices) if it.choices
                     else contains_answer(g, it.reference),
                     "loss": loss, "identified": first_strictly_lowest(ranked[k]) if ranked else None,
                     "calibrated": calibrated[k], "attributed": attributed[k],
                     "generative": matched_candidate(g, it.candidates) == 0 if it.candidates else None,
                     "k": len(it.candidates) if it.candidates else None})
    return rows


SCORES = ("rouge_l", "token_f1", "exact")
BLOCK_METRICS = {"identification": "identified", "calibrated": "calibrated", "attribution": "attributed",
                 "generative": "generative", "judge_generative": "judge_generative"}


def _values(rows: list[dict], metric: str) -> dict[str, float]:
    """{item_id: value} of one metric over rows that have it (loss: not NaN; identification: where computed)."""
    if metric in BLOCK_METRICS:
        column = BLOCK_METRICS[metric]
        return {r["item_id"]: float(r[column]) for r in rows if r.get(column) is not None}
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
        for metric in (*SCORES, "loss", *BLOCK_METRICS, "judge"):
            if vals := list(_values(rs, metric).values()):
                ci = bootstrap(vals, seed)
                out.append({"task": task, "condition": condition, "metric": metric, "value": round(ci.mean, 4),
                            "lo": round(ci.lo, 4), "hi": round(ci.hi, 4), "n": ci.n})
    return out


def margins(rows: list[dict], seed: int) -> list[dict]:
    """The decoder's margin over each control on the task's primary metric (and, on identification tasks, on
    generative identification), paired by item, with its seeded 95% bootstrap interval (task, control, metric,
    margin, lo, hi, n)."""
    groups, out = _groups(rows), []
    for task in dict.fromkeys(r["task"] for r in rows):
        for metric in (PRIMARY[task], *([GENERATIVE[task]] if task in GENERATIVE else [])):
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


def verdicts(summary: list[dict], metric_of: dict[str, str] = PRIMARY) -> dict[str, bool]:
    """{task: the decoder's interval on the task's metric (its primary one by default) lies above every
    control's (ceilings aside)}, for the tasks `metric_of` names."""
    out = {}
    for task in (t for t in dict.fromkeys(r["task"] for r in summary) if t in metric_of):
        primary = [r for r in summary if r["task"] == task and r["metric"] == metric_of[task]]
        decoder = [Interval(r["value"], r["lo"], r["hi"], r["n"]) for r in primary if r["condition"] == "decoder"]
        controls = [Interval(r["value"], r["lo"], r["hi"], r["n"]) for r in primary
                    if r["condition"] != "decoder" and r["condition"] not in CEILINGS]
        out[task] = bool(decoder) and reads(decoder[0], controls)
    return out
