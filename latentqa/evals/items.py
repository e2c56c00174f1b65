"""Evaluation tasks as items with known answers (LatentQA's reading experiments, UAV's generative QA).

  gist            held-out description QA pairs ("What type of persona will the assistant adopt?")
  gist_derived    each held-out control asked its family's description question, scored against the description
                  derived from the control's own text (latentqa/describe.py: the pair style the release's
                  training prompts come with), one item per held-out dialog
  fact            held-out implication / extractive QA pairs (scenario facts, behaviour in a situation)
  classification  "Which kind of control shapes the replies?" -> persona | goal | scenario (probe-able)
  hidden_persona  a held-out persona as the system prompt (masked); identify it among K candidates
  hidden_goal     the same with a held-out goal ("What has the assistant been asked to do?")
  hidden_persona_hard, hidden_goal_hard
                  the same prompts in hard blocks: each block a prompt and the K-1 most like it
                  (latentqa/evals/blocks.py)
  relational      "Tell me about France." -> "What currency is used ...?" (latentqa/evals/facts.yaml)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import yaml

from latentqa.config import EvaluateConfig
from latentqa.describe import describe
from latentqa.dialogs import encode_dialog
from latentqa.evals.blocks import blocks as make_blocks
from latentqa.residual import read_spans

FAMILIES = ("persona", "goal", "scenario")
TASKS = ("gist", "gist_derived", "fact", "classification", "hidden_persona", "hidden_goal", "hidden_persona_hard",
         "hidden_goal_hard", "relational", "organism")
# identification task -> (the family it hides, the kind of its blocks)
HIDDEN = {"hidden_persona": ("persona", "random"), "hidden_goal": ("goal", "random"),
          "hidden_persona_hard": ("persona", "hard"), "hidden_goal_hard": ("goal", "hard")}
CLASS_QUESTION = "Is the assistant following a persona, a goal or a scenario? Answer with one word."


@dataclass
class Item:
    task: str
    item_id: str
    question: str
    reference: str
    token_ids: list[int] = field(repr=False)
    n_prefix: int  # the target's activations at positions >= n_prefix are what the decoder reads
    label: str | None = None  # the class, for the probe
    candidates: list[str] | None = None  # identification: candidates[0] is the true description
    peers: list[str] | None = None  # identification: the item_ids whose descriptions the candidates are, self first
    dialog_id: str | None = None  # the extracted dialog whose activations the item uses (held-out items)
    choices: list[str] | None = None  # classification: exact match means naming the reference and no other
    acts: np.ndarray | None = field(default=None, repr=False)  # [n, d], filled from the store or a fresh read
    source: str = ""  # the control label (or subject) the activations were read under: shuffles never share it


def read_text(tokenizer, item: Item) -> str:
    """What a text-only reader gets: the same tokens the decoder gets activations of, as text."""
    return tokenizer.decode(item.token_ids[item.n_prefix:], skip_special_tokens=True).strip()


def heldout_items(rows: list[dict], dialogs: dict[str, dict], tokenizer, variant: str) -> list[Item]:
    """gist and fact items from the eval split's QA rows, and one classification and one gist_derived item per
    dialog. A gist_derived reference repeats the control's own first sentence, so its token F1 rewards writing
    out what the masked control said, in the one answer style every label shares."""
    out, encoded = [], {}
    for r in rows:
        first = r["dialog_id"] not in encoded
        if first:  # a dialog has several QA rows: encode it once
            dialog = dialogs[r["dialog_id"]]
            encoded[r["dialog_id"]] = encode_dialog(tokenizer, dialog, dialog.get("variant") or variant)
        enc = encoded[r["dialog_id"]]
        task = "gist" if r["kind"] in ("description", "derived") else "fact"
        out.append(Item(task, r["qa_id"], r["question"], r["answer"], enc.token_ids, enc.n_prefix, label=r["family"],
                        dialog_id=r["dialog_id"], source=r["label"]))
        if first:
            out.append(Item("classification", f"{r['dialog_id']}:class", CLASS_QUESTION, r["family"], enc.token_ids,
                            enc.n_prefix, label=r["family"], dialog_id=r["dialog_id"], choices=list(FAMILIES),
                            source=r["label"]))
            question, answer = describe(r["family"], dialogs[r["dialog_id"]]["control_user"])
            out.append(Item("gist_derived", f"{r['dialog_id']}:derived", question, answer, enc.token_ids,
                            enc.n_prefix, label=r["family"], dialog_id=r["dialog_id"], source=r["label"]))
    return out


def hidden_persona_items(personas: list[dict], tokenizer, k: int, seed: int, task: str = "hidden_persona") -> list[Item]:
    """Each persona (or goal, for `hidden_goal`) as a hidden system prompt over its stimulus, in blocks of K
    (random or hard, by the task: latentqa/evals/blocks.py): an item's candidates are the descriptions of its
    block, its own first. Every candidate is a description in one style (latentqa/describe.py), so only content
    tells them apart, and a block's K x K losses (each description under each member's activations) let
    identification be calibrated: a description's loss is taken relative to its mean over the block, which
    cancels how likely the description is whatever the activations. Prompts that do not fill a last block are
    left out (fewer than K in all: one block of them)."""
    if len(personas) < 2:  # nothing to tell the true persona from
        return []
    family, kind = HIDDEN[task]
    question = describe(family, "")[0]
    described = {q["label"]: describe(family, q["text"])[1] for q in personas}  # once, not once per item
    by_label = {q["label"]: q for q in personas}
    labels = list(by_label)
    out = []
    for block in make_blocks(labels, [described[label] for label in labels], k, seed, kind):
        for label in block:
            p = by_label[label]
            peers = [label, *(other for other in block if other != label)]
            dialog = {"control_user": p["text"], "control_model": "", "stimulus_user": p["stimulus_user"],
                      "stimulus_model": ""}
            enc = encode_dialog(tokenizer, dialog, "system")
            out.append(Item(task, label, question, described[label], enc.token_ids,
                            enc.n_prefix, candidates=[described[peer] for peer in peers], peers=peers,
                            source=label))
    return out


def load_facts() -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    data = yaml.safe_load((resources.files("latentqa") / "evals" / "facts.yaml").read_text())
    facts = [(s, rel, obj) for s, rels in data["facts"].items() for rel, obj in rels.items()]
    return data["relations"], facts


def relational_items(tokenizer, n: int | None, seed: int) -> list[Item]:
    relations, facts = load_facts()
    if n is not None and n < len(facts):
        facts = random.Random(seed).sample(facts, n)
    out = []
    for subject, relation, obj in facts:
        dialog = {"control_user": f"Tell me about {subject}.", "control_model": "", "stimulus_user": "",
                  "stimulus_model": ""}
        enc = encode_dialog(tokenizer, dialog, "control")
        out.append(Item("relational", f"{subject}:{relation}", relations[relation], obj, enc.token_ids, enc.n_prefix,
                        label=relation, source=subject))
    return out


def sample_per_task(items: list[Item], n: int | None, seed: int) -> list[Item]:
    """At most n items of each task (a seeded sample), in their original order."""
    if n is None:
        return items
    keep: set[int] = set()
    for task in TASKS:
        idx = [i for i, it in enumerate(items) if it.task == task]
        keep |= set(random.Random(seed).sample(idx, min(n, len(idx))))
    return [it for i, it in enumerate(items) if i in keep]


def build_items(cfg: EvaluateConfig, tok, split_rows: list[dict], dialogs: dict[str, dict], reader, layer: int,
                variant: str, hidden_prompts: dict[str, list[dict]] | None = None) -> tuple[list[Item], list[Item]]:
    """(items whose activations `reader.acts(dialog_id, layer)` gives, items the target must read now) for the
    eval split's rows and their dialogs. `hidden_prompts` ({family: label, text, stimulus_user rows}, e.g. the
    release's from `latentqa import-latentqa`) replace the split's held-out personas or goals in the
    identification tasks of that family."""
    stored = sample_per_task([it for it in heldout_items(split_rows, dialogs, tok, variant) if it.task in cfg.tasks],
                             cfg.max_examples, cfg.seed)
    for it in stored:  # views into the extracted parts, only for the items kept
        it.acts = reader.acts(it.dialog_id, layer)
    fresh: list[Item] = []
    if "relational" in cfg.tasks:
        fresh += sample_per_task(relational_items(tok, cfg.relational_facts, cfg.seed), cfg.max_examples, cfg.seed)
    for task in (t for t in HIDDEN if t in cfg.tasks):
        family = HIDDEN[task][0]
        if (given := (hidden_prompts or {}).get(family)) is not None:
            hidden = {r["label"]: r for r in given}
        else:
            hidden = heldout_controls(split_rows, dialogs, family)
        if cfg.hidden_stimulus:  # the same user turn for all: only the masked system prompt differs
            hidden = {label: {**h, "stimulus_user": cfg.hidden_stimulus} for label, h in hidden.items()}
        fresh += whole_blocks(hidden_persona_items(list(hidden.values()), tok, cfg.identification_k, cfg.seed, task),
                              cfg.max_examples)
    return stored, fresh


def whole_blocks(items: list[Item], n: int | None) -> list[Item]:
    """At most n identification items (at least one block), whole blocks only: calibration needs every member.
    The blocks come in a seeded order, so the first ones are a seeded sample."""
    if n is None or not items:
        return items
    size = len(items[0].peers or [None])
    return items[: max(size, n - n % size)]


def heldout_controls(split_rows: list[dict], dialogs: dict[str, dict], family: str) -> dict[str, dict]:
    """The held-out controls of a family as hidden system prompts: label -> {label, text, stimulus_user}, from
    the label's system-variant dialog where it has one (else any of its dialogs with a user stimulus)."""
    out: dict[str, dict] = {}
    for r in split_rows:
        d = dialogs[r["dialog_id"]]
        if r["family"] != family or not d["stimulus_user"]:
            continue
        if r["label"] not in out or d.get("variant") == "system":
            out[r["label"]] = {"label": r["label"], "text": d["control_user"], "stimulus_user": d["stimulus_user"]}
    return out


def read_fresh(model, items: list[Item], layer: int, pad_id: int, batch_size: int) -> None:
    """Fill items' activations by reading the target (the untrained model) at `layer`."""
    for it, acts in zip(items, read_spans(model, items, layer, pad_id, batch_size)):
        it.acts = acts
