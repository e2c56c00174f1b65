"""Reading returns exactly hidden_states[L+1] of a plain forward, also when batched with right padding."""

import torch

from latentqa.dialogs import encode_dialog
from latentqa.models import find_blocks
from latentqa.residual import read_layers
from latentqa.padding import right_pad
from tests.conftest import DIALOGS


def test_hook_equals_hidden_states(tiny):
    enc = encode_dialog(tiny.tokenizer, DIALOGS[0], "stimulus_completion")
    ids = torch.tensor([enc.token_ids])
    full = tiny.model(ids, output_hidden_states=True).hidden_states
    out = read_layers(tiny.model, ids, torch.ones_like(ids), [0, 2])
    assert torch.equal(out[0], full[1])
    assert torch.equal(out[2], full[3])


def test_early_stop_skips_later_blocks(tiny):
    calls = []
    blocks = find_blocks(tiny.model)
    handles = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(blocks)]
    ids = torch.tensor([[1, 2, 3, 4]])
    read_layers(tiny.model, ids, torch.ones_like(ids), [1])
    for h in handles:
        h.remove()
    assert calls == [0, 1]


def test_right_padded_batch_matches_single(tiny):
    encs = [encode_dialog(tiny.tokenizer, d, "stimulus") for d in DIALOGS]
    ids, mask = right_pad([e.token_ids for e in encs], tiny.tokenizer.pad_token_id)
    batched = read_layers(tiny.model, ids, mask, [3])[3]
    for b, e in enumerate(encs):
        single = read_layers(tiny.model, torch.tensor([e.token_ids]), torch.ones((1, len(e.token_ids)), dtype=torch.long), [3])[3]
        torch.testing.assert_close(batched[b, : len(e.token_ids)], single[0], rtol=1e-5, atol=1e-5)


def test_layer_out_of_range_is_named(tiny):
    ids = torch.tensor([[1, 2]])
    try:
        read_layers(tiny.model, ids, torch.ones_like(ids), [9])
    except ValueError as err:
        assert "[9]" in str(err) and "4 blocks" in str(err)
    else:
        raise AssertionError("layer 9 of 4 was accepted")


def test_model_without_locatable_blocks_is_named():
    from latentqa.models import find_blocks

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 3})()
            self.a, self.b = torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 3), torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 3)

    try:
        find_blocks(Odd())
    except ValueError as err:
        assert "cannot locate the transformer blocks of Odd" in str(err) and "['a', 'b']" in str(err)
    else:
        raise AssertionError("two candidate block lists were accepted")
