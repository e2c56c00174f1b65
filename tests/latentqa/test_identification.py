"""Generative identification (what the decoder says, matched to the block's candidates), hard blocks, the
decoding setting, and validation prompts that no decoder trained on."""

import random
from pathlib import Path

import pytest

from latentqa.config import EvaluateConfig, ModelConfig
from latentqa.describe import describe
from latentqa.evals.blocks import blocks, tfidf_similarity
from latentqa.metrics import content_f1, content_words, matched_candidate
from latentqa.release import release_dataset, validation_prompts
from tests.mini_release import make_release

BLOCK = ["The assistant will adopt the persona of a pirate captain who sails the seven seas.",
         "The assistant will adopt the persona of a retired lighthouse keeper.",
         "The assistant will adopt the persona of a jazz pianist from New Orleans.",
         "The assistant will adopt the persona of a medieval blacksmith.",
         "The assistant will adopt the persona of a marine biologist."]


def test_the_template_is_not_content():
    assert content_words("The assistant will adopt the persona of a pirate captain.") == ["pirate", "captain"]
    assert content_f1("The assistant will adopt the persona of a cook.", BLOCK[1]) == 0.0  # only the template shared


def test_an_answer_naming_the_true_persona_matches_it_and_one_naming_another_does_not():
    assert matched_candidate("I am an old pirate captain of the seas.", BLOCK) == 0
    assert matched_candidate("The assistant will adopt the persona of a blacksmith.", BLOCK) == 3
    truth_first = [BLOCK[3], *BLOCK[:3], BLOCK[4]]
    assert matched_candidate("The assistant will adopt the persona of a blacksmith.", truth_first) == 0


def test_ties_are_misses():
    assert matched_candidate("The assistant will adopt the persona of someone.", BLOCK) is None  # no content word
    assert matched_candidate("A pirate.", [BLOCK[0], BLOCK[0], BLOCK[2]]) is None  # two candidates alike
    assert matched_candidate("A lighthouse pianist.", ["a lighthouse keeper", "a jazz pianist"]) is None
    assert matched_candidate("", BLOCK) is None


def test_random_answers_score_about_chance_and_never_above_it():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(60)]
    k, n, hits, named = 5, 4000, 0, 0
    for _ in range(n):
        candidates = [" ".join(rng.sample(words, 4)) for _ in range(k)]
        answer = " ".join(rng.sample(words, 4))  # independent of which candidate is true
        match = matched_candidate(answer, candidates)
        hits += match == 0
        named += match is not None
    rate = hits / n
    # by symmetry each candidate is named alike: a hit is 1/K of the answers that name one, ties are misses
    assert rate == pytest.approx(named / n / k, abs=0.015), (rate, named / n)
    assert rate < 1 / k and named < n


def test_hard_blocks_hold_the_nearest_prompts_by_the_stated_similarity():
    texts = [f"The assistant will adopt the persona of {who}." for who in (
        "a pirate captain", "a pirate sailor", "an old pirate", "a pirate cook", "a pirate navigator",
        "a jazz pianist", "a jazz singer", "a jazz drummer", "a jazz trumpeter", "a jazz critic",
        "a medieval blacksmith", "a marine biologist", "a chess grandmaster", "a desert nomad", "a beekeeper")]
    labels = [f"p{i}" for i in range(len(texts))]
    hard = blocks(labels, texts, 5, seed=0, kind="hard")
    sim = tfidf_similarity(texts)
    at = {label: i for i, label in enumerate(labels)}
    taken: set[str] = set()
    for block in hard:
        seed, rest = block[0], block[1:]
        free = set(labels) - taken - {seed}
        worst_in = min(sim[at[seed], at[m]] for m in rest)
        best_out = max((sim[at[seed], at[o]] for o in free - set(rest)), default=-1.0)
        assert worst_in >= best_out, (block, worst_in, best_out)  # no unassigned prompt is nearer than a member
        taken |= set(block)
    random_blocks = blocks(labels, texts, 5, seed=0, kind="random")
    order = list(range(len(labels)))
    random.Random(0).shuffle(order)  # the scheme hidden_persona used before hard blocks existed
    assert random_blocks == [[labels[i] for i in order[s: s + 5]] for s in (0, 5, 10)]
    assert sorted(sum(hard, [])) == sorted(labels) and all(len(b) == 5 for b in hard)


def test_hard_blocks_pair_the_planted_look_alikes():
    texts = ["a pirate captain", "a jazz pianist", "a pirate sailor", "a jazz singer", "a chess player",
             "a chess grandmaster"]
    hard = blocks([str(i) for i in range(6)], texts, 2, seed=0, kind="hard")
    assert sorted(sorted(b) for b in hard) == [["0", "2"], ["1", "3"], ["4", "5"]]


def test_the_decoding_setting_enters_the_evaluate_fingerprint():
    from types import SimpleNamespace

    from tasks.evaluate import fingerprint_of

    up = {k: SimpleNamespace(fingerprint=k) for k in ("decoder", "split", "acts", "synth")}

    def fp(**cfg):
        return fingerprint_of({"cfg": EvaluateConfig(**cfg), "model": ModelConfig(), **up})

    greedy = fp()
    assert fp(decoding="rerank") != greedy and fp(decoding="contrastive") != greedy
    assert fp(decoding="rerank", rerank_samples=4) != fp(decoding="rerank")
    assert fp(decoding="contrastive", contrast=2.0) != fp(decoding="contrastive")
    assert fp(batch_size=64) == greedy  # a speed knob is not a setting of the result


def test_validation_prompts_are_training_file_labels_no_decoder_trained_on(tmp_path):
    source = make_release(tmp_path / "release")
    files = [("data/train/system.json", False), ("data/eval/system.json", True)]
    trained = release_dataset(source, files, ["data/eval/qa.json"], "neutral", max_labels=8, seed=0)
    used = {d["label"] for d in trained.dialogs}
    val = validation_prompts(source, files, max_labels=8, seed=0)
    labels = [r["label"] for rows in val.values() for r in rows]
    assert labels and not set(labels) & used, "a validation label was trained on"
    assert all(label.startswith("persona-mini") or label.startswith("goal-mini") for label in labels)
    assert len(labels) == 15 - 8  # every training-file label the sample left out, none of the eval file's
    assert all(r["stimulus_user"] and r["text"] for rows in val.values() for r in rows)
    assert validation_prompts(source, files, max_labels=None) == {}  # everything trained on: nothing to validate on
    again = validation_prompts(source, files, max_labels=8, seed=0, per_family=2)
    assert all(len(rows) <= 2 for rows in again.values())


def test_identification_candidates_are_descriptions_of_one_style():
    question, answer = describe("persona", "Please adopt the persona of a pirate captain. Speak of the sea.")
    assert answer == "The assistant will adopt the persona of a pirate captain."
    assert content_words(answer) == ["pirate", "captain"]
