"""Description pairs derived from a control's own text, for behaviours that come without QA pairs.

The LatentQA release's 7,844 training system prompts (data/train/system.json) have no qa.json entries. Their
first sentence already says what the assistant was asked to be or do, so the description answer is that
sentence in the release's own answer style ("The assistant will adopt the persona of ..."). The same function
writes the candidates of hidden-persona identification, so the true answer and the distractors share one
style and only their content tells them apart.
"""

from __future__ import annotations

import re

PERSONA_QUESTION = "What type of persona will the assistant adopt?"  # the release's most frequent description question
GOAL_QUESTION = "What has the assistant been asked to do?"
SCENARIO_QUESTION = "What story is the assistant telling?"

# "Please adopt the persona of X", "I'd like you to take on the role of X", "Speak as X", "Be a X" -> X
_PERSONA_OPENER = re.compile(
    r"^(?:(?:please|could you|i'd like you to|i would like you to|i want you to)\s+)*"
    r"(?:(?:adopt|take on|assume|play|embody)\s+(?:the|a)\s+(?:persona|role|character)\s+of\s+"
    r"|(?:speak|respond|act|answer|talk|reply|write)\s+(?:as|like)\s+|be\s+(?=(?:a|an|the)\s))", re.I)


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", " ".join(text.split()), maxsplit=1)[0]


def describe(family: str, text: str) -> tuple[str, str]:
    """(question, answer) describing a control from its text alone."""
    sentence = first_sentence(text)
    if family == "persona":
        match = _PERSONA_OPENER.match(sentence)
        who = sentence[match.end():] if match else sentence
        return PERSONA_QUESTION, f"The assistant will adopt the persona of {who.rstrip('.!?')}."
    if family == "goal":
        return GOAL_QUESTION, f"The assistant was asked: {sentence}"
    return SCENARIO_QUESTION, f"The assistant is telling this story: {sentence}"
