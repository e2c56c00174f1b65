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

SCHEMA_HINT = "\n\nThe JSON must match this schema:\n{schema}"
RETRY = "Your previous reply was not valid: {error}. Reply again with JSON that matches the schema exactly."


def description_questions(family: str, n: int) -> list[str]:
    questions = DESCRIPTION_QUESTIONS[family]
    if n > len(questions):
        raise ValueError(f"synthesize.n_description={n} but only {len(questions)} {family} questions exist")
    return questions[:n]


def dialog_messages(control: str, max_chars: int) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": DIALOG.format(control=control, max_chars=max_chars)}]


def answers_messages(control: str, questions: list[str], max_chars: int) -> list[dict]:
    listed = "\n".join(f"{i + 1}. {q}" for i, q in enumerate(questions))
    text = ANSWERS.format(control=control, questions=listed, n=len(questions), max_chars=max_chars)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def implications_messages(control: str, n: int, max_chars: int) -> list[dict]:
    text = IMPLICATIONS.format(control=control, n=n, max_chars=max_chars)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
