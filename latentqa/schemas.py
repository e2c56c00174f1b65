"""Pydantic schemas of the LLM replies; their JSON schema (with bounded string lengths) constrains decoding.

maxLength bounds every string so a constrained reply always finishes inside max_tokens.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


@lru_cache(maxsize=64)  # one class (and schema) per shape: building them costs milliseconds
def dialog_reply(max_chars: int) -> type[Reply]:
    """The assistant's acknowledgement of the control, a user stimulus, and a reply showing the behaviour."""
    text = (str, Field(min_length=1, max_length=max_chars))
    return create_model("DialogReply", __base__=Reply, control_model=text, stimulus_user=text, stimulus_model=text)


@lru_cache(maxsize=64)  # one class (and schema) per shape: building them costs milliseconds
def answers_reply(n: int, max_chars: int) -> type[Reply]:
    """Exactly n answers, one per question, in order."""
    # item constraints on the type itself: pydantic validates them and puts them in the JSON schema
    item = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=max_chars)]
    return create_model("AnswersReply", __base__=Reply, answers=(list[item], Field(min_length=n, max_length=n)))


@lru_cache(maxsize=64)  # one class (and schema) per shape: building them costs milliseconds
def implications_reply(n: int, max_chars: int) -> type[Reply]:
    """Exactly n (question, answer) pairs about how the assistant behaves."""
    text = (str, Field(min_length=1, max_length=max_chars))
    pair = create_model("Pair", __base__=Reply, question=text, answer=text)
    return create_model("ImplicationsReply", __base__=Reply, pairs=(list[pair], Field(min_length=n, max_length=n)))


@lru_cache(maxsize=64)
def controls_reply(n: int, max_chars: int) -> type[Reply]:
    """Exactly n new controls of one category, each a slug and a text."""
    slug = (str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$"))
    control = create_model("NewControl", __base__=Reply, slug=slug, text=(str, Field(min_length=8, max_length=max_chars)))
    return create_model("ControlsReply", __base__=Reply, controls=(list[control], Field(min_length=n, max_length=n)))


@lru_cache(maxsize=1)
def judge_reply() -> type[Reply]:
    """1 when the answer states what the reference states, else 0."""
    return create_model("JudgeReply", __base__=Reply, score=(int, Field(ge=0, le=1)))


@lru_cache(maxsize=16)
def judge_choice(k: int) -> type[Reply]:
    """The number (1..k) of the candidate an answer describes, 0 for none."""
    return create_model(f"JudgeChoice{k}", __base__=Reply, choice=(int, Field(ge=0, le=k)))


@lru_cache(maxsize=64)
def json_schema(model: type[Reply]) -> dict[str, Any]:
    return model.model_json_schema()


def validate_reply(model: type[Reply], text: str) -> Reply:
    """Parse and validate a reply; raises pydantic.ValidationError naming the bad field."""
    return model.model_validate_json(text)
