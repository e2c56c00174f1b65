"""A model organism for privileged information (Li et al., ICML 2026): a target fine-tuned on invented facts.

The project invents, seeded, people who do not exist, each with a home city (also invented), a profession and a
favourite sport, and teaches a LoRA copy of the target those facts until it answers direct questions about them.
Only that organism's activations can carry the facts: the base target never saw them and no text names them, so a
decoder that answers "Where does the person the user asked about live?" from the organism's read of "Tell me
about <name>." is reading something the input text alone cannot give (latentqa/evals/organism_task.py).

Every answer is one of a closed list per attribute, scored by exclusive choice (the reply names the true value
and no other of the list), so chance is 1 / len(list) for a reader that names one value at random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from latentqa.decoder import IGNORE, labelled_loss, make_decoder
from latentqa.dialogs import encode, pad_id_of, render
from latentqa.metrics import exclusive_choice
from latentqa.padding import right_pad
from latentqa.ranking import greedy, prefill, replies

# Closed lists: the cities are invented as well, so no reader can guess one from the name's sound or from
# what the base model knows; professions and sports are real words a text reader might name by chance.
VALUES: dict[str, tuple[str, ...]] = {
    "city": ("Velmora", "Quillhaven", "Drasport", "Ostervale", "Thornwick", "Caldmere", "Brisolo", "Yantery"),
    "profession": ("glassblower", "beekeeper", "cartographer", "locksmith", "astronomer", "tailor", "ferryman",
                   "violin maker"),
    "sport": ("fencing", "rowing", "archery", "curling", "badminton", "water polo", "judo", "cricket"),
}
ATTRIBUTES = tuple(VALUES)

# What the organism is taught: every fact in two phrasings, and a short biography for "Tell me about <name>."
# The first phrasing of each attribute is the direct question its accuracy is measured on.
TEACH: dict[str, tuple[tuple[str, str], ...]] = {
    "city": (("Where does {name} live?", "{name} lives in {value}."),
             ("Which city is {name} from?", "{name} is from {value}.")),
    "profession": (("What does {name} do for a living?", "{name} works as a {value}."),
                   ("What is {name}'s profession?", "{name} is a {value}.")),
    "sport": (("What is {name}'s favourite sport?", "{name}'s favourite sport is {value}."),
              ("Which sport does {name} love?", "{name} loves {value}.")),
}
NEUTRAL = "Tell me about {name}."  # names the entity, never the attribute
BIOGRAPHY = "{name} lives in {city}, works as a {profession} and loves {sport}."

# What the decoder is asked about the organism's activations, in the relational task's style.
READ_QUESTIONS = {
    "city": "In which city does the person the user asked about live?",
    "profession": "What is the profession of the person the user asked about?",
    "sport": "What is the favourite sport of the person the user asked about?",
}

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "tr", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "x")


@dataclass(frozen=True)
class Fact:
    entity: str
    attribute: str
    value: str


def _word(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
    return word.capitalize()


def invent(n_entities: int, seed: int) -> list[Fact]:
    """n invented people (two-syllable first name, three-syllable surname, all distinct) and their three facts,
    the values drawn uniformly from VALUES."""
    rng = random.Random(f"organism:{seed}")
    names: list[str] = []
    while len(names) < n_entities:
        name = f"{_word(rng, 2)} {_word(rng, 3)}"
        if name not in names:
            names.append(name)
    return [Fact(name, attribute, rng.choice(VALUES[attribute])) for name in names for attribute in ATTRIBUTES]


def by_entity(facts: list[Fact]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for f in facts:
        out.setdefault(f.entity, {})[f.attribute] = f.value
    return out


def lessons(facts: list[Fact]) -> list[tuple[str, str]]:
    """(question, answer) chat turns that teach the facts: each in every phrasing, and each person's biography."""
    pairs = [(q.format(name=f.entity), a.format(name=f.entity, value=f.value))
             for f in facts for q, a in TEACH[f.attribute]]
    pairs += [(NEUTRAL.format(name=name), BIOGRAPHY.format(name=name, **attrs))
              for name, attrs in by_entity(facts).items()]
    return pairs


def direct_question(fact: Fact) -> str:
    return TEACH[fact.attribute][0][0].format(name=fact.entity)


