"""Render a dialog with the model's own chat template and find the masked control prefix.

LatentQA variants (which turns the target reads, and which are masked out of what the decoder sees):
  system               [system: control] [user: stimulus] + generation prompt; the system turn is masked
  stimulus             [user: control] [assistant: ack] [user: stimulus] + generation prompt; first exchange masked
  stimulus_completion  the same plus [assistant: reply], no generation prompt; first exchange masked
  control              [user: control] + generation prompt; nothing masked
The prefix length comes from tokenising the rendered control turns alone and checking that they are a token
prefix of the full rendering; no token ids are hard-coded. A default system prompt that a template injects
when none is given (SmolLM2's "You are a helpful AI assistant named SmolLM...") is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

VARIANTS = ("system", "stimulus", "stimulus_completion", "control")
_PROBE_USER = "\x07latentqa-probe-user\x07"
_PROBE_SYSTEM = "\x07latentqa-probe-system\x07"


def pad_id_of(tokenizer) -> int:
    """The id that pads batches: the tokenizer's pad token, else its end of sequence (SmolLM2 has both)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# For models without a chat template (base models such as Gemma 3 270M) or whose template cannot render a system
# turn on its own (Gemma's folds it into the first user turn, so no token prefix holds the control and masking it
# is impossible): a plain transcript whose system turn is its own leading span.
PLAIN_TEMPLATE = (  # each turn ends in its text and the next opens with the newline: a token boundary in BPE and
    # SentencePiece alike (a turn ending in "\n\n" tokenises differently once text follows it). Newlines are Jinja
    # expressions: transformers renders with trim_blocks, which drops a newline written after a block tag.
    "{{ bos_token }}{% for m in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}"
    "{% else %}Assistant: {{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\nAssistant:' }}{% endif %}")


def ensure_chat_template(tokenizer) -> str:
    """Give the tokenizer a template that can mask a system turn; 'model' if its own can, else 'plain'."""
    if tokenizer.chat_template:
        try:
            alone = _apply(tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}])
        except Exception:  # a template that refuses system turns (raise_exception in Jinja)
            alone = ""
        if _PROBE_SYSTEM in alone:
            return "model"
    tokenizer.chat_template = PLAIN_TEMPLATE
    return "plain"


def _apply(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@lru_cache(maxsize=16)
def _injected_block(tokenizer) -> tuple[str, str] | None:
    """(rendered default system block, text to keep in its place) if the template injects one, else None."""
    plain = _apply(tokenizer, [{"role": "user", "content": _PROBE_USER}])
    with_sys = _apply(tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": _PROBE_USER}])
    p = _common_prefix(plain, with_sys)
    s = _common_prefix(plain[::-1], with_sys[::-1])
    s = min(s, len(plain) - p, len(with_sys) - p)
    if with_sys[p: len(with_sys) - s] != _PROBE_SYSTEM:
        return None  # an explicit system turn adds a block rather than replacing a default one
    default_text = plain[p: len(plain) - s]
    block = _apply(tokenizer, [{"role": "system", "content": default_text}])
    if not plain.startswith(block):
        raise ValueError("the chat template injects a default system prompt that cannot be located for removal")
    # a bos that opens the block (Llama-3 style) must survive its removal; one that opens every turn must not
    bos = getattr(tokenizer, "bos_token", None) or ""
    keep = bos if bos and block.startswith(bos) and bos not in plain[len(block):] else ""
    return block, keep


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The chat-template rendering, without any default system prompt the template injects."""
    text = _apply(tokenizer, messages, add_generation_prompt)
    injected = _injected_block(tokenizer)
    if injected and messages and messages[0]["role"] != "system":
        block, keep = injected
        assert text.startswith(block), f"rendering does not start with the injected system block: {text[:80]!r}"
        text = keep + text[len(block):]
    return text


def encode(tokenizer, text: str) -> list[int]:
    # the template already holds every special token the model expects (bos included)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def variant_messages(dialog: Mapping[str, str], variant: str) -> tuple[list[dict], list[dict], bool]:
    """(masked prefix messages, full messages, add_generation_prompt) for one LatentQA variant."""
    user, ack = dialog["control_user"], dialog.get("control_model", "")  # the system variant has no ack or reply
    stim, reply = dialog.get("stimulus_user", ""), dialog.get("stimulus_model", "")
    if variant == "system":
        prefix = [{"role": "system", "content": user}]
        return prefix, prefix + [{"role": "user", "content": stim}], True
    if variant in ("stimulus", "stimulus_completion"):
        prefix = [{"role": "user", "content": user}, {"role": "assistant", "content": ack}]
        full = prefix + [{"role": "user", "content": stim}]
        if variant == "stimulus_completion":
            return prefix, full + [{"role": "assistant", "content": reply}], False
        return prefix, full, True
    if variant == "control":
        return [], [{"role": "user", "content": user}], True
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


@dataclass(frozen=True)
class EncodedDialog:
    token_ids: list[int]
    n_prefix: int  # positions [n_prefix, len(token_ids)) are read; the control before them is masked


def encode_dialog(tokenizer, dialog: Mapping[str, str], variant: str) -> EncodedDialog:
    prefix_msgs, full_msgs, gen = variant_messages(dialog, variant)
    needed = ("control_user",) if variant == "control" else ("control_user", "stimulus_user")
    for key in needed:
        if not str(dialog.get(key, "")).strip():
            raise ValueError(f"dialog field {key} is empty")
    return encode_turns(tokenizer, prefix_msgs, full_msgs, gen)


def encode_turns(tokenizer, prefix_msgs: list[dict], full_msgs: list[dict], gen: bool) -> EncodedDialog:
    """Tokens of `full_msgs`, and how many of them render `prefix_msgs` (the masked control)."""
    full = encode(tokenizer, render(tokenizer, full_msgs, gen))
    prefix = encode(tokenizer, render(tokenizer, prefix_msgs, False)) if prefix_msgs else []
    n_prefix = len(prefix)
    assert full[:n_prefix] == prefix, f"{n_prefix} tokens of the control are not a prefix of all {len(full)}"
    assert n_prefix < len(full), f"nothing to read after the control ({n_prefix} of {len(full)} tokens)"
    return EncodedDialog(full, n_prefix)
