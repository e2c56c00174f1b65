"""Ask a trained decoder about the target's activations on any dialog (`latentqa read`, or from Python).

    reader = Reader("runs/demo/train/<fp12>")
    reader.ask(["What persona is the assistant adopting?"], prompt="How was your day?",
               system="Talk like a pirate.")

The target is the decoder's base model with the adapter switched off. A system prompt is the control: it is
masked, so the decoder sees only the activations of what follows it (LatentQA's `system` variant). Answers are
generated with the activations patched in at prefill and the KV cache for decoding, greedy by default
(`decoding="rerank"`: the sampled answer the activations make most likely against zeros, latentqa/ranking.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentqa.decoder import load_decoder
from latentqa.dialogs import encode_turns, pad_id_of
from latentqa.generate import answer
from latentqa.residual import read_spans


class ReaderError(ValueError):
    """A decoder or an input the reader cannot use: the message says which and why."""


class Reader:
    def __init__(self, decoder_dir: Path | str, model: str | None = None, dtype: str = "auto", device: str = "auto"):
        try:
            trained = load_decoder(Path(decoder_dir), model, dtype=dtype, device=device)
        except (ValueError, TypeError) as err:  # decoder.json damaged, or not this project's
            raise ReaderError(f"{decoder_dir}: cannot load the decoder: {err}") from None
        self.info, self.tokenizer, self.net = trained.info, trained.tokenizer, trained.net
        depth = self.net.get_base_model().config.num_hidden_layers
        for what, layer in (("read_layer", self.info.read_layer), ("write_layer", self.info.write_layer)):
            if not 0 <= layer < depth:
                raise ReaderError(f"{decoder_dir}: decoder.json's {what} {layer} is beyond the model: "
                                  f"{self.info.base_model if model is None else model} has blocks 0 to {depth - 1}")

    def encode(self, prompt: str, system: str | None = None, reply: str | None = None):
        """The dialog's tokens and how many of them are the masked system prompt."""
        prefix = [{"role": "system", "content": system}] if system else []
        full = [*prefix, {"role": "user", "content": prompt}]
        if reply is not None:
            full.append({"role": "assistant", "content": reply})
        return encode_turns(self.tokenizer, prefix, full, gen=reply is None)

    @torch.no_grad()
    def read(self, encoded: list, layer: int) -> list[np.ndarray]:
        """[n, d] activations of block `layer` for each encoded dialog's read span, from the target."""
        with self.net.disable_adapter():  # the target: the base model
            return read_spans(self.net, encoded, layer, pad_id=pad_id_of(self.tokenizer))

    def activations(self, prompt: str, system: str | None = None, reply: str | None = None) -> np.ndarray:
        """[n, d] activations at the read layer for the tokens after the (masked) system prompt."""
        return self.read([self.encode(prompt, system, reply)], self.info.read_layer)[0]

    def ask(self, questions: list[str], prompt: str, system: str | None = None, reply: str | None = None,
            max_new_tokens: int = 48, decoding: str = "greedy") -> list[str]:
        """Each question's answer: greedy, or `rerank` / `contrastive` as evaluate.decoding writes it."""
        acts = self.activations(prompt, system, reply)
        if decoding == "greedy":
            return answer(self.net, self.tokenizer, [acts] * len(questions), questions, self.info.placeholder_id,
                          self.info.write_layer, max_new_tokens, self.info.norm_match)
        from latentqa.evals.harness import Scorer

        scorer = Scorer(self.net, self.tokenizer, self.info, 8, max_new_tokens, decoding=decoding)
        return [reply for reply, _ in scorer.read([acts] * len(questions), questions, [[""]] * len(questions))]