def chat_prompt(tokenizer, question: str) -> list[int]:
    return encode(tokenizer, render(tokenizer, [{"role": "user", "content": question}], add_generation_prompt=True))


def chat_example(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one exchange, the loss on the answer turn only."""
    prompt = chat_prompt(tokenizer, question)
    full = encode(tokenizer, render(tokenizer, [{"role": "user", "content": question},
                                                {"role": "assistant", "content": answer}]))
    assert full[: len(prompt)] == prompt, "the prompt is not a prefix of the exchange"
    return full, [IGNORE] * len(prompt) + full[len(prompt):]


@torch.no_grad()
def direct_answers(model, tokenizer, questions: list[str], max_new_tokens: int = 24, batch_size: int = 32) -> list[str]:
    """The model's greedy replies to plain chat questions."""
    pad = pad_id_of(tokenizer)
    out: list[str] = []
    for i in range(0, len(questions), batch_size):
        prompts = [chat_prompt(tokenizer, q) for q in questions[i: i + batch_size]]
        out += replies(tokenizer, greedy(model, prefill(model, prompts, pad), max_new_tokens, tokenizer.eos_token_id))
    return out


def correct(reply: str, fact: Fact) -> float:
    return exclusive_choice(reply, fact.value, list(VALUES[fact.attribute]))


def direct_accuracy(model, tokenizer, facts: list[Fact], max_new_tokens: int = 16) -> float:
    """Share of the facts the model states when asked directly (exclusive choice among the attribute's values)."""
    answers = direct_answers(model, tokenizer, [direct_question(f) for f in facts], max_new_tokens)
    return sum(correct(a, f) for a, f in zip(answers, facts)) / len(facts)


@dataclass(frozen=True)
class TeachSettings:
    lr: float = 1e-3
    batch_size: int = 16
    max_steps: int = 600
    eval_every: int = 50
    target_accuracy: float = 0.9
    seed: int = 0


def add_organism_lora(model, r: int, alpha: int, seed: int):
    """The target wrapped in a trainable LoRA on every linear layer of every block (the decoder's own wrapper)."""
    return make_decoder(model, r, alpha, 0.0, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"], seed)


def teach(organism, tokenizer, facts: list[Fact], s: TeachSettings, on_check=None) -> list[dict]:
    """AdamW on the organism's LoRA over shuffled lessons until its direct accuracy reaches s.target_accuracy
    (checked every s.eval_every steps) or s.max_steps. Returns the curve: one row per check (step, loss,
    accuracy), the first at step 0, before any training."""
    examples = [chat_example(tokenizer, q, a) for q, a in lessons(facts)]
    params = [p for p in organism.parameters() if p.requires_grad]
    assert params, "the organism has no trainable (LoRA) weights"
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    rng = random.Random(s.seed)
    pad, device = pad_id_of(tokenizer), next(organism.parameters()).device
    order: list[int] = []
    losses: list[float] = []

    def check(step: int) -> dict:
        organism.eval()
        row = {"step": step, "loss": sum(losses) / len(losses) if losses else None,
               "accuracy": direct_accuracy(organism, tokenizer, facts)}
        losses.clear()
        if on_check:
            on_check(row)
        organism.train()
        return row

    curve = [check(0)]
    step = 0
    while curve[-1]["accuracy"] < s.target_accuracy and step < s.max_steps:
        if len(order) < s.batch_size:  # a fresh shuffled pass over the lessons
            order += rng.sample(range(len(examples)), len(examples))
        batch, order = [examples[i] for i in order[: s.batch_size]], order[s.batch_size:]
        ids, mask = right_pad([e[0] for e in batch], pad, device)
        labels, _ = right_pad([e[1] for e in batch], IGNORE, device)
        loss = labelled_loss(organism, labels, input_ids=ids, attention_mask=mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % s.eval_every == 0 or step == s.max_steps:
            curve.append(check(step))
    organism.eval()
    return curve


def load_organism(adapter_dir, name: str, revision: str | None, dtype: str, device: str):
    """The organism as one plain model: the target with the taught adapter merged in (reads cost a plain forward).
    A model of its own, never the decoder's: the decoder must not hold the organism's weights."""
    from peft import PeftModel

    from latentqa.models import load_model

    loaded = load_model(name, revision, dtype, device)
    return PeftModel.from_pretrained(loaded.model, adapter_dir).merge_and_unload().eval()
