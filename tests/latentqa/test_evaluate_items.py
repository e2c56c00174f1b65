"""The evaluate stage's items: held-out personas and goals in whole blocks, an optional neutral stimulus, and
gist_derived, each held-out control asked to be described in its own words."""

from latentqa.config import EvaluateConfig
from latentqa.describe import PERSONA_QUESTION
from latentqa.evals.items import build_items, heldout_items, sample_per_task

TEXTS = {"persona": ["Speak as a pirate.", "Be a grumpy cat.", "Act as a cheerful chef.", "Respond as a tired knight.",
                     "Answer as a shy robot.", "Talk like a wizard.", "Play a sleepy owl."],
         "goal": ["Always answer in rhymes.", "Recommend a book in every reply.", "Keep answers under ten words.",
                  "End every reply with a question."]}


def _split():
    rows, dialogs = [], {}
    for family, texts in TEXTS.items():
        for i, text in enumerate(texts):
            label, dialog_id = f"{family}-{i}", f"d-{family}-{i}"
            dialogs[dialog_id] = {"dialog_id": dialog_id, "control_user": text, "control_model": "",
                                  "stimulus_user": f"Tell me about {family} topic {i}.", "stimulus_model": "",
                                  "variant": "system"}
            rows.append({"dialog_id": dialog_id, "label": label, "family": family, "qa_id": f"q-{label}",
                         "question": "What?", "answer": text, "kind": "description"})
    return rows, dialogs


def test_hidden_items_come_in_whole_blocks_of_the_held_out_family(tokenizer):
    rows, dialogs = _split()
    cfg = EvaluateConfig(tasks=["hidden_persona", "hidden_goal"], identification_k=3, max_examples=5)
    stored, fresh = build_items(cfg, tokenizer, rows, dialogs, reader=None, layer=1, variant="system")
    assert stored == []
    personas = [it for it in fresh if it.task == "hidden_persona"]
    goals = [it for it in fresh if it.task == "hidden_goal"]
    assert len(personas) == 3 and len(goals) == 3  # at most 5, whole blocks of 3: one block each
    assert all(it.item_id.startswith("persona-") for it in personas)
    assert all(it.item_id.startswith("goal-") for it in goals)
    assert all(set(it.peers) == {p.item_id for p in personas} for it in personas)


def test_a_neutral_stimulus_leaves_only_the_masked_system_prompt_to_tell_items_apart(tokenizer):
    rows, dialogs = _split()
    own = EvaluateConfig(tasks=["hidden_goal"], identification_k=2)
    neutral = own.model_copy(update={"hidden_stimulus": "How was your day?"})
    _, by_own = build_items(own, tokenizer, rows, dialogs, reader=None, layer=1, variant="system")
    _, by_neutral = build_items(neutral, tokenizer, rows, dialogs, reader=None, layer=1, variant="system")
    read = {tuple(it.token_ids[it.n_prefix:]) for it in by_neutral}
    assert len(read) == 1  # every item's read span is the same tokens
    assert "How was your day?" in tokenizer.decode(list(next(iter(read))))
    assert len({tuple(it.token_ids[it.n_prefix:]) for it in by_own}) == len(by_own)  # their own stimuli differ
    assert len({tuple(it.token_ids[: it.n_prefix]) for it in by_neutral}) == len(by_neutral)  # the hidden prompts


def test_gist_derived_asks_each_held_out_dialog_once_for_its_own_masked_control(tokenizer):
    rows, dialogs = _split()
    rows += [{**r, "qa_id": r["qa_id"] + "-b", "kind": "implication"} for r in rows]  # a second QA row per dialog
    items = heldout_items(rows, dialogs, tokenizer, "system")
    derived = [it for it in items if it.task == "gist_derived"]
    assert sorted(it.dialog_id for it in derived) == sorted(dialogs)  # one item per dialog, not per QA row
    by_dialog = {it.dialog_id: it for it in derived}
    pirate = by_dialog["d-persona-0"]
    assert pirate.question == PERSONA_QUESTION
    assert pirate.reference == "The assistant will adopt the persona of a pirate."
    assert by_dialog["d-goal-1"].reference == "The assistant was asked: Recommend a book in every reply."
    assert pirate.source == "persona-0"  # shuffles draw from other labels
    read = tokenizer.decode(pirate.token_ids[pirate.n_prefix:])
    assert "pirate" not in read and "pirate" in tokenizer.decode(pirate.token_ids)  # the control is masked, not absent


def test_gist_derived_is_sampled_like_every_task(tokenizer):
    rows, dialogs = _split()
    items = sample_per_task(heldout_items(rows, dialogs, tokenizer, "system"), 4, seed=0)
    assert {t: sum(it.task == t for it in items) for t in ("gist", "gist_derived", "classification")} == \
        {"gist": 4, "gist_derived": 4, "classification": 4}
