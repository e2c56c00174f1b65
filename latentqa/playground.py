"""Ask a decoder about any dialog and see what each control answers beside it (`latentqa ui`'s engine).

An answer means something only next to what the controls say (README, "Reading and steering"), so every
question is answered five ways: the decoder on the dialog's activations; the decoder on a stored dialog's
(`shuffled`) and on zeros (`zero`); the untrained model reading the same tokens as text (`text_only`) and with
the activations patched in (`untrained_patch`). Given a reference answer, each condition also gets its
teacher-forced loss of it. Given candidate answers (say the descriptions of five personas, one of them the
hidden one), each condition ranks them: by loss relative to the same candidate's loss under zero activations
for the patched conditions (what evaluate's calibrated identification ranks on, with zeros standing in for the
block's other activations), by raw loss for the text-only reader. So a user sees both what the decoder says and
what it ranks. Answers are greedy, or rerank/contrastive as in evaluate (`decoding`; latentqa/ranking.py).
Inputs are checked first: a bad one raises PlaygroundError with a message for a person, never a half-done
reading.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentqa.dialogs import encode_dialog
from latentqa.evals.harness import DECODINGS, Scorer
from latentqa.generate import answer, answer_losses, text_answers, text_losses
from latentqa.reader import Reader

CONDITIONS = ("decoder", "shuffled", "zero", "text_only", "untrained_patch")


class PlaygroundError(ValueError):
    """An input the playground cannot read: the message says which and why."""


@dataclass
class Reading:
    question: str
    layer: int  # the block whose output was read
    answers: dict[str, str]  # condition -> its answer (greedy, or the `decoding` asked for)
    losses: dict[str, float] | None  # condition -> loss of the reference answer, when one was given
    ranking: dict[str, list[tuple[str, float]]] | None = None  # condition -> (candidate, score), best first


@dataclass
class Given:
    """What the decoder was given: each token of the dialog, and whether it is masked (the control) or read."""
    tokens: list[str]
    n_prefix: int

    def spans(self) -> list[tuple[str, str]]:
        return [(t, "masked" if i < self.n_prefix else "read") for i, t in enumerate(self.tokens)]


class Playground(Reader):
    def __init__(self, decoder_dir: Path | str, model: str | None = None):
        super().__init__(decoder_dir, model, dtype="auto", device="auto")
        config = self.net.get_base_model().config
        self.n_layers = config.num_hidden_layers
        self.max_tokens = getattr(config, "max_position_embeddings", None) or 2048

    def given(self, prompt: str, system: str = "", reply: str = "") -> Given:
        enc = self._encode(prompt, system, reply)
        return Given([self.tokenizer.decode([t]) for t in enc.token_ids], enc.n_prefix)

    def _encode(self, prompt: str, system: str, reply: str):
        if not prompt.strip():
            raise PlaygroundError("the dialog is empty: write a user message for the target to read")
        enc = self.encode(prompt, system if system.strip() else None, reply if reply.strip() else None)
        if len(enc.token_ids) > self.max_tokens:
            raise PlaygroundError(f"the dialog is {len(enc.token_ids)} tokens, longer than the model's context of "
                                  f"{self.max_tokens}: shorten it")
        return enc

    def _check_layer(self, layer: int) -> int:
        if not 0 <= int(layer) < self.n_layers:
            raise PlaygroundError(f"read layer {layer} is not in the model: it has blocks 0 to {self.n_layers - 1} "
                                  f"(this decoder was trained on layer {self.info.read_layer})")
        return int(layer)

    def ask_all(self, questions: list[str], prompt: str, system: str = "", reply: str = "",
                references: list[str] | None = None, layer: int | None = None, other: dict | None = None,
                max_new_tokens: int = 32, candidates: list[str] | None = None,
                decoding: str = "greedy") -> list[Reading]:
        """Every question under every condition; `other` is a stored dialog (the synthesize schema) whose
        activations are the shuffled control; without one, `shuffled` is left out. `candidates`, when given,
        are ranked under every condition for every question."""
        questions = [q.strip() for q in questions if q.strip()]
        if not questions:
            raise PlaygroundError("ask at least one question (one per line)")
        if decoding not in DECODINGS:
            raise PlaygroundError(f"decoding {decoding!r} is not one of {', '.join(DECODINGS)}")
        candidates = [c.strip() for c in candidates or [] if c.strip()]
        if len(candidates) == 1:
            raise PlaygroundError("one candidate answer ranks against nothing: give two or more, or none")
        references = [r.strip() for r in references or [] if r.strip()]
        if references and len(references) != len(questions):
            raise PlaygroundError(f"{len(references)} reference answers for {len(questions)} questions: give one "
                                  "per question, or none")
        layer = self.info.read_layer if layer is None else self._check_layer(layer)
        enc = self._encode(prompt, system, reply)
        acts = {"decoder": self.read([enc], layer)[0]}
        if other is not None:
            acts["shuffled"] = self.read([encode_dialog(self.tokenizer, other, other.get("variant") or "system")],
                                         layer)[0]
        acts["zero"] = np.zeros_like(acts["decoder"])
        text = self.tokenizer.decode(enc.token_ids[enc.n_prefix:], skip_special_tokens=True).strip()
        conditions = [c for c in CONDITIONS if c in acts or c in ("text_only", "untrained_patch")]
        answers = {c: self._answers(c, acts, text, questions, max_new_tokens, decoding) for c in conditions}
        losses = {c: self._under(c, acts, text, questions, references) for c in answers} if references else None
        ranked = [self._rank(conditions, acts, text, q, candidates) if candidates else None for q in questions]
        return [Reading(q, layer, {c: a[i] for c, a in answers.items()}, {c: v[i] for c, v in losses.items()}
                        if losses else None, ranked[i]) for i, q in enumerate(questions)]

    def _answers(self, condition: str, acts: dict, text: str, questions: list[str], max_new_tokens: int,
                 decoding: str) -> list[str]:
        if decoding == "greedy" or condition == "text_only":  # the text reader answers greedily, as in evaluate
            return self._under(condition, acts, text, questions, max_new_tokens=max_new_tokens)
        scorer = Scorer(self.net, self.tokenizer, self.info, 8, max_new_tokens, decoding=decoding)
        a = acts["decoder" if condition == "untrained_patch" else condition]
        read = scorer.read([a] * len(questions), questions, [[""]] * len(questions), condition != "untrained_patch")
        return [reply for reply, _ in read]

    def _rank(self, conditions: list[str], acts: dict, text: str, question: str,
              candidates: list[str]) -> dict[str, list[tuple[str, float]]]:
        """Per condition, the candidates best first: loss minus zero's loss of the same candidate (patched
        conditions, under the same weights), raw loss (text only)."""
        n = len(candidates)
        loss = {c: self._under(c, acts, text, [question] * n, candidates) for c in conditions}
        null = {"untrained_patch": self._under("untrained_patch", {"decoder": acts["zero"]}, text, [question] * n,
                                               candidates), "text_only": [0.0] * n}
        out = {}
        for c in conditions:
            base = null.get(c, loss["zero"])
            out[c] = sorted(((cand, round(x - b, 4)) for cand, x, b in zip(candidates, loss[c], base)),
                            key=lambda t: t[1])
        return out

    def _weights(self, trained: bool):
        """The adapter on (the decoder) or off (the untrained model)."""
        return nullcontext() if trained else self.net.disable_adapter()

    def _under(self, condition: str, acts: dict, text: str, questions: list[str], references: list[str] | None = None,
               max_new_tokens: int = 32) -> list:
        """Greedy answers (no references) or each reference's loss, under one condition."""
        n, info = len(questions), self.info
        if condition == "text_only":
            with self.net.disable_adapter():
                if references is None:
                    return text_answers(self.net, self.tokenizer, [text] * n, questions, max_new_tokens)
                return text_losses(self.net, self.tokenizer, [text] * n, questions, references)
        a = acts["decoder" if condition == "untrained_patch" else condition]
        with self._weights(condition != "untrained_patch"):
            if references is None:
                return answer(self.net, self.tokenizer, [a] * n, questions, info.placeholder_id, info.write_layer,
                              max_new_tokens, info.norm_match)
            return answer_losses(self.net, self.tokenizer, [a] * n, questions, references, info.placeholder_id,
                                 info.write_layer, info.norm_match)
