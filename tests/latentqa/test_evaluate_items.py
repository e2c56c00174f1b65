"""The evaluate stage's hidden-prompt items: held-out personas and goals, whole blocks, an optional neutral stimulus."""

from latentqa.config import EvaluateConfig
from latentqa.evals.items import build_items

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
