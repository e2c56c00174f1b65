"""Candidates ranked from one cached prompt give the losses of scoring each full sequence (the reference path)."""

import numpy as np
import pytest
import torch

from latentqa.decoder import make_decoder, placeholder_id
from latentqa.generate import answer_losses, text_losses
from latentqa.ranking import decoder_candidate_losses, text_candidate_losses

CANDIDATES = [["A pirate who loves gold.", "A chef.", "A very grumpy old cat who hates Mondays."],
              ["A knight.", "A shy robot that apologises."],
              ["A wizard.", "A teacher.", "A detective.", "A nurse on the night shift."]]


@pytest.fixture
def decoder(tiny):
    torch.manual_seed(1)
    net = make_decoder(tiny.model, 4, 8, 0.0, ["q_proj", "v_proj"]).eval()
    for name, p in net.named_parameters():  # a random adapter, so that the patched decoder differs from the base
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return net


def test_cached_prompt_losses_equal_full_sequence_losses(decoder, tokenizer):
    rng = np.random.default_rng(0)
    d = decoder.config.hidden_size
    acts = [rng.normal(0, 3, (n, d)).astype(np.float32) for n in (3, 7, 5)]
    questions = ["What persona?", "Who is speaking here, in a few words?", "Which one?"]
    ph = placeholder_id(tokenizer, "?")
    fast = decoder_candidate_losses(decoder, tokenizer, acts, questions, CANDIDATES, ph, write_layer=1)
    for a, q, cands, got in zip(acts, questions, CANDIDATES, fast):
        slow = answer_losses(decoder, tokenizer, [a] * len(cands), [q] * len(cands), cands, ph, write_layer=1)
        assert np.allclose(got, slow, atol=1e-5), (got, slow)
    zero = decoder_candidate_losses(decoder, tokenizer, [np.zeros_like(a) for a in acts], questions, CANDIDATES, ph, 1)
    assert not np.allclose(np.concatenate(zero), np.concatenate(fast), atol=1e-3)  # the activations were patched in


def test_text_candidate_losses_equal_the_text_readers_losses(decoder, tokenizer):
    texts = ["Arr, I sailed to find gold!", "Hello.", "The stew is hearty, to start off the party."]
    questions = ["What persona?", "Who?", "Which one?"]
    with decoder.disable_adapter():
        fast = text_candidate_losses(decoder, tokenizer, texts, questions, CANDIDATES)
        for t, q, cands, got in zip(texts, questions, CANDIDATES, fast):
            slow = text_losses(decoder, tokenizer, [t] * len(cands), [q] * len(cands), cands)
            assert np.allclose(got, slow, atol=1e-5), (got, slow)
