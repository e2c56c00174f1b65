"""The model organism: invented facts, taught to a LoRA copy of a (tiny) target, and the task that reads it."""

import math

import numpy as np
import pytest
import torch

from latentqa.config import EvaluateConfig
from latentqa.decoder import DecoderInfo, make_decoder
from latentqa.evals.harness import Scorer, verdicts, summarize
from latentqa.evals.items import load_facts, read_text
from latentqa.evals.organism_task import CEILING, base_activations, organism_items, score_organism
from latentqa.models import load_model
from latentqa.organism import (VALUES, TeachSettings, add_organism_lora, by_entity, correct, direct_answers,
                               direct_question, invent, lessons, teach)
from latentqa.residual import read_spans


def test_invented_facts_are_seeded_distinct_and_drawn_from_the_closed_lists():
    facts = invent(60, seed=0)
    assert facts == invent(60, seed=0)
    assert {f.entity for f in facts} != {f.entity for f in invent(60, seed=1)}
    people = by_entity(facts)
    assert len(people) == 60 and all(set(attrs) == set(VALUES) for attrs in people.values())
    assert all(f.value in VALUES[f.attribute] for f in facts)
    real = {subject for subject, _, _ in load_facts()[1]}
    assert not real & set(people)
    assert len({f.value for f in facts if f.attribute == "city"}) > 4  # not one value for everyone


def test_the_read_prompt_names_the_person_and_never_an_attribute_value(tokenizer):
    facts = invent(10, seed=0)
    for it in organism_items(tokenizer, facts):
        text = read_text(tokenizer, it).lower()
        assert it.source.lower() in text
        assert not any(v.lower() in text for values in VALUES.values() for v in values)
        assert it.choices == list(VALUES[it.label]) and it.reference in it.choices


def test_lessons_state_every_fact():
    facts = invent(5, seed=3)
    answers = " ".join(a for _, a in lessons(facts))
    for f in facts:
        assert f"{f.entity} " in answers and f.value in answers


def test_the_organism_learns_its_facts_on_the_tiny_model(tiny):
    facts = invent(3, seed=0)
    organism = add_organism_lora(tiny.model, r=64, alpha=128, seed=0)
    curve = teach(organism, tiny.tokenizer, facts,
                  TeachSettings(lr=3e-3, batch_size=8, max_steps=80, eval_every=40, target_accuracy=1.0))
    assert curve[0]["step"] == 0 and curve[0]["loss"] is None
    assert curve[-1]["accuracy"] > curve[0]["accuracy"]  # its own answers improve
    assert curve[-1]["loss"] < curve[1]["loss"]
    replies = direct_answers(organism, tiny.tokenizer, [direct_question(f) for f in facts])
    assert sum(correct(r, f) for r, f in zip(replies, facts)) / len(facts) == curve[-1]["accuracy"]


def test_teaching_stops_once_the_target_accuracy_is_reached(tiny):
    facts = invent(2, seed=0)
    organism = add_organism_lora(tiny.model, r=64, alpha=128, seed=0)
    curve = teach(organism, tiny.tokenizer, facts,
                  TeachSettings(lr=3e-3, batch_size=8, max_steps=400, eval_every=20, target_accuracy=0.5))
    assert curve[-1]["accuracy"] >= 0.5 and curve[-1]["step"] < 400
    assert all(row["accuracy"] < 0.5 for row in curve[:-1])


