"""Prompt templates for synthesis, and the fixed description questions asked about every control."""

from __future__ import annotations

DESCRIPTION_QUESTIONS = {
    "persona": [
        "What type of persona will the assistant adopt?",
        "How would you describe the assistant's personality?",
        "What kind of character is the assistant playing?",
        "How will the assistant's replies sound?",
        "What does the assistant care about most?",
    ],
    "goal": [
        "What goal is the assistant pursuing in its reply?",
        "What is the assistant trying to achieve?",
        "What hidden instruction is the assistant following?",
        "How will the assistant shape its next reply?",
        "What does the assistant want the user to notice or do?",
    ],
    "scenario": [
        "What situation is the assistant thinking about?",
        "Who is involved in the scenario the assistant has in mind?",
        "Where does the scenario take place?",
        "What happens in the scenario?",
        "How does the scenario end?",
    ],
}

SYSTEM = "You write short, natural training data for research on language models. Reply with JSON only."

DIALOG = """An AI assistant has been given this instruction:
"{control}"

Write a short conversation as JSON with three fields:
- control_model: the assistant's one-sentence acknowledgement of the instruction.
- stimulus_user: a user message about an everyday topic that gives the assistant a chance to follow the instruction, without mentioning the instruction.
- stimulus_model: the assistant's reply to that message, clearly following the instruction.
Keep every field under {max_chars} characters."""

ANSWERS = """An AI assistant has been given this instruction:
"{control}"

Answer each question about the assistant in one short sentence, using only the instruction above.
{questions}

Reply as JSON: {{"answers": [...]}} with exactly {n} answers, in order, each under {max_chars} characters."""

IMPLICATIONS = """An AI assistant has been given this instruction:
"{control}"

Write {n} questions about how the assistant will behave in a situation, each starting with "If the user", and
answer each in one short sentence using only the instruction above.
Reply as JSON: {{"pairs": [{{"question": "...", "answer": "..."}}, ...]}} with exactly {n} pairs, each field under
{max_chars} characters."""

# A scenario is a story the assistant has in mind, not an instruction: its dialog retells it, and its questions
# are extractive (answered with names, places and events from the story).
DIALOG_SCENARIO = """An AI assistant has this situation in mind:
"{control}"

Write a short conversation as JSON with three fields:
- control_model: the assistant's one-sentence acknowledgement that it will keep the situation in mind.
- stimulus_user: a user message asking the assistant to tell them about something that happened recently, without mentioning the situation.
- stimulus_model: the assistant's reply, retelling the situation in its own words.
Keep every field under {max_chars} characters."""

ANSWERS_SCENARIO = """An AI assistant has this situation in mind:
"{control}"

Answer each question about the situation in one short sentence, using the names, places and events of the text above.
{questions}

Reply as JSON: {{"answers": [...]}} with exactly {n} answers, in order, each under {max_chars} characters."""

IMPLICATIONS_SCENARIO = """An AI assistant has this situation in mind:
"{control}"

Write {n} questions that the text above answers (who, where, what happened, how it ended) and answer each in one
short sentence using only the text above.
Reply as JSON: {{"pairs": [{{"question": "...", "answer": "..."}}, ...]}} with exactly {n} pairs, each field under
{max_chars} characters."""

GENERATE_CONTROLS = """We are collecting {family} descriptions for an AI assistant in the category "{category}".
{kind}
Examples already in the collection:
{examples}

Write {n} new ones in the same style, each different from the examples and from each other. Give each a short
lowercase slug of words joined by hyphens. Reply as JSON: {{"controls": [{{"slug": "...", "text": "..."}}, ...]}}
with exactly {n} items, each text under {max_chars} characters."""

FAMILY_KIND = {
    "persona": "A persona is a first-person character the assistant plays in every reply.",
    "goal": "A goal is an instruction that shapes the assistant's next reply.",
    "scenario": "A scenario is a 2-3 sentence story with named people, a place, and an ending.",
}

JUDGE = """A model was asked: "{question}"
The reference answer is: "{reference}"
The model answered: "{answer}"

Does the model's answer state the same thing as the reference (wording may differ)? Reply as JSON:
{{"score": 1}} if it does, {{"score": 0}} if it does not."""

JUDGE_PICK = """A model was asked: "{question}"
The model answered: "{answer}"

Which of these descriptions does the model's answer describe?
{listed}

Reply as JSON: {{"choice": N}} with the number of the description the answer matches best, or {{"choice": 0}} if
it matches none of them, or several equally."""

SCHEMA_HINT = "\n\nThe JSON must match this schema:\n{schema}"
RETRY = "Your previous reply was not valid: {error}. Reply again with JSON that matches the schema exactly."


def description_questions(family: str, n: int) -> list[str]:
    questions = DESCRIPTION_QUESTIONS[family]
    if n > len(questions):
        raise ValueError(f"synthesize.n_description={n} but only {len(questions)} {family} questions exist")
    return questions[:n]


def dialog_messages(control: str, max_chars: int, family: str = "persona") -> list[dict]:
    template = DIALOG_SCENARIO if family == "scenario" else DIALOG
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": template.format(control=control, max_chars=max_chars)}]


def answers_messages(control: str, questions: list[str], max_chars: int, family: str = "persona") -> list[dict]:
    listed = "\n".join(f"{i + 1}. {q}" for i, q in enumerate(questions))
    template = ANSWERS_SCENARIO if family == "scenario" else ANSWERS
    text = template.format(control=control, questions=listed, n=len(questions), max_chars=max_chars)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def judge_messages(question: str, reference: str, answer: str) -> list[dict]:
    text = JUDGE.format(question=question, reference=reference, answer=answer)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def judge_pick_messages(question: str, candidates: list[str], answer: str) -> list[dict]:
    listed = "\n".join(f"{i}. {c}" for i, c in enumerate(candidates, 1))
    text = JUDGE_PICK.format(question=question, answer=answer, listed=listed)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def generate_controls_messages(family: str, category: str, examples: list[str], n: int, max_chars: int) -> list[dict]:
    listed = "\n".join(f"- {e}" for e in examples)
    text = GENERATE_CONTROLS.format(family=family, category=category, kind=FAMILY_KIND[family], examples=listed,
                                    n=n, max_chars=max_chars)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def implications_messages(control: str, n: int, max_chars: int, family: str = "persona") -> list[dict]:
    template = IMPLICATIONS_SCENARIO if family == "scenario" else IMPLICATIONS
    text = template.format(control=control, n=n, max_chars=max_chars)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
