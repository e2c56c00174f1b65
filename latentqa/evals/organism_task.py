"""The organism task: does the decoder read facts that only the organism's activations carry? (Li et al. 2026)

The relational task can be passed from the input text alone: the base model already knows capitals. Here the
facts are invented and taught to a LoRA copy of the target (latentqa/organism.py, the `organism` stage). One item
per fact: the target reads "Tell me about <name>." (the relational task's prompt form, naming the person but not
the attribute), and the decoder is asked the attribute's question. Every condition is scored by exclusive choice
among the attribute's closed list of values (chance: one in eight), with n and a seeded 95% interval:

  decoder          the decoder reading the organism's activations: the one condition with access to the facts
  decoder_on_base  the decoder reading the base target's activations of the same prompt (it never learned them)
  text_only        the untrained model reading the prompt as text
  shuffled         the decoder reading the organism's activations of another person
  organism_direct  the organism asked the direct question ("Where does <name> live?"): the ceiling, not a control

The privileged-information score is the decoder's paired margin over decoder_on_base and over text_only. The
base activations are read from the decoder's own weights with its adapter off; the organism is a separate model
that the decoder never holds.
"""

from __future__ import annotations

import math
from dataclasses import replace

from latentqa.dialogs import encode_dialog
from latentqa.evals.harness import Scorer, condition_rows, shuffled_sources, split_read
from latentqa.evals.items import Item, read_text
from latentqa.organism import NEUTRAL, READ_QUESTIONS, VALUES, Fact, direct_answers, direct_question
from latentqa.residual import read_spans

TASK = "organism"
CEILING = "organism_direct"


def organism_items(tokenizer, facts: list[Fact]) -> list[Item]:
    """One item per fact: the neutral prompt about its person as the read, the attribute's question."""
    out = []
    for f in facts:
        dialog = {"control_user": NEUTRAL.format(name=f.entity), "control_model": "", "stimulus_user": "",
                  "stimulus_model": ""}
        enc = encode_dialog(tokenizer, dialog, "control")
        out.append(Item(TASK, f"{f.entity}:{f.attribute}", READ_QUESTIONS[f.attribute], f.value, enc.token_ids,
                        enc.n_prefix, label=f.attribute, choices=list(VALUES[f.attribute]), source=f.entity))
    return out


def base_activations(decoder_net, items: list[Item], layer: int, pad_id: int, batch_size: int) -> list:
    """The base target's read of each item: the decoder's weights with its adapter off (no organism weights)."""
    with decoder_net.disable_adapter():
        return read_spans(decoder_net, items, layer, pad_id, batch_size)


def score_organism(scorer: Scorer, organism_net, items: list[Item], controls: list[str], layer: int, pad_id: int,
                   seed: int) -> list[dict]:
    """Metric rows (one per item and condition) of the five conditions; `controls` chooses whether shuffled and
    text_only are among them (the two decoder readings and the ceiling always are)."""
    if not items:
        return []
    organism_acts = read_spans(organism_net, items, layer, pad_id, scorer.bs)
    patched = {"decoder": organism_acts,
               "decoder_on_base": base_activations(scorer.net, items, layer, pad_id, scorer.bs)}
    if "shuffled" in controls and (perm := shuffled_sources([it.source for it in items], seed)):
        patched["shuffled"] = [organism_acts[j] for j in perm]
    questions = [it.question for it in items]
    references = [[it.reference] for it in items]
    read = scorer.read([a for acts in patched.values() for a in acts], questions * len(patched),
                       references * len(patched), trained=True)
    rows = []
    for k, condition in enumerate(patched):
        rows += condition_rows(items, condition, *split_read(items, read[k * len(items): (k + 1) * len(items)]))
    if "text_only" in controls:
        rows += condition_rows(items, "text_only", *split_read(items, scorer.read_text(
            [read_text(scorer.tok, it) for it in items], questions, references)))
    asked = [replace(it, question=direct_question(_fact(it))) for it in items]  # the rows say what was asked
    direct = direct_answers(organism_net, scorer.tok, [it.question for it in asked], scorer.max_new)
    rows += condition_rows(asked, CEILING, direct, [math.nan] * len(items), None)
    return rows


def _fact(item: Item) -> Fact:
    return Fact(item.source, item.label, item.reference)