@pytest.fixture
def reading(tiny_model_dir):
    """A decoder (random LoRA on the tiny model), an organism (another copy, its LoRA perturbed: weights that
    differ from the base), and the scorer."""
    decoder = load_model(str(tiny_model_dir))
    net = make_decoder(decoder.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    organism = add_organism_lora(load_model(str(tiny_model_dir)).model, r=4, alpha=8, seed=1)
    with torch.no_grad():
        for name, p in organism.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    info = DecoderInfo(base_model=str(tiny_model_dir), read_layer=2, write_layer=0, placeholder="?",
                       placeholder_id=decoder.tokenizer.convert_tokens_to_ids("?"), variant="control")
    scorer = Scorer(net, decoder.tokenizer, info, batch_size=4, max_new_tokens=4)
    return scorer, organism, decoder.tokenizer


def test_decoder_on_base_reads_the_base_weights_never_the_organisms(reading, tiny_model_dir):
    scorer, organism, tok = reading
    items = organism_items(tok, invent(3, seed=0))
    pad = tok.pad_token_id
    before = {k: v.clone() for k, v in scorer.net.state_dict().items()}
    base = base_activations(scorer.net, items, 2, pad, 4)
    plain = read_spans(load_model(str(tiny_model_dir)).model, items, 2, pad, 4)  # a fresh base target
    taught = read_spans(organism, items, 2, pad, 4)
    for b, p, t in zip(base, plain, taught):
        np.testing.assert_allclose(b, p, rtol=1e-5, atol=1e-6)
        assert not np.allclose(b, t, atol=1e-3)  # the organism's weights change what is read
    rows = score_organism(scorer, organism, items, ["shuffled", "text_only"], 2, pad, seed=0)
    # the scored condition is the decoder reading exactly the plain base forward's activations
    expected = [losses[0] for _, losses in scorer.read(plain, [it.question for it in items],
                                                        [[it.reference] for it in items])]
    scored = [r["loss"] for r in rows if r["condition"] == "decoder_on_base"]
    np.testing.assert_allclose(scored, expected, rtol=1e-4)
    after = scorer.net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("organism" in k for k in after)


def test_every_condition_is_scored_with_n_and_an_interval_and_the_ceiling_is_not_a_control(reading):
    scorer, organism, tok = reading
    facts = invent(4, seed=0)
    items = organism_items(tok, facts)
    rows = score_organism(scorer, organism, items, ["shuffled", "text_only"], 2, tok.pad_token_id, seed=0)
    conditions = {"decoder", "decoder_on_base", "shuffled", "text_only", CEILING}
    assert {r["condition"] for r in rows} == conditions
    assert all(sum(r["condition"] == c for r in rows) == len(items) for c in conditions)
    shuffled = {r["item_id"]: r for r in rows if r["condition"] == "shuffled"}
    assert all(math.isnan(r["loss"]) for r in rows if r["condition"] == CEILING)
    summary = summarize(rows, seed=0)
    exact = {r["condition"]: r for r in summary if r["task"] == "organism" and r["metric"] == "exact"}
    assert set(exact) == conditions and all(r["n"] == len(items) and r["lo"] <= r["value"] <= r["hi"]
                                            for r in exact.values())
    assert len(shuffled) == len(items)
    # a ceiling the decoder cannot reach never decides whether it reads
    rigged = [dict(r, value=1.0, lo=1.0, hi=1.0) if r["condition"] == CEILING else
              dict(r, value=0.9, lo=0.8, hi=0.95) if r["condition"] == "decoder" else
              dict(r, value=0.1, lo=0.0, hi=0.2) for r in summary if r["task"] == "organism"]
    assert verdicts(rigged) == {"organism": True}
    assert verdicts([r for r in rigged if r["condition"] != CEILING] +
                    [dict(r, condition="text_only", value=0.9, lo=0.85, hi=0.99) for r in rigged
                     if r["condition"] == CEILING]) == {"organism": False}


def test_direct_answers_are_the_ceiling_condition(reading):
    scorer, organism, tok = reading
    facts = invent(2, seed=0)
    items = organism_items(tok, facts)
    rows = score_organism(scorer, organism, items, [], 2, tok.pad_token_id, seed=0)
    assert {r["condition"] for r in rows} == {"decoder", "decoder_on_base", CEILING}
    direct = direct_answers(organism, tok, [direct_question(f) for f in facts], max_new_tokens=4)
    ceiling = [r for r in rows if r["condition"] == CEILING]
    assert [r["generated"] for r in ceiling] == direct
    assert [r["question"] for r in ceiling] == [direct_question(f) for f in facts]


def test_the_evaluate_config_accepts_the_organism_task():
    assert "organism" in EvaluateConfig(tasks=["organism"]).tasks
